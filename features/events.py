"""The canonical event: one behavioral event, canonical and pseudonymized.

segflow accepts what the Segment and RudderStack client libraries, analytics.js
and their webhooks send (parsed by :mod:`features.segment_spec`). Each
becomes one frozen :class:`Event`:

- ``type`` is canonical: Segment's e-commerce and email names map onto
  :data:`CANONICAL_TYPES` (``Product Viewed`` -> ``product_view``); any other
  event name is kept as given, a custom event that rules can still count.
- Times are integer milliseconds since the Unix epoch, UTC.
- Personal data is already pseudonymized (see :mod:`features.segment_spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

PAGE_VIEW = "page_view"
PRODUCT_VIEW = "product_view"
ADD_TO_CART = "add_to_cart"
REMOVE_FROM_CART = "remove_from_cart"
WISHLIST_ADD = "wishlist_add"
CHECKOUT_START = "checkout_start"
PURCHASE = "purchase"
SEARCH = "search"
EMAIL_SEND = "email_send"
EMAIL_OPEN = "email_open"
EMAIL_CLICK = "email_click"
IDENTIFY = "identify"

CANONICAL_TYPES = frozenset(
    {
        PAGE_VIEW,
        PRODUCT_VIEW,
        ADD_TO_CART,
        REMOVE_FROM_CART,
        WISHLIST_ADD,
        CHECKOUT_START,
        PURCHASE,
        SEARCH,
        EMAIL_SEND,
        EMAIL_OPEN,
        EMAIL_CLICK,
    }
)

SEGMENT_NAMES: Mapping[str, str] = {
    "Product Viewed": PRODUCT_VIEW,
    "Product Clicked": PRODUCT_VIEW,
    "Product Added": ADD_TO_CART,
    "Product Removed": REMOVE_FROM_CART,
    "Product Added to Wishlist": WISHLIST_ADD,
    "Checkout Started": CHECKOUT_START,
    "Order Completed": PURCHASE,
    "Products Searched": SEARCH,
    "Email Delivered": EMAIL_SEND,
    "Email Sent": EMAIL_SEND,
    "Email Opened": EMAIL_OPEN,
    "Email Link Clicked": EMAIL_CLICK,
}

KINDS = ("track", "page", "screen", "identify", "alias", "group")

NUMERIC_PROPERTIES = ("price", "quantity", "revenue", "time_on_page_s", "scroll_depth")
STRING_PROPERTIES = ("product_id", "category", "url", "campaign_id")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Event:
    """One behavioral event, canonical and pseudonymized.

    Times are integer milliseconds since the Unix epoch (UTC); ``timestamp``
    and ``received_at`` give them as timezone-aware datetimes.
    """

    message_id: str
    type: str
    user_id: str | None
    anonymous_id: str | None
    ts_ms: int
    received_ms: int
    kind: str = "track"
    name: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    traits: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None
    country: str | None = None
    city: str | None = None
    timezone: str | None = None

    @property
    def profile_id(self) -> str:
        """The key of the profile this event belongs to (before identity stitching)."""
        return self.user_id or self.anonymous_id  # type: ignore[return-value]

    @property
    def timestamp(self) -> datetime:
        """The event time as a UTC datetime."""
        return ms_to_datetime(self.ts_ms)

    @property
    def received_at(self) -> datetime:
        """The receive time as a UTC datetime."""
        return ms_to_datetime(self.received_ms)


def ms_to_datetime(ms: int) -> datetime:
    """An aware UTC datetime from epoch milliseconds.

    >>> ms_to_datetime(0).isoformat()
    '1970-01-01T00:00:00+00:00'
    """
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (naive ones are refused)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()!r} has no timezone")
    return (dt - _EPOCH) // _MS


def format_ms(ms: int) -> str:
    """ISO 8601 in UTC with milliseconds, as Segment writes it.

    >>> format_ms(1511658000123)
    '2017-11-26T01:00:00.123Z'
    """
    return ms_to_datetime(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical_type(name: str) -> str:
    """The canonical type of an event name; other names are kept as given.

    >>> canonical_type("Order Completed"), canonical_type("purchase"), canonical_type("Signed Up")
    ('purchase', 'purchase', 'Signed Up')
    """
    mapped = SEGMENT_NAMES.get(name)
    if mapped is not None:
        return mapped
    return name


def to_payload(event: Event) -> dict[str, Any]:
    """The Segment Spec payload of an event; parsing it back gives the same event.

    >>> from features.pseudonyms import Pseudonymizer
    >>> from features.segment_spec import SegmentParser
    >>> parser = SegmentParser(Pseudonymizer(b"0" * 32))
    >>> e = Event("m1", "purchase", "u1", None, 1_700_000_000_000, 1_700_000_000_050,
    ...     name="Order Completed", properties={"revenue": 12.0})
    >>> parser.event(to_payload(e), received_ms=e.received_ms) == e
    True
    """
    payload: dict[str, Any] = {
        "type": event.kind,
        "messageId": event.message_id,
        "timestamp": format_ms(event.ts_ms),
    }
    if event.user_id is not None:
        payload["userId"] = event.user_id
    if event.anonymous_id is not None:
        payload["anonymousId"] = event.anonymous_id
    if event.kind == "track":
        payload["event"] = event.name
    elif event.name is not None:
        payload["name"] = event.name
    if event.properties:
        payload["properties"] = dict(event.properties)
    if event.traits:
        traits = dict(event.traits)
        if event.kind == "alias":
            payload["previousId"] = traits.pop("previousId", None)
        if traits:
            payload["traits"] = traits
    context: dict[str, Any] = {}
    if event.device is not None:
        context["device"] = {"type": event.device}
    if event.country is not None or event.city is not None:
        context["location"] = {k: v for k, v in (("country", event.country), ("city", event.city)) if v is not None}
    if event.timezone is not None:
        context["timezone"] = event.timezone
    if context:
        payload["context"] = context
    return payload
