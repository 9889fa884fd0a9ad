"""Unmodified payloads from analytics.js and the Segment and RudderStack Python
libraries parse to the expected canonical events."""

from __future__ import annotations

import orjson
import pytest

from features.events import Event, datetime_to_ms
from features.limits import EventError
from features.pseudonyms import Pseudonymizer
from features.segment_spec import SegmentParser

RECEIVED = "2024-05-01T10:00:02.000Z"


def ms(iso: str) -> int:
    from datetime import datetime

    return datetime_to_ms(datetime.fromisoformat(iso))


ANALYTICS_JS_TRACK = {
    "anonymousId": "3e5b2c4a-7b0c-4d1e-9f7a-1f2e3d4c5b6a",
    "context": {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "locale": "en-US",
        "page": {
            "path": "/p/sku-1",
            "referrer": "",
            "search": "",
            "title": "Shoe",
            "url": "https://shop.example/p/sku-1",
        },
        "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        "userAgentData": {"brands": [], "mobile": True, "platform": "iOS"},
        "ip": "203.0.113.7",
        "device": {"type": "mobile"},
        "location": {"country": "DE", "city": "Berlin"},
        "timezone": "Europe/Berlin",
    },
    "event": "Product Added",
    "integrations": {},
    "messageId": "ajs-next-1714557600000-0f1e2d3c",
    "properties": {
        "product_id": "sku-1",
        "category": "shoes",
        "price": 59.9,
        "quantity": 1,
        "coupon": "SPRING",
        "brand": "Acme",
    },
    "timestamp": "2024-05-01T10:00:00.000Z",
    "sentAt": "2024-05-01T10:00:01.000Z",
    "type": "track",
    "userId": None,
    "writeKey": "wk_123",
    "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
}

ANALYTICS_JS_PAGE = {
    "anonymousId": "3e5b2c4a-7b0c-4d1e-9f7a-1f2e3d4c5b6a",
    "category": None,
    "context": {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {"url": "https://shop.example/c/shoes?utm=x", "path": "/c/shoes"},
    },
    "name": "Shoes",
    "messageId": "ajs-next-page-1",
    "properties": {"path": "/c/shoes", "title": "Shoes", "time_on_page_s": 12.5, "scroll_depth": 0.6},
    "timestamp": "2024-05-01T09:59:00.000Z",
    "sentAt": "2024-05-01T09:59:00.500Z",
    "type": "page",
    "userId": "user-42",
}

SEGMENT_PYTHON_BATCH = {
    "batch": [
        {
            "properties": {
                "order_id": "o-1",
                "revenue": 119.8,
                "currency": "EUR",
                "products": [{"product_id": "sku-1", "price": 59.9, "quantity": 2}],
            },
            "timestamp": "2024-05-01T09:59:58.123456+00:00",
            "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
            "integrations": {},
            "messageId": "6a1c1e7e-3b8e-4d0a-9e0e-2a7e8b9c0d1f",
            "type": "track",
            "userId": "user-42",
            "event": "Order Completed",
        },
        {
            "traits": {"email": "Alice.Smith@Example.com", "name": "Alice Smith", "plan": "gold"},
            "timestamp": "2024-05-01T09:59:59+00:00",
            "context": {"library": {"name": "analytics-python", "version": "2.3.2"}, "ip": "198.51.100.4"},
            "integrations": {},
            "messageId": "9d2f6a2c-9d4d-4d8e-8a55-7b3c2b1a0f9e",
            "type": "identify",
            "userId": "user-42",
            "anonymousId": "3e5b2c4a-7b0c-4d1e-9f7a-1f2e3d4c5b6a",
        },
    ],
    "sentAt": "2024-05-01T10:00:01+00:00",
}

RUDDERSTACK_PYTHON_BATCH = {
    "batch": [
        {
            "channel": "server",
            "context": {"library": {"name": "rudder-analytics-python", "version": "2.1.0"}},
            "event": "Email Link Clicked",
            "integrations": {"All": True},
            "messageId": "rs-1",
            "originalTimestamp": "2024-05-01T09:00:00+00:00",
            "properties": {"campaign_id": "c-7", "link_url": "https://shop.example/?e=alice%40example.com"},
            "rudderId": "b1c2",
            "type": "track",
            "userId": "user-42",
            "sentAt": "2024-05-01T09:00:00+00:00",
        },
        {
            "channel": "server",
            "context": {"library": {"name": "rudder-analytics-python", "version": "2.1.0"}},
            "event": "Wishlist Shared",
            "messageId": "rs-2",
            "originalTimestamp": "2024-05-01T09:01:00+00:00",
            "properties": {"list": "summer"},
            "type": "track",
            "userId": "user-42",
            "sentAt": "2024-05-01T09:00:00+00:00",
        },
    ],
    "sentAt": "2024-05-01T10:00:02+00:00",
}


@pytest.fixture()
def received() -> int:
    return ms("2024-05-01T10:00:02+00:00")


