"""Parsing Segment Spec payloads into canonical events, within Segment's limits.

segflow accepts what the Segment and RudderStack client libraries, analytics.js
and their webhooks send, unchanged: ``track``, ``page``, ``screen``,
``identify``, ``alias``, ``group`` and ``batch`` payloads with camelCase
fields. Each becomes one :class:`~features.events.Event`:

- Event time is the client's ``timestamp`` corrected for clock skew the way
  Segment does it: ``received - (sentAt - timestamp)``; with no ``sentAt`` the
  timestamp is taken as given, and with no timestamp (nor RudderStack's
  ``originalTimestamp``) the receive time is used. Naive timestamps are refused.
- ``messageId`` is the idempotency key; where a client sends none it is
  derived from a keyed hash of the event's canonical content, so a retry of
  the same event gets the same id.
- Personal data never passes the edge raw: known personal fields of traits
  and properties (email, phone, names, address, IP) are pseudonymized, every
  email address found in any string is replaced by its pseudonym, ids that
  look like an email or phone number are pseudonymized, and the rest of
  ``context`` (IP, user agent, ...) is dropped except device type, location
  and timezone.
- Unknown fields are ignored or kept as given, never refused. Errors name the
  field: ``batch[3].timestamp: naive datetime '2024-01-01T10:00:00' has no
  timezone (expected ISO 8601 with Z or an offset)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from features.events import (
    CANONICAL_TYPES,
    IDENTIFY,
    KINDS,
    NUMERIC_PROPERTIES,
    PAGE_VIEW,
    Event,
    canonical_type,
    datetime_to_ms,
)
from features.limits import (
    EARLIEST_MS,
    LATEST_MS,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_FUTURE_MS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    EventError,
    PayloadTooLarge,
    check_event_sizes,
    check_properties,
    describe_ms,
    duration_words,
    load,
    too_long,
)
from features.payloads import canonical, depth_problem, identify_traits, scrub_mapping
from features.pseudonyms import Pseudonymizer


def _parse_time(value: object, where: str) -> int:
    if not isinstance(value, str):
        raise EventError([(where, f"expected an ISO 8601 string, got {type(value).__name__}")])
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise EventError([(where, f"malformed timestamp {value[:64]!r} (expected ISO 8601)")]) from None
    if dt.tzinfo is None:
        raise EventError(
            [(where, f"naive datetime {value[:64]!r} has no timezone (expected ISO 8601 with Z or an offset)")]
        )
    return datetime_to_ms(dt)


def _identifier(value: object, where: str, scrub: Pseudonymizer) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventError([(where, f"expected a string, got {type(value).__name__}")])
    text = str(value)
    if len(text) > MAX_NAME_CHARS:
        raise EventError([(where, too_long(text, MAX_NAME_CHARS))])
    return scrub.identifier(text)


def _mapping(payload: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventError([(where + key, f"expected an object, got {type(value).__name__}")])
    return value


def _context_text(value: str, where: str, scrub: Pseudonymizer) -> str:
    if len(value) > MAX_NAME_CHARS:
        raise EventError([(where + "context", f"a device, location or timezone {too_long(value, MAX_NAME_CHARS)}")])
    return scrub.scrub_text(value)


def _context_fields(context: Mapping[str, Any] | None) -> tuple[str | None, str | None, str | None, str | None]:
    if not context:
        return None, None, None, None
    device = context.get("device")
    device_type = device.get("type") if isinstance(device, dict) else None
    location = context.get("location")
    country = city = None
    if isinstance(location, dict):
        country = location.get("country")
        city = location.get("city")
    timezone = context.get("timezone")
    return (
        device_type if isinstance(device_type, str) else None,
        country if isinstance(country, str) else None,
        city if isinstance(city, str) else None,
        timezone if isinstance(timezone, str) else None,
    )


class SegmentParser:
    """Parses Segment Spec payloads into canonical events.

    >>> from features.pseudonyms import Pseudonymizer
    >>> parser = SegmentParser(Pseudonymizer(b"0" * 32))
    >>> e = parser.event({"type": "track", "event": "Product Added", "userId": "u1",
    ...     "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z",
    ...     "properties": {"product_id": "p9", "price": 19.5}}, received_ms=1_714_557_600_000)
    >>> e.type, e.user_id, e.properties["price"], e.timestamp.isoformat()
    ('add_to_cart', 'u1', 19.5, '2024-05-01T10:00:00+00:00')
    """

    __slots__ = ("_future_ms", "_numeric", "_scrub", "_types")

    def __init__(
        self,
        pseudonymizer: Pseudonymizer,
        *,
        numeric: Iterable[str] = (),
        max_future_ms: int | None = MAX_FUTURE_MS,
    ) -> None:
        """``numeric``: properties beyond the default ones that configured
        features or rules read as numbers (checked like ``price``);
        ``max_future_ms``: how far ahead of its receipt an event may be dated
        (None: any time in segflow's range, for importing history)."""
        self._scrub = pseudonymizer
        self._types: dict[str, str] = {}
        self._numeric = frozenset(NUMERIC_PROPERTIES) | frozenset(numeric)
        self._future_ms = max_future_ms

    @property
    def pseudonymizer(self) -> Pseudonymizer:
        """The pseudonymizer this parser keys ids with."""
        return self._scrub

    def _type_of(self, name: str) -> str:
        """The canonical type of an event name, or the custom name scrubbed of personal data."""
        cached = self._types.get(name)
        if cached is None:
            cached = canonical_type(name)
            if cached not in CANONICAL_TYPES:
                cached = self._scrub.scrub_text(cached)
            if len(self._types) < 10_000:
                self._types[name] = cached
        return cached

    def event(
        self,
        payload: object,
        *,
        received_ms: int,
        kind: str | None = None,
        where: str = "",
        sent_at: object = None,
        batch_context: Mapping[str, Any] | None = None,
    ) -> Event:
        """One event. ``kind`` is implied by an endpoint (``/v1/track``) or read
        from the payload's ``type``; ``where`` prefixes field names in errors."""
        if not isinstance(payload, dict):
            raise EventError([(where or "$", f"expected a JSON object, got {type(payload).__name__}")])
        deep = depth_problem(payload)
        if deep is not None:
            raise EventError([(where + deep[0], deep[1])])
        scrub = self._scrub
        given_kind = payload.get("type")
        if kind is None:
            if given_kind is None:
                raise EventError([(where + "type", f"is required (one of {', '.join(KINDS)})")])
            if given_kind not in KINDS:
                raise EventError(
                    [(where + "type", f"unknown type {given_kind!r:.40} (expected one of {', '.join(KINDS)})")]
                )
            kind = given_kind
        user_id = _identifier(payload.get("userId"), where + "userId", scrub)
        anonymous_id = _identifier(payload.get("anonymousId"), where + "anonymousId", scrub)
        if user_id is None and anonymous_id is None:
            raise EventError([(where + "userId", "one of userId or anonymousId is required")])

        name: str | None
        if kind == "track":
            name = payload.get("event")
            if not isinstance(name, str) or not name.strip():
                got = "nothing" if name is None else repr(name)[:40]
                raise EventError([(where + "event", f"a track call needs an event name, got {got}")])
            if len(name) > MAX_NAME_CHARS:
                raise EventError([(where + "event", too_long(name, MAX_NAME_CHARS))])
            etype = self._type_of(name)
            if etype not in CANONICAL_TYPES:
                name = etype  # a custom event: its name as kept
        elif kind in ("page", "screen"):
            name = payload.get("name")
            if name is not None and not isinstance(name, str):
                raise EventError([(where + "name", f"expected a string, got {type(name).__name__}")])
            if name is not None:
                if len(name) > MAX_NAME_CHARS:
                    raise EventError([(where + "name", too_long(name, MAX_NAME_CHARS))])
                name = scrub.scrub_text(name)
            etype = PAGE_VIEW
        elif kind in ("identify", "alias"):
            name = None
            etype = IDENTIFY
        else:  # group
            name = None
            etype = "group"

        props_in = _mapping(payload, "properties", where)
        traits_in = _mapping(payload, "traits", where)
        context = _mapping(payload, "context", where)
        if batch_context:
            context = {**batch_context, **context} if context else dict(batch_context)
        if kind == "identify" and context and isinstance(context.get("traits"), dict):
            traits_in = identify_traits({"traits": traits_in, "context": context})  # RudderStack's place
        if kind == "alias":
            previous = _identifier(payload.get("previousId"), where + "previousId", scrub)
            traits_in = {**(traits_in or {}), "previousId": previous}
        if props_in:
            properties = check_properties(scrub_mapping(props_in, scrub, False), where + "properties", self._numeric)
        else:
            properties = {}
        if kind == "page" and context:
            page = context.get("page")
            if isinstance(page, dict) and "url" not in properties and isinstance(page.get("url"), str):
                if len(page["url"]) > MAX_TEXT_CHARS:
                    raise EventError([(where + "context.page.url", too_long(page["url"], MAX_TEXT_CHARS))])
                properties = {**properties, "url": scrub.scrub_text(page["url"])}
        traits = scrub_mapping(traits_in, scrub, True) if traits_in else {}
        device, country, city, timezone = (
            None if v is None else _context_text(v, where, scrub) for v in _context_fields(context)
        )

        raw_ts = payload.get("timestamp")
        ts_field = "timestamp"
        if raw_ts is None:  # RudderStack's SDKs send originalTimestamp
            raw_ts = payload.get("originalTimestamp")
            ts_field = "originalTimestamp"
        if raw_ts is None:
            ts_ms = received_ms
        else:
            ts_ms = _parse_time(raw_ts, where + ts_field)
            own_sent = payload.get("sentAt")
            if own_sent is not None:
                ts_ms = received_ms - (_parse_time(own_sent, where + "sentAt") - ts_ms)
            elif sent_at is not None:
                ts_ms = received_ms - (_parse_time(sent_at, "sentAt") - ts_ms)
            if not EARLIEST_MS <= ts_ms <= LATEST_MS:  # the client's clock, after skew correction
                when = describe_ms(ts_ms)
                problem = f"{when} is not between 2000-01-01 and 2100-01-01 (UTC), the times segflow accepts"
                raise EventError([(where + ts_field, problem)])
            if self._future_ms is not None and ts_ms > received_ms + self._future_ms:
                ahead = (ts_ms - received_ms) / 1000
                problem = (
                    f"{describe_ms(ts_ms)} is {duration_words(ahead)} after the event was received"
                    f" (after sentAt correction); at most {duration_words(self._future_ms / 1000)} ahead is allowed"
                )
                raise EventError([(where + ts_field, problem)])

        message_id = payload.get("messageId")
        if message_id is None or message_id == "":
            message_id = self.derive_message_id(payload)
        elif not isinstance(message_id, str):
            raise EventError([(where + "messageId", f"expected a string, got {type(message_id).__name__}")])
        elif len(message_id) > MAX_NAME_CHARS:
            raise EventError([(where + "messageId", too_long(message_id, MAX_NAME_CHARS))])
        else:
            message_id = scrub.scrub_text(message_id)

        return Event(
            message_id,
            etype,
            user_id,
            anonymous_id,
            ts_ms,
            received_ms,
            kind,
            name,
            properties,
            traits,
            device,
            country,
            city,
            timezone,
        )

    def derive_message_id(self, payload: Mapping[str, Any]) -> str:
        """A stable id from the event's canonical content (keyed, so no personal
        data can be recovered from it); the send time is not part of it."""
        content = {
            k: payload.get(k)
            for k in ("type", "event", "name", "userId", "anonymousId", "timestamp", "properties", "traits")
        }
        return "derived-" + self._scrub.digest(canonical(content))

    def batch(self, payload: object, *, received_ms: int) -> list[Event]:
        """A ``batch`` envelope, all or nothing: every event parsed, every error reported."""
        parsed = self.batch_parts(payload, received_ms=received_ms)
        parsed.raise_rejections()
        return parsed.events

    def batch_parts(self, payload: object, *, received_ms: int) -> Parsed:
        """A ``batch`` envelope, event by event: the good events, and each bad
        one with its index and problems (an envelope that is not a batch at
        all is refused whole)."""
        if not isinstance(payload, dict):
            raise EventError([("$", f"expected a JSON object, got {type(payload).__name__}")])
        items = payload.get("batch")
        if not isinstance(items, list):
            got = "nothing" if items is None else type(items).__name__
            raise EventError([("batch", f"expected a list of events, got {got}")])
        context = payload.get("context")
        if context is not None and not isinstance(context, dict):
            raise EventError([("context", f"expected an object, got {type(context).__name__}")])
        sent_at = payload.get("sentAt")
        out = Parsed([], [])
        parse = self.event
        for i, item in enumerate(items):
            try:
                out.events.append(
                    parse(item, received_ms=received_ms, where=f"batch[{i}].", sent_at=sent_at, batch_context=context)
                )
            except EventError as exc:
                if isinstance(item, dict):  # kept as it would be sent alone: the envelope's sentAt and context in it
                    own = item.get("context")
                    merged = {**context, **own} if context and isinstance(own, dict) else (own or context)
                    item = {**item, "sentAt": item.get("sentAt", sent_at), "context": merged}
                out.rejected.append(Rejection(i, exc.problems, item))
        return out

    def body(self, body: bytes, *, received_ms: int, kind: str | None = None) -> list[Event]:
        """A raw HTTP body, all or nothing: see :meth:`parse`."""
        parsed = self.parse(body, received_ms=received_ms, kind=kind)
        parsed.raise_rejections()
        return parsed.events

    def parse(self, body: bytes, *, received_ms: int, kind: str | None = None) -> Parsed:
        """A raw HTTP body: :func:`load`, then :meth:`parse_payload`."""
        payload = load(body, kind)
        return self.parse_payload(payload, received_ms=received_ms, kind=kind, size=len(body))

    def parse_payload(self, payload: object, *, received_ms: int, kind: str | None = None, size: int = 0) -> Parsed:
        """A loaded body: ``batch`` or one event, each event accepted or
        rejected on its own. ``kind`` is the endpoint's (``track``, ``page``,
        ``identify``) or ``batch``; with ``None`` the body's own ``type``
        decides. A body that is not an envelope raises :class:`EventError`."""
        key = write_key_of(payload)
        if kind == "batch" or (kind is None and isinstance(payload, dict) and "batch" in payload):
            items = payload.get("batch") if isinstance(payload, dict) else None
            if isinstance(items, list) and len(items) > MAX_BATCH_EVENTS:
                problem = f"holds {len(items)} events; at most {MAX_BATCH_EVENTS} are allowed in one batch"
                raise PayloadTooLarge([("batch", problem)])
            if size > MAX_EVENT_BYTES:
                check_event_sizes(payload)
            parsed = self.batch_parts(payload, received_ms=received_ms)
            parsed.write_key = key
            return parsed
        try:
            return Parsed([self.event(payload, received_ms=received_ms, kind=kind)], [], key)
        except EventError as exc:
            if not isinstance(payload, dict):
                raise
            return Parsed([], [Rejection(0, exc.problems, payload)], key)

    def profile_of(self, payload: object) -> str | None:
        """The profile a (possibly bad) payload names, or None."""
        if not isinstance(payload, dict):
            return None
        for name in ("userId", "anonymousId"):
            try:
                found = _identifier(payload.get(name), name, self._scrub)
            except EventError:
                continue
            if found is not None:
                return found
        return None

    def scrubbed(self, payload: object) -> object:
        """A payload as it may be kept (a rejected event in quarantine):
        personal data pseudonymized, nesting cut at the limit."""
        if isinstance(payload, dict):
            kept = {k: v for k, v in payload.items() if k != "writeKey"}  # a key is no evidence
            for name in ("userId", "anonymousId", "previousId"):
                value = kept.get(name)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    kept[name] = self._scrub.identifier(str(value)[:MAX_NAME_CHARS])
            return scrub_mapping(kept, self._scrub, False)
        if isinstance(payload, str):
            return self._scrub.scrub_text(payload)[:MAX_TEXT_CHARS]
        return scrub_mapping({"$": payload}, self._scrub, False)["$"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event refused at the edge: its index in the request, its problems
    (each naming a field) and the payload as sent (scrub it before keeping)."""

    index: int
    problems: list[tuple[str, str]]
    payload: object


@dataclass(slots=True)
class Parsed:
    """A request's events: those accepted, and those rejected one by one."""

    events: list[Event]
    rejected: list[Rejection]
    write_key: str | None = None  # a key given in the body (analytics.js puts it there)

    def raise_rejections(self) -> None:
        """Raise every rejection's problems as one EventError, if there were any."""
        if self.rejected:
            raise EventError([p for r in self.rejected for p in r.problems])


def write_key_of(payload: object) -> str | None:
    """A key given in a body (``writeKey``, as analytics.js sends it)."""
    key = payload.get("writeKey") if isinstance(payload, dict) else None
    return key if isinstance(key, str) else None
