"""Each spec's meaning on tiny literal timelines, online and offline alike."""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import pytest

from features.events import Event
from features.offline import OfflineFeatures, point_in_time
from features.online import FeatureSet
from features.specs import (
    ANY,
    CartValue,
    Eq,
    HourOfDay,
    In,
    LastValue,
    Ratio,
    Recency,
    Relative,
    Spec,
    Weekend,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
)
from features.table import events_to_table

MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a Thursday
H = timedelta(hours=1)
LN2 = math.log(2)
PRICES = Relative.of("price", "category", {"shoes": 50.0}, default=10.0)


def ev(minute: float, etype: str, **props: object) -> Event:
    fields = {k: props.pop(k) for k in ("device", "country", "timezone") if k in props}
    ts = T0 + int(minute * MIN)
    return Event(f"m{minute}-{etype}-{sorted(props.items())}", etype, "u", None, ts, ts, properties=props, **fields)


def both(spec: Spec, events: list[Event], minute: float) -> object:
    """The value at ``minute``, checked equal online and offline."""
    fs = FeatureSet([spec])
    p = fs.new_profile()
    for e in events:
        fs.update(p, e)
    at = T0 + int(minute * MIN)
    online = fs.read(p, at)[spec.name]
    offline = point_in_time(fs, events_to_table(events), pd.DataFrame({"profile_id": ["u"], "at": [at]}))
    value = offline[spec.name].iloc[0]
    if isinstance(online, float) and math.isnan(online):
        assert math.isnan(value)
    else:
        assert online == pytest.approx(value, rel=1e-9) if isinstance(online, float) else online == value
    return online


CART = [
    ev(0, "add_to_cart", price=10.0, quantity=2),
    ev(5, "add_to_cart", price=5.0),
    ev(7, "remove_from_cart", price=5.0),
]


@pytest.mark.parametrize(
    ("spec", "events", "minute", "expected"),
    [
        # a 1h window at 1-minute resolution: the event at 00:00:30 sits in bucket (00:00, 00:01]
        (WindowCount("add_to_cart", H), [ev(0.5, "add_to_cart")], 60.5, 1),
        (WindowCount("add_to_cart", H), [ev(0.5, "add_to_cart")], 61, 0),
        (WindowCount("add_to_cart", H), [ev(0.5, "add_to_cart"), ev(1, "product_view")], 30, 1),
        # at 1 ms resolution a window is exactly (t - W, t]
        (WindowCount("x", H, resolution=timedelta(milliseconds=1)), [ev(0, "x")], 59.99, 1),
        (WindowCount("x", H, resolution=timedelta(milliseconds=1)), [ev(0, "x")], 60, 0),
        (WindowCount(ANY, H), [ev(0, "x"), ev(1, "y"), ev(2, "y")], 3, 3),
        (
            WindowCount("product_view", H, where=Eq("category", "shoes")),
            [ev(0, "product_view", category="shoes"), ev(1, "product_view", category="hats")],
            2,
            1,
        ),
        (
            WindowCount(ANY, H, where=In("device", ("mobile", "tablet"))),
            [ev(0, "x", device="mobile"), ev(1, "x", device="desktop"), ev(2, "x", device="tablet")],
            3,
            2,
        ),
        (WindowSum("price", "add_to_cart", H), [ev(0, "add_to_cart", price=2.5), ev(1, "add_to_cart")], 2, 2.5),
        (
            WindowMean("scroll_depth", ANY, H),
            [ev(0, "x", scroll_depth=0.2), ev(1, "x", scroll_depth=0.6), ev(2, "x")],
            3,
            0.4,
        ),
        (WindowMean("scroll_depth", ANY, H), [ev(0, "x")], 3, math.nan),
        (
            WindowDistinct("category", ANY, H),
            [ev(0, "x", category="a"), ev(1, "x", category="b"), ev(2, "x", category="a")],
            3,
            2,
        ),
        # distinct values keep exact times: 'b' (00:01) is out at 01:01
        (
            WindowDistinct("category", ANY, H),
            [ev(0, "x", category="a"), ev(1, "x", category="b"), ev(30, "x", category="a")],
            61,
            1,
        ),
        (Recency("purchase"), [ev(0, "purchase"), ev(10, "purchase")], 12.5, 150.0),
        (Recency("purchase"), [ev(0, "x")], 1, math.nan),
        (
            Ratio(WindowCount("email_click", H), WindowCount("email_open", H)),
            [ev(0, "email_open"), ev(1, "email_open"), ev(2, "email_click")],
            3,
            0.5,
        ),
        (Ratio(WindowCount("email_click", H), WindowCount("email_open", H)), [ev(0, "x")], 3, 0.0),
        (CartValue(), CART, 8, 20.0),
        (CartValue(), [*CART, ev(9, "purchase")], 10, 0.0),
        (CartValue(), [*CART, ev(9, "purchase"), ev(11, "add_to_cart", price=3.0)], 12, 3.0),
        # an add in the purchase's minute counts as bought
        (CartValue(), [ev(9.2, "purchase"), ev(9.5, "add_to_cart", price=3.0)], 12, 0.0),
        (CartValue(timedelta(days=7)), CART, 7 * 24 * 60 + 2, 0.0),
        (LastValue("country"), [ev(0, "x", country="DE"), ev(5, "x", country="FR"), ev(6, "x")], 7, "FR"),
        (LastValue("country"), [ev(0, "x")], 1, None),
        # 00:00 UTC on a Thursday is 01:00 in Berlin; 13:00 in Auckland is still Thursday
        (HourOfDay("sin"), [ev(0, "x", timezone="Europe/Berlin")], 0, math.sin(2 * math.pi / 24)),
        (HourOfDay("cos"), [ev(0, "x")], 6 * 60, math.cos(2 * math.pi * 6 / 24)),
        (Weekend(), [ev(0, "x")], 2 * 24 * 60, 1.0),
        (Weekend(), [ev(0, "x", timezone="Pacific/Auckland")], 2 * 24 * 60 - 12 * 60, 1.0),
        (Weekend(), [ev(0, "x", timezone="America/New_York")], 2 * 24 * 60 + 4 * 60, 0.0),
        # prices against their category's usual price (50 for shoes, 10 for any other)
        (
            WindowMean(PRICES, "product_view", H),
            [ev(0, "product_view", price=50.0, category="shoes"), ev(1, "product_view", price=10.0, category="x")],
            2,
            0.0,
        ),
        (WindowMean(PRICES, "product_view", H), [ev(0, "product_view", price=25.0, category="shoes")], 1, -LN2),
        (WindowMean(PRICES, "product_view", H), [ev(0, "product_view", price=20.0)], 1, LN2),
        (WindowMean(PRICES, "product_view", H), [ev(0, "product_view", price=0.0, category="shoes")], 1, math.nan),
        (WindowSum(PRICES, ANY, H), [ev(0, "x", price=100.0, category="shoes"), ev(1, "y", price=5.0)], 2, 0.0),
    ],
)
def test_spec_meaning(spec: Spec, events: list[Event], minute: float, expected: object) -> None:
    got = both(spec, events, minute)
    if isinstance(expected, float) and math.isnan(expected):
        assert isinstance(got, float) and math.isnan(got)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-12)
    else:
        assert got == expected


