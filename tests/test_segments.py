"""Segments: the shipped rules on literal timelines, with exact enter and exit
times (time-driven ones found by next_due, with no new event), reasons, and
errors that name line, column and problem."""

from __future__ import annotations

import math
import operator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.defaults import DEFAULT_SPECS
from features.events import Event
from segments.closures import Context
from segments.config import ConfigError, SegmentConfig, load, loads
from segments.grammar import RuleError
from segments.rules import compile_rule
from segments.timeline import feature_set_for, fold

ROOT = Path(__file__).resolve().parent.parent
MIN = 60_000
H = 60 * MIN
T0 = 1_767_225_600_000 + 10 * MIN + 15_000  # 2026-01-01 00:10:15 UTC
NAMES = [s.name for s in DEFAULT_SPECS]


@pytest.fixture(scope="module")
def config() -> SegmentConfig:
    return load(ROOT / "config/segments.yaml", NAMES)


def ev(at: int, etype: str, n: int = 0, **props: object) -> Event:
    return Event(f"m{at}-{etype}-{n}", etype, "u", None, at, at, properties=props)


def run(config: SegmentConfig, events: list[Event], until: int, scores=None) -> list[tuple[str, str, int]]:
    fs = feature_set_for(config, DEFAULT_SPECS)
    return [(t.segment, t.kind, t.at_ms) for t in fold(config, events, until, fs, scores)]


def only(transitions: list[tuple[str, str, int]], segment: str) -> list[tuple[str, int]]:
    return [(kind, at) for s, kind, at in transitions if s == segment]


def test_visited_category_in_last_24h_exits_when_window_slides(config: SegmentConfig) -> None:
    got = only(run(config, [ev(T0, "product_view", category="shoes")], T0 + 48 * H), "shoes_browsers_24h")
    # the minute bucket (00:10, 00:11] leaves the 24h window at 00:11:00 the next day
    assert got == [("enter", T0), ("exit", T0 - 15_000 + MIN + 24 * H)]


def test_three_email_clicks_in_a_week(config: SegmentConfig) -> None:
    clicks = [ev(T0 + i * H, "email_click") for i in range(3)]
    got = only(run(config, clicks, T0 + 9 * 24 * H), "email_clickers_7d")
    first_hour_end = T0 - 10 * MIN - 15_000 + H  # 7d windows count by the hour
    assert got == [("enter", T0 + 2 * H), ("exit", first_hour_end + 7 * 24 * H)]


def test_cart_abandonment_enters_48h_after_the_add(config: SegmentConfig) -> None:
    alone = [ev(T0, "add_to_cart", price=30.0)]
    assert only(run(config, alone, T0 + 10 * 24 * H), "cart_abandoners_48h") == [
        ("enter", T0 + 48 * H),
        ("exit", T0 + 7 * 24 * H),
    ]
    bought_before = [ev(T0 - 5 * H, "purchase"), ev(T0, "add_to_cart", price=30.0)]
    assert only(run(config, bought_before, T0 + 3 * 24 * H), "cart_abandoners_48h") == [("enter", T0 + 48 * H)]
    bought_after = [ev(T0, "add_to_cart", price=30.0), ev(T0 + 10 * H, "purchase")]
    assert only(run(config, bought_after, T0 + 3 * 24 * H), "cart_abandoners_48h") == []


def test_active_now_exits_30_minutes_after_last_activity(config: SegmentConfig) -> None:
    got = only(run(config, [ev(T0, "page_view"), ev(T0 + 20 * MIN, "page_view")], T0 + 2 * H), "active_now")
    assert got == [("enter", T0), ("exit", T0 + 50 * MIN + 1)]


def test_category_and_cart(config: SegmentConfig) -> None:
    events = [ev(T0, "product_view", category="electronics"), ev(T0 + MIN, "add_to_cart", price=5.0)]
    got = only(run(config, events, T0 + 2 * H), "electronics_carters")
    assert got == [("enter", T0 + MIN)]


