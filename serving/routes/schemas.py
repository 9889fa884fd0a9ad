"""The OpenAPI description of the Segment Spec bodies segflow ingests.

Bodies are parsed by :class:`features.events.SegmentParser` (faster than a
model per request, and every error names its field); these schemas tell
clients and fuzzers what a real event looks like. Unknown fields are
allowed everywhere, as in the Segment Spec.
"""

from __future__ import annotations

from typing import Any

from features.events import KINDS, SEGMENT_NAMES
from features.limits import MAX_NAME_CHARS
from features.values import RANGES

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS}
_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601 with a timezone"}
_NUMBERS = {
    name: {"type": "number", "minimum": low, "maximum": high, "description": what}
    for name, (low, high, what) in RANGES.items()
}
PROPERTIES: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_NUMBERS,
        "product_id": {"type": "string", "maxLength": 64},
        "category": {"type": "string", "maxLength": 64},
        "url": {"type": "string", "format": "uri", "maxLength": 512},
        "campaign_id": {"type": "string", "maxLength": 64},
    },
    "additionalProperties": True,
}
CONTEXT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "device": {"type": "object", "properties": {"type": {"enum": ["mobile", "desktop", "tablet"]}}},
        "location": {"type": "object", "properties": {"country": {"type": "string"}, "city": {"type": "string"}}},
        "timezone": {"type": "string", "example": "Europe/Berlin"},
        "page": {"type": "object", "properties": {"url": {"type": "string"}}},
    },
    "additionalProperties": True,
}
_COMMON: dict[str, Any] = {
    "messageId": _ID,
    "userId": _ID,
    "anonymousId": _ID,
    "timestamp": _TIME,
    "sentAt": _TIME,
    "context": CONTEXT,
}
TRACK: dict[str, Any] = {
    "type": "object",
    "required": ["event"],
    "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    "properties": {
        **_COMMON,
        "type": {"const": "track"},
        "event": {"anyOf": [{"enum": sorted(SEGMENT_NAMES)}, {**_ID, "description": "a custom event"}]},
        "properties": PROPERTIES,
    },
    "additionalProperties": True,
}
PAGE: dict[str, Any] = {
    "type": "object",
    "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    "properties": {**_COMMON, "type": {"const": "page"}, "name": _ID, "properties": PROPERTIES},
    "additionalProperties": True,
}
IDENTIFY: dict[str, Any] = {
    "type": "object",
    "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    "properties": {
        **_COMMON,
        "type": {"const": "identify"},
        "traits": {"type": "object", "additionalProperties": True, "description": "personal fields are pseudonymized"},
    },
    "additionalProperties": True,
}
SCREEN: dict[str, Any] = {**PAGE, "properties": {**PAGE["properties"], "type": {"const": "screen"}}}
ALIAS: dict[str, Any] = {
    "type": "object",
    "required": ["previousId"],
    "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    "properties": {**_COMMON, "type": {"const": "alias"}, "previousId": _ID},
    "additionalProperties": True,
}
GROUP: dict[str, Any] = {
    **IDENTIFY, "properties": {**IDENTIFY["properties"], "type": {"const": "group"}, "groupId": _ID},
}  # fmt: skip
BATCH: dict[str, Any] = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "maxItems": 100,
            "items": {
                "oneOf": [
                    {**TRACK, "required": ["type", "event"]},
                    {**PAGE, "required": ["type"]},
                    {**IDENTIFY, "required": ["type"]},
                    {**SCREEN, "required": ["type"]},
                    {**ALIAS, "required": ["type", "previousId"]},
                    {**GROUP, "required": ["type"]},
                ]
            },
        },
        "sentAt": _TIME,
        "context": CONTEXT,
        "writeKey": {"type": "string", "description": "a source key (others go in the Authorization header)"},
    },
    "additionalProperties": True,
}
_SCHEMAS = dict(track=TRACK, page=PAGE, identify=IDENTIFY, screen=SCREEN, alias=ALIAS, group=GROUP, batch=BATCH)
assert set(_SCHEMAS) - {"batch"} <= set(KINDS)


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    content = {"schema": schema}  # text/plain too: what browsers send to avoid a preflight
    return {"requestBody": {"required": True, "content": {"application/json": content, "text/plain": content}}}


INGEST_BODIES = {kind: _body(schema) for kind, schema in _SCHEMAS.items()}
_PROBLEMS = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "field": {"type": "string"},
                    "problem": {"type": "string"},
                },
            },
        },
    },
}
INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "accepted; events rejected one by one are listed in `rejected` and quarantined"},
    400: {
        "description": "nothing accepted: the body, or every event in it, is invalid",
        "content": {"application/json": {"schema": _PROBLEMS}},
    },
    401: {"description": "no key, a malformed one, or an unknown or revoked one"},
    403: {"description": "the key may not ingest (or not from this origin)"},
    413: {"description": "over 32 KB an event or 500 KB a batch (inflated, for a gzip or deflate body)"},
    415: {"description": "a Content-Encoding other than gzip, deflate or identity"},
    429: {"description": "the key is over its rate; see Retry-After"},
}
