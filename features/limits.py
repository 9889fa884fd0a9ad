"""Segment's limits on what segflow accepts, and the errors that name what broke them.

32 KB an event and 500 KB a batch (:func:`load`, :func:`check_event_size`),
ids and names of at most 256 characters, the strings features read of at
most 2,048, at most 2,500 events a batch, times between 2000 and 2100 and
no more than 10 minutes ahead of their receipt; numbers in the ranges of
:mod:`features.values`. Every error names its field (:class:`EventError`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

from features.events import STRING_PROPERTIES, format_ms
from features.pseudonyms import redact
from features.values import check_number

MAX_EVENT_BYTES = 32 * 1024


MAX_BATCH_BYTES = 500 * 1024


MAX_NAME_CHARS = 256  # ids, message ids, event names


MAX_TEXT_CHARS = 2048  # the string properties that features read (url, category, ...)


MAX_BATCH_EVENTS = 2_500  # events in one batch (each at least a few hundred bytes in practice)


MAX_FUTURE_MS = 10 * 60_000  # how far ahead of its receipt an event may be dated, after skew correction


class EventError(ValueError):
    """One or more payload errors, each naming its field.

    >>> str(EventError([("timestamp", "expected a string")]))
    'timestamp: expected a string'
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = [(redact(f), redact(p)) for f, p in problems]
        super().__init__("; ".join(f"{f}: {p}" for f, p in self.problems))


class PayloadTooLarge(EventError):
    """A body or event over Segment's limits (32 KB an event, 500 KB a batch)."""


def too_long(text: str, limit: int) -> str:
    """The problem of a text over ``limit`` characters, in words (the caller names the field)."""
    return f"is {len(text)} characters long; at most {limit} are allowed"


def duration_words(seconds: float) -> str:
    """A length of time in words.

    >>> duration_words(600), duration_words(90_000), duration_words(3e8)
    ('10 minutes', '1.0 days', '9.5 years')
    """
    if seconds < 3600:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 86_400 * 365:
        return f"{seconds / 86_400:.1f} days" if seconds >= 86_400 else f"{seconds / 3600:.1f} hours"
    return f"{seconds / (86_400 * 365.25):.1f} years"


def describe_ms(ms: int) -> str:
    """A millisecond timestamp as its ISO time, or the raw number when it is no date."""
    try:
        return format_ms(ms)
    except (ValueError, OverflowError):
        return f"{ms} ms since 1970"


EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: the times segflow accepts start here


LATEST_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z ... and end here


_STRINGS = frozenset(STRING_PROPERTIES)


def check_properties(props: dict[str, Any], where: str, numeric: frozenset[str]) -> dict[str, Any]:
    """``props`` with the properties that features and rules read checked:
    numbers finite and in range (numeric strings become numbers), the strings
    features read bounded (numbers used as ids become strings). Every problem
    is reported, each naming its field."""
    fixed: dict[str, Any] | None = None
    problems: list[tuple[str, str]] = []
    for key, value in props.items():
        if value is None:
            continue
        kind = type(value)
        if key in numeric:
            problem = check_number(key, value)
            if problem is not None:
                problems.append((f"{where}.{key}", problem))
            elif kind is str:
                fixed = fixed if fixed is not None else dict(props)
                fixed[key] = float(value)
        elif key in _STRINGS:
            if kind is int or kind is float:
                fixed = fixed if fixed is not None else dict(props)
                fixed[key] = str(value)
            elif kind is not str:
                problems.append((f"{where}.{key}", f"expected a string, got {kind.__name__}"))
            elif len(value) > MAX_TEXT_CHARS:
                problems.append((f"{where}.{key}", too_long(value, MAX_TEXT_CHARS)))
    if problems:
        raise EventError(problems)
    return props if fixed is None else fixed


def load(body: bytes, kind: str | None = None) -> object:
    """A body's JSON, refused when over its size limit (``batch`` or ``None``:
    a batch's, else one event's) or not JSON. A number too large for a double
    (``1e999``) is kept as its text, so the one event holding it is refused
    by the field checks and the rest of its batch goes on.

    >>> load(b'{"batch": [{"price": 1e999}, {"price": 2.5}]}')
    {'batch': [{'price': '1e999'}, {'price': 2.5}]}
    """
    limit = MAX_BATCH_BYTES if kind in (None, "batch") else MAX_EVENT_BYTES
    if len(body) > limit:
        raise PayloadTooLarge([("$", f"body is {len(body)} bytes, over the {limit}-byte limit")])
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "infinity" in str(exc):  # orjson refuses the whole body; the standard parser can keep the text
            try:
                return json.loads(body, parse_float=_finite_or_text, parse_int=_finite_or_text)
            except (ValueError, RecursionError):
                pass
        raise EventError([("$", f"invalid JSON: {exc}")]) from None


def _finite_or_text(text: str) -> float | int | str:
    number = float(text) if any(c in text for c in ".eE") else int(text)
    return number if math.isfinite(number) else text


def check_event_sizes(payload: object) -> None:
    """Refuse a batch holding an event over 32 KB (PayloadTooLarge naming its largest field)."""
    items = payload.get("batch") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        try:
            size = len(orjson.dumps(item))
        except orjson.JSONEncodeError:  # nested too deep to encode: the depth check refuses it
            continue
        if size > MAX_EVENT_BYTES:
            fields = item if isinstance(item, dict) else {}
            largest = max(fields, key=lambda k: len(orjson.dumps(fields[k])), default="")
            raise PayloadTooLarge(
                [(f"batch[{i}].{largest}", f"event is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit")]
            )


def check_event_size(payload: Mapping[str, Any]) -> None:
    """Refuse one event over 32 KB, naming its largest field."""
    check_event_sizes({"batch": [payload]})