def test_lifecycle_moves_from_interested_to_ready_to_buy(config: SegmentConfig) -> None:
    events = [ev(T0 + i * MIN, "product_view", i) for i in range(3)] + [ev(T0 + 5 * MIN, "add_to_cart", price=9.0)]
    got = run(config, events, T0 + 10 * MIN)
    lifecycle = [(s, k, t) for s, k, t in got if s in ("browsing", "interested", "ready_to_buy")]
    assert lifecycle == [
        ("browsing", "enter", T0),
        ("browsing", "exit", T0 + 2 * MIN),
        ("interested", "enter", T0 + 2 * MIN),
        ("interested", "exit", T0 + 5 * MIN),
        ("ready_to_buy", "enter", T0 + 5 * MIN),
    ]


def test_high_purchase_intent_needs_two_signals(config: SegmentConfig) -> None:
    one = [ev(T0, "product_view", category="a")]
    assert only(run(config, one, T0 + 10 * MIN), "high_purchase_intent") == []
    two = [
        *one,
        ev(T0 + MIN, "add_to_cart", category="a", price=1.0),
        ev(T0 + 2 * MIN, "add_to_cart", category="b", price=1.0),
    ]
    got = only(run(config, two, T0 + 3 * H), "high_purchase_intent")
    # enters with the second cart category; leaves when the product view is an hour old
    assert got == [("enter", T0 + 2 * MIN), ("exit", T0 - 15_000 + MIN + H)]


def test_intent_threshold_with_hysteresis_and_dwell(config: SegmentConfig) -> None:
    def scores(t: int) -> dict[str, float]:
        if t < T0 + 10 * MIN:
            return {"intent": 0.40}
        if t < T0 + 20 * MIN:
            return {"intent": 0.32}  # below entry, above exit: stays
        return {"intent": 0.10}  # below exit, but dwell keeps the member until T0 + 1h

    events = [ev(T0 + i * 10 * MIN, "page_view", i) for i in range(3)] + [ev(T0 + 70 * MIN, "page_view", 9)]
    got = only(run(config, events, T0 + 2 * H, scores), "likely_buyers")
    assert got == [("enter", T0), ("exit", T0 + 60 * MIN)]  # woken at the dwell end, no event needed


def test_transitions_carry_reasons(config: SegmentConfig) -> None:
    fs = feature_set_for(config, DEFAULT_SPECS)
    (enter, *_rest) = [
        t
        for t in fold(config, [ev(T0, "product_view", category="shoes")], T0 + 1, fs)
        if t.segment == "shoes_browsers_24h"
    ]
    assert enter.reason.config_id == config.config_id
    assert enter.reason.clauses == (('count(product_view, 24h, category == "shoes") >= 1', 1),)


BROKEN = [
    ("count(product_view, 24h >= 1", 1, "ends too early"),
    ("count(product_view 24h) >= 1", 1, "unexpected"),
    ("since(add_to_cart) <= 30m and", 1, "ends too early"),
    ("count(prodcut_view, 24h) >= 1", 1, "did you mean 'product_view'"),
    ("intnet > 0.5", 1, "did you mean 'intent'"),
    ("count(product_view, 24h)", 1, "expected a condition"),
    ('cluster >= "a"', 1, "needs numbers"),
    ('intent > "high"', 1, "cannot compare a number with a string"),
    ("at_least(3, intent > 0.1, intent > 0.2)", 1, "can never hold"),
    ("sum(price, add_to_cart) > 1", 1, "needs a property"),
    ("count(add_to_cart, 1h) >= 1 and\n  since(purchase) <= 5 parsecs", 2, "unexpected"),
    ("countt(add_to_cart, 1h) >= 1", 1, "did you mean 'count'"),
    ("intent >= thresholds.likly", 1, "did you mean 'likely'"),
    ("count(add_to_cart, 1h, price > 3) >= 1", 1, "a filter compares with =="),
    ("intent @ 3", 1, "unexpected character '@'"),
    ("not_followed(add_to_cart, purchase)", 1, "needs two events and a deadline"),
    ("not_followed(add_to_cart, purchse, 48h)", 1, "did you mean 'purchase'"),
    ("not_folowed(add_to_cart, purchase, 48h)", 1, "did you mean 'not_followed'"),
    ("count(add_to_cart, 0m) >= 1", 1, "longer than zero"),
    ("count(add_to_cart, 99999999999d) >= 1", 1, "at most 366d"),
    ("since(add_to_cart) <= 99999999999999999d", 1, "too long"),
    ("not " * 100 + "intent > 0.5", 1, "nested more than 64 levels"),
]


