"""parse(serialize(event)) == event, and every bad payload gets an error
that names its field."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.events import SEGMENT_NAMES, Event, canonical_type, to_payload
from features.limits import MAX_EVENT_BYTES, MAX_FUTURE_MS, EventError, PayloadTooLarge
from features.pseudonyms import Pseudonymizer, looks_personal, personal_key
from features.segment_spec import SegmentParser
from features.values import RANGES

RECEIVED = 1_800_000_000_000  # 2027-01-15: received after every timestamp these tests send

_PROBE = Pseudonymizer(bytes(32))

MS_2000, MS_2100 = 946_684_800_000, 4_102_444_800_000
# text with nothing personal in it (the parser's value scrubbing leaves it as it is)
safe_text = st.text(st.characters(codec="utf-8", exclude_characters="@%"), min_size=1, max_size=20).filter(
    lambda s: _PROBE.scrub_text(s) == s
)
ids = safe_text.filter(lambda s: s.strip() == s and not looks_personal(s))
plain_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), safe_text
)
extra_props = st.dictionaries(
    safe_text.filter(
        lambda k: not personal_key(k, person=True)
        and k.lower().replace("_", "")
        not in {
            "price",
            "quantity",
            "revenue",
            "timeonpages",
            "scrolldepth",
            "productid",
            "category",
            "url",
            "campaignid",
            "sessionid",
        }
    ),
    plain_values,
    max_size=4,
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["track", "page", "identify"]))
    user_id = draw(st.none() | ids)
    anonymous_id = draw(ids) if user_id is None else draw(st.none() | ids)
    props = dict(draw(extra_props))
    for key, (low, high, _) in RANGES.items():
        if draw(st.booleans()):
            props[key] = draw(st.floats(low, high) | st.integers(int(low), int(high)))
    for key in ("product_id", "category", "url", "campaign_id"):
        if draw(st.booleans()):
            props[key] = draw(safe_text)
    traits: dict[str, object] = {}
    name: str | None
    if kind == "track":
        name = draw(st.sampled_from(sorted(SEGMENT_NAMES)) | ids)
        etype = canonical_type(name)
    elif kind == "page":
        name = draw(st.none() | safe_text)
        etype = "page_view"
    else:
        name, etype, props = None, "identify", {}
        traits = dict(draw(extra_props))
    loc = draw(st.none() | safe_text)
    ts_ms = draw(st.integers(MS_2000, MS_2100))
    return Event(
        message_id=draw(ids),
        type=etype,
        user_id=user_id,
        anonymous_id=anonymous_id,
        ts_ms=ts_ms,
        received_ms=draw(st.integers(max(MS_2000, ts_ms - MAX_FUTURE_MS), MS_2100)),  # dated at most 10 min ahead
        kind=kind,
        name=name,
        properties=props,
        traits=traits,
        device=draw(st.none() | st.sampled_from(["mobile", "desktop", "tablet"])),
        country=loc,
        city=draw(st.none() | safe_text) if loc else None,
        timezone=draw(st.none() | st.sampled_from(["Europe/Berlin", "UTC"])),
    )


@given(events())
def test_parse_serialize_roundtrip(parser: SegmentParser, event: Event) -> None:
    assert parser.event(to_payload(event), received_ms=event.received_ms) == event
    body = orjson.dumps({"batch": [to_payload(event)]})
    assert parser.body(body, received_ms=event.received_ms, kind="batch") == [event]


OK = {
    "type": "track",
    "event": "Product Viewed",
    "userId": "u1",
    "messageId": "m1",
    "timestamp": "2024-05-01T10:00:00Z",
}

BAD = [
    ({**OK, "userId": None}, "userId", "one of userId or anonymousId is required"),
    ({**OK, "userId": ["u"]}, "userId", "expected a string, got list"),
    ({**OK, "anonymousId": {"a": 1}}, "anonymousId", "expected a string, got dict"),
    ({**OK, "timestamp": "2024-05-01T10:00:00"}, "timestamp", "has no timezone"),
    ({**OK, "timestamp": "yesterday"}, "timestamp", "malformed timestamp"),
    ({**OK, "timestamp": 1714557600}, "timestamp", "expected an ISO 8601 string, got int"),
    ({**OK, "sentAt": "2024-13-01T00:00:00Z"}, "sentAt", "malformed timestamp"),
    ({**OK, "type": "purchase"}, "type", "unknown type 'purchase'"),
    ({k: v for k, v in OK.items() if k != "type"}, "type", "is required"),
    ({**OK, "event": None}, "event", "needs an event name"),
    ({**OK, "event": 7}, "event", "needs an event name"),
    ({**OK, "messageId": 12}, "messageId", "expected a string, got int"),
    ({**OK, "messageId": "m" * 300}, "messageId", "at most 256"),
    ({**OK, "properties": [1, 2]}, "properties", "expected an object, got list"),
    ({**OK, "properties": {"price": "cheap"}}, "properties.price", "expected a number"),
    ({**OK, "properties": {"quantity": True}}, "properties.quantity", "expected a number"),
    ({**OK, "properties": {"category": ["a"]}}, "properties.category", "expected a string"),
    ({**OK, "context": "web"}, "context", "expected an object, got str"),
    ("just a string", "$", "expected a JSON object"),
]


@pytest.mark.parametrize(("payload", "field", "problem"), BAD)
def test_bad_payload_names_its_field(parser: SegmentParser, payload: object, field: str, problem: str) -> None:
    with pytest.raises(EventError) as info:
        parser.event(payload, received_ms=RECEIVED)
    (got_field, got_problem), *_ = info.value.problems
    assert got_field == field and problem in got_problem, info.value


def test_bad_events_in_a_batch_are_all_named(parser: SegmentParser) -> None:
    batch = {"batch": [OK, {**OK, "timestamp": "nope"}, {**OK, "userId": None}]}
    with pytest.raises(EventError) as info:
        parser.batch(batch, received_ms=RECEIVED)
    assert [f for f, _ in info.value.problems] == ["batch[1].timestamp", "batch[2].userId"]


def test_oversized_event_and_batch_are_refused(parser: SegmentParser) -> None:
    big = {**OK, "properties": {"blob": "x" * (MAX_EVENT_BYTES + 10)}}
    with pytest.raises(PayloadTooLarge) as info:
        parser.body(orjson.dumps(big), received_ms=RECEIVED, kind="track")
    assert info.value.problems[0][0] == "$"
    with pytest.raises(PayloadTooLarge) as info:
        parser.body(orjson.dumps({"batch": [OK, big]}), received_ms=RECEIVED, kind="batch")
    assert info.value.problems[0][0] == "batch[1].properties"
    with pytest.raises(PayloadTooLarge):
        parser.body(orjson.dumps({"batch": [big] * 20}), received_ms=RECEIVED, kind="batch")


def test_invalid_json_and_non_batch(parser: SegmentParser) -> None:
    with pytest.raises(EventError, match=r"\$: invalid JSON"):
        parser.body(b"{nope", received_ms=RECEIVED)
    with pytest.raises(EventError, match="batch: expected a list of events"):
        parser.body(b'{"batch": 3}', received_ms=RECEIVED, kind="batch")


def test_unknown_fields_are_kept_or_ignored_never_refused(parser: SegmentParser) -> None:
    e = parser.event(
        {**OK, "integrations": {"All": False}, "whatever": [1], "properties": {"x": {"y": 1}}}, received_ms=RECEIVED
    )
    assert e.properties == {"x": {"y": 1}}