def test_analytics_js_track_skew_corrected_and_context_reduced(parser: SegmentParser, received: int) -> None:
    (e,) = parser.body(orjson.dumps(ANALYTICS_JS_TRACK), received_ms=received, kind="track")
    assert e == Event(
        message_id="ajs-next-1714557600000-0f1e2d3c",
        type="add_to_cart",
        user_id=None,
        anonymous_id="3e5b2c4a-7b0c-4d1e-9f7a-1f2e3d4c5b6a",
        ts_ms=received - 1000,  # the client clock ran 1 s behind what it sent at
        received_ms=received,
        kind="track",
        name="Product Added",
        properties=ANALYTICS_JS_TRACK["properties"],
        device="mobile",
        country="DE",
        city="Berlin",
        timezone="Europe/Berlin",
    )
    assert e.profile_id == "3e5b2c4a-7b0c-4d1e-9f7a-1f2e3d4c5b6a"


def test_analytics_js_page_takes_url_from_context(parser: SegmentParser, received: int) -> None:
    (e,) = parser.body(orjson.dumps(ANALYTICS_JS_PAGE), received_ms=received, kind="page")
    assert (e.type, e.kind, e.name, e.user_id) == ("page_view", "page", "Shoes", "user-42")
    assert e.properties["url"] == "https://shop.example/c/shoes?utm=x"
    assert e.properties["time_on_page_s"] == 12.5
    assert e.ts_ms == received - 500


def test_segment_python_batch(parser: SegmentParser, pseudonymizer: Pseudonymizer, received: int) -> None:
    order, ident = parser.body(orjson.dumps(SEGMENT_PYTHON_BATCH), received_ms=received, kind="batch")
    assert (order.type, order.name, order.message_id) == (
        "purchase",
        "Order Completed",
        "6a1c1e7e-3b8e-4d0a-9e0e-2a7e8b9c0d1f",
    )
    # batch-level sentAt corrects skew: the client's clock was 1 s behind
    assert order.ts_ms == ms("2024-05-01T09:59:58.123+00:00") + 1000
    assert order.properties["products"][0]["quantity"] == 2
    assert ident.type == "identify" and ident.anonymous_id == "3e5b2c4a-7b0c-4d1e-9f7a-1f2e3d4c5b6a"
    assert ident.traits == {
        "email": pseudonymizer("alice.smith@example.com"),
        "name": pseudonymizer("Alice Smith"),
        "plan": "gold",
    }


def test_rudderstack_python_batch(parser: SegmentParser, pseudonymizer: Pseudonymizer, received: int) -> None:
    click, custom = parser.batch(RUDDERSTACK_PYTHON_BATCH, received_ms=received)
    assert click.type == "email_click" and click.properties["campaign_id"] == "c-7"
    assert click.ts_ms == received  # originalTimestamp == sentAt: no skew
    assert click.properties["link_url"] == "https://shop.example/?e=" + pseudonymizer("alice@example.com")
    assert (custom.type, custom.name) == ("Wishlist Shared", "Wishlist Shared")  # kept as a custom event
    assert custom.ts_ms == received + 60_000


def test_endpoint_body_without_type_uses_endpoint_kind(parser: SegmentParser, received: int) -> None:
    body = {"userId": "u1", "event": "Checkout Started", "timestamp": "2024-05-01T10:00:00Z", "messageId": "x"}
    (e,) = parser.body(orjson.dumps(body), received_ms=received, kind="track")
    assert e.type == "checkout_start" and e.ts_ms == ms("2024-05-01T10:00:00+00:00")


def test_missing_message_id_is_derived_stably(parser: SegmentParser, received: int) -> None:
    body = {
        "type": "track",
        "userId": "u1",
        "event": "Product Viewed",
        "timestamp": "2024-05-01T10:00:00Z",
        "properties": {"product_id": "p1"},
    }
    a = parser.event(body, received_ms=received)
    b = parser.event({**body, "sentAt": "2024-05-01T10:00:05Z"}, received_ms=received + 9)
    c = parser.event({**body, "properties": {"product_id": "p2"}}, received_ms=received)
    assert a.message_id == b.message_id != c.message_id
    assert a.message_id.startswith("derived-")


def test_no_timestamp_uses_receive_time(parser: SegmentParser, received: int) -> None:
    e = parser.event({"type": "track", "userId": "u1", "event": "Email Opened"}, received_ms=received)
    assert e.ts_ms == received and e.type == "email_open"


def test_ids_that_look_personal_are_pseudonymized(parser: SegmentParser, pseudonymizer: Pseudonymizer) -> None:
    e = parser.event(
        {"type": "track", "userId": "Bob@Mail.com", "anonymousId": "+1 415 555 0100", "event": "x"},
        received_ms=RECEIVED,
    )
    assert e.user_id == pseudonymizer("bob@mail.com")
    assert e.anonymous_id == pseudonymizer("+1 415 555 0100")
    assert parser.event({"type": "track", "userId": "543462", "event": "x"}, received_ms=RECEIVED).user_id == "543462"


def test_timestamps_outside_2000_to_2100_are_refused(parser: SegmentParser, received: int) -> None:
    for ts in ("0001-01-01T00:00:00Z", "1969-12-31T23:59:00Z", "9999-12-31T23:59:59Z"):
        with pytest.raises(EventError) as err:
            parser.event({"type": "track", "userId": "u", "event": "x", "timestamp": ts}, received_ms=received)
        assert err.value.problems[0][0] == "timestamp" and "2000-01-01" in err.value.problems[0][1]
    # a skew correction that lands far outside is refused too, and named after the field
    with pytest.raises(EventError):
        parser.event({"type": "track", "userId": "u", "event": "x", "timestamp": "2020-01-01T00:00:00Z",
                      "sentAt": "9999-01-01T00:00:00Z"}, received_ms=received)  # fmt: skip