@pytest.mark.parametrize(("text", "line", "problem"), BROKEN)
def test_broken_rules_name_line_column_and_problem(text: str, line: int, problem: str) -> None:
    with pytest.raises(RuleError) as info:
        compile_rule(text, NAMES, ["product_view", "add_to_cart", "purchase"], {"likely": 0.5})
    assert info.value.line == line and info.value.column is not None
    assert problem in str(info.value)


def test_config_errors_name_file_line_and_problem() -> None:
    text = """version: 1
thresholds: {likely: 0.5}
segments:
  - name: a
    rule: in_segment("b") and intent > thresholds.likely
  - name: b
    rule: in_segment("a")
  - name: c
    rule: count(add_to_cart, 1h) >= 1 and cart_valu_7d > 3
  - name: d
    rule: in_segment("e")
groups:
  - name: g
    segments: [a, zz]
"""
    with pytest.raises(ConfigError) as info:
        loads(text, "segs.yaml", NAMES)
    problems = "\n".join(info.value.problems)
    assert "segs.yaml:9:43: segment 'c': unknown name 'cart_valu_7d' (did you mean 'cart_value_7d'?)" in problems
    assert "cycle: a -> b -> a" in problems
    assert "in_segment('e') names no segment" in problems
    assert "group 'g': unknown segment 'zz'" in problems


def test_shipped_config_is_valid_and_derives_its_features(config: SegmentConfig) -> None:
    names = {s.name for s in config.specs}
    assert "product_view_count_24h_category_shoes" in names and "purchase_recency_s" in names
    assert all(seg.description for seg in config.segments.values())
    assert len(config.config_id) == 12