def test_names_come_from_parameters() -> None:
    assert WindowSum("price", "add_to_cart", timedelta(hours=48)).name == "add_to_cart_price_sum_48h"
    assert WindowMean("scroll_depth", ANY, timedelta(minutes=30)).name == "any_scroll_depth_mean_30m"
    assert CartValue().name == "cart_value_7d"
    assert [HourOfDay("sin").name, HourOfDay("cos").name, Weekend().name] == ["hour_sin", "hour_cos", "weekend"]
    with pytest.raises(ValueError, match="feature names must be unique"):
        FeatureSet([Recency("x"), Recency("x")])
    with pytest.raises(ValueError, match="longer than zero"):
        WindowCount("x", timedelta(0))
    with pytest.raises(ValueError, match="whole number"):
        _ = WindowCount("x", timedelta(minutes=90), resolution=timedelta(hours=1)).resolution_ms


def test_a_relative_property_learns_its_reference_and_names_it() -> None:
    views = [ev(i, "product_view", price=p, category=c) for i, (p, c) in enumerate(
        [(10.0, "a"), (30.0, "a"), (20.0, "a"), (100.0, "b"), (0.0, "a"), (5.0, None)]
    )]  # fmt: skip
    offline = OfflineFeatures(FeatureSet(()), events_to_table([*views, ev(9, "add_to_cart", price=1e6, category="b")]))
    prices = offline.reference("price", "category", "product_view", min_events=2)
    assert prices.table == pytest.approx({"a": math.log(20.0)})  # b has one view: it takes the median of all
    assert prices.default == pytest.approx(math.log(20.0))  # median of 10, 30, 20, 100, 5 (the free view aside)
    assert WindowMean(prices, "product_view", H).name == "product_view_price_vs_category_mean_1h"
    other = Relative.of("price", "category", {"a": 21.0}, 20.0)
    assert other != prices and hash(other) != hash(prices)
    assert FeatureSet([WindowMean(other, "x", H)]).digest != FeatureSet([WindowMean(prices, "x", H)]).digest
    with pytest.raises(ValueError, match="positive number"):
        Relative.of("price", "category", {"a": 0.0}, 1.0)
    with pytest.raises(ValueError, match="distinct counts take a property name"):
        FeatureSet([WindowDistinct(prices, "x", H)])  # type: ignore[arg-type]