_OPERATORS = {
    "==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}  # fmt: skip


@given(
    st.sampled_from(sorted(_OPERATORS)),
    st.booleans(),
    st.one_of(st.none(), st.just(math.nan), st.just(math.inf), st.sampled_from([0.0, 1799.0, 1800.0, 1801.0])),
)
def test_a_feature_against_a_constant_compares_as_stated(op: str, recency: bool, value: float | None) -> None:
    """Missing or NaN compares false; a recency that never happened is infinitely long ago."""
    name = "add_to_cart_recency_s" if recency else "add_to_cart_count_1h"
    rule = compile_rule(f"{'since(add_to_cart)' if recency else name} {op} 30m", NAMES)
    expected = value
    if recency and (value is None or value != value):
        expected = math.inf
    holds = expected is not None and expected == expected and _OPERATORS[op](expected, 1800.0)
    assert rule.holds(Context({name: value})) is holds


@given(
    st.one_of(st.none(), st.just(math.nan), st.sampled_from([5.0, 10.0])),
    st.one_of(st.none(), st.just(math.nan), st.sampled_from([5.0, 10.0])),
    st.sampled_from(sorted(_OPERATORS)),
)
def test_two_recencies_compare_with_never_infinitely_long_ago(
    bought: float | None, carted: float | None, op: str
) -> None:
    rule = compile_rule(f"since(purchase) {op} since(add_to_cart)", NAMES)
    never = math.inf
    b = never if bought is None or bought != bought else bought
    c = never if carted is None or carted != carted else carted
    context = Context({"purchase_recency_s": bought, "add_to_cart_recency_s": carted})
    assert rule.holds(context) is _OPERATORS[op](b, c)


@given(st.integers(1, 4), st.lists(st.sampled_from([0.0, 1.0, None]), min_size=4, max_size=4))
def test_at_least_counts_the_conditions_that_hold(n: int, values: list[float | None]) -> None:
    names = ["add_to_cart_count_1h", "add_to_cart_count_24h", "product_view_count_1h", "purchase_count_7d"]
    rule = compile_rule(f"at_least({n}, " + ", ".join(f"{name} >= 1" for name in names) + ")", NAMES)
    held = sum(1 for v in values if v is not None and v >= 1)
    assert rule.holds(Context(dict(zip(names, values, strict=True)))) is (held >= n)


@given(
    st.sampled_from(sorted(_OPERATORS)),
    st.sampled_from(["intent", "add_to_cart_count_1h"]),
    st.one_of(st.none(), st.just(math.nan), st.sampled_from([0.2, 0.35, 0.5])),
)
def test_a_score_or_feature_against_a_threshold_compares_as_stated(op: str, name: str, value: float | None) -> None:
    rule = compile_rule(f"{name} {op} thresholds.cut", NAMES, thresholds={"cut": 0.35})
    scores = {"intent": value} if name == "intent" else {}
    features = {name: value} if name != "intent" else {}
    holds = value is not None and value == value and _OPERATORS[op](value, 0.35)
    assert rule.holds(Context(features, scores, None, set(), {"cut": 0.35})) is holds


@given(
    st.one_of(st.none(), st.just(math.nan), st.sampled_from([100.0, 172_799.0, 172_800.0, 200_000.0])),
    st.one_of(st.none(), st.just(math.nan), st.sampled_from([50.0, 172_800.0, 300_000.0])),
)
def test_not_followed_holds_after_the_deadline_with_nothing_after(carted: float | None, bought: float | None) -> None:
    rule = compile_rule("not_followed(add_to_cart, purchase, 48h)", NAMES)
    never = math.inf
    since_cart = never if carted is None or carted != carted else carted
    since_buy = never if bought is None or bought != bought else bought
    holds = since_cart != never and since_cart >= 172_800 and since_buy > since_cart
    assert rule.holds(Context({"add_to_cart_recency_s": carted, "purchase_recency_s": bought})) is holds


@given(st.lists(st.sampled_from([0.0, 1.0, None]), min_size=3, max_size=3))
def test_and_or_over_many_parts(values: list[float | None]) -> None:
    names = ["add_to_cart_count_1h", "purchase_count_7d", "product_view_count_1h"]
    features = dict(zip(names, values, strict=True))
    held = [v is not None and v >= 1 for v in values]
    both = compile_rule(" and ".join(f"{n} >= 1" for n in names), NAMES)
    either = compile_rule(" or ".join(f"{n} >= 1" for n in names), NAMES)
    assert both.holds(Context(features)) is all(held) and either.holds(Context(features)) is any(held)


def test_a_yaml_mistake_is_named_where_it_starts_and_a_bare_segment_name_gets_a_hint() -> None:
    text = (
        "version: 1\nsegments:\n  - name: a\n    rule: count(product_view, 1h) >= 1\n"
        '  - name: "b\n    rule: count(product_view, 1h) >= 1\n  - name: c\n    rule: count(purchase, 1d) >= 1\n'
    )
    with pytest.raises(ConfigError) as exc:
        loads(text)
    assert str(exc.value).startswith("segments.yaml:5:11: not valid YAML: while scanning a quoted scalar")
    with pytest.raises(ConfigError) as exc:
        loads("version: 1\nsegments:\n  - name: a\n    rule: count(Product Viewed, 1h) >= 1\n")
    assert 'write an event name in quotes, "Product Viewed" (or its type, product_view)' in str(exc.value)
    with pytest.raises(ConfigError) as exc:  # a syntax error elsewhere, a quoted name: no hint
        loads('version: 1\nsegments:\n  - name: a\n    rule: count("Email Sent Twice" 1h) >= 1\n')
    assert "quotes" not in str(exc.value)


def test_a_category_feature_in_a_rule_says_how_to_filter_by_it_instead() -> None:
    from features.defaults import RULE_SPECS

    with pytest.raises(RuleError, match=r'last_device is a category.*count\(any, 24h, device == "..."\) >= 1'):
        compile_rule('last_device == "mobile"', RULE_SPECS)
