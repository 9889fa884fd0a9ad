"""One rule, two executions: the backtest over columns decides exactly what the
engine decides replaying the same events on the event clock with the same
frozen models: the same transitions, at the same instants, in the same order
for each user. Random histories (same-instant events, late ones, retries,
identify and alias calls) and random configs (windows, recencies, sequences,
sums, distinct values, scores with hysteresis and a dwell, segment
references, groups)."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.defaults import DEFAULT_SPECS
from features.events import Event
from features.online import FeatureSet
from models.clusters import ClusterModel
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from serving.backtest import Decided, backtest
from serving.engine import Engine
from serving.regime import build_features, intent_feature_names, loads_config
from serving.scorers import Scorers
from training.datasets import build, cluster_features, user_vectors
from training.synthetic import generate

BASE = 1_790_035_200_000
MIN = 60_000
USERS, ANONS = ["u1", "u2", "u3"], ["a1", "a2", "a3"]
TRACKS = [
    "product_view", "product_view", "add_to_cart", "remove_from_cart", "purchase", "page_view", "checkout_start",
    "email_click",
]  # fmt: skip


@pytest.fixture(scope="module")
def models() -> Scorers:
    """All three models, trained on a small synthetic history (their scores vary with the features)."""
    history = generate(users=150, days=4, seed=3)
    data = build(history.events, FeatureSet(DEFAULT_SPECS), seed=0)
    batch = BatchIntentModel(random_state=0, num_boost_round=60).fit(data.X, data.y)
    habits = cluster_features(history.events)
    clusters = ClusterModel(k_range=(3, 3), random_state=0, specs=habits.specs).fit(
        user_vectors(history.events, habits)
    )
    online = OnlineIntentModel()
    for x, y in zip(data.X.to_dict("records")[:3000], data.y.tolist()[:3000], strict=True):
        online.pipeline_.learn_one(online.features({k: x[k] for k in intent_feature_names()}), bool(y))
    return Scorers(online, intent_feature_names(), batch=batch, clusters=clusters)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 40))
    steps = draw(st.lists(st.sampled_from([0, 0, 1, 5, 30, 61, 24 * 60, 3 * 24 * 60]), min_size=n, max_size=n))
    events: list[Event] = []
    t = BASE
    for i, step in enumerate(steps):
        t += step * MIN
        at = t + draw(st.sampled_from([0, 0, 0, 1, -10 * MIN, -80 * MIN]))  # -80 min: past the lateness
        what = draw(st.sampled_from(["user", "user", "user", "anon", "identify", "alias"]))
        user, anon = draw(st.sampled_from(USERS)), draw(st.sampled_from(ANONS))
        base = Event(f"m{i}", draw(st.sampled_from(TRACKS)), None, None, at, BASE + i * 1000)
        if what == "user":
            event = replace(base, user_id=user)
        elif what == "anon":
            event = replace(base, anonymous_id=anon)
        elif what == "identify":
            event = replace(base, type="identify", kind="identify", user_id=user, anonymous_id=anon)
        else:
            previous = draw(st.sampled_from([*ANONS, *USERS]))
            event = replace(base, type="alias", kind="alias", user_id=user, traits={"previousId": previous})
        if event.type in ("product_view", "add_to_cart", "remove_from_cart", "purchase"):
            price = draw(st.sampled_from([9.99, 20.0, 35.5, 120.0]))
            event = replace(event, properties={"price": price, "category": draw(st.sampled_from(["shoes", "hats"]))})
        events.append(event)
        if draw(st.integers(0, 9)) == 0:  # a retry of the same message: dropped
            events.append(replace(event, received_ms=event.received_ms + 500))
    return events


RULES = [
    "count(product_view, {w}) >= {n}",
    "count(any, {w}) >= 1 and since(purchase) > since(add_to_cart)",
    "since(add_to_cart) <= {d}",
    "since(product_view) >= {d} and count(product_view, 7d) >= 1",
    "not_followed(add_to_cart, purchase, {d})",
    "sum(price, add_to_cart, {w}) > {x}",
    'distinct(category, product_view, {w}) >= 2 or count(product_view, {w}, category == "shoes") >= {n}',
    "cart_value_7d >= {x} and since(add_to_cart) >= {d}",
    "at_least(2, count(email_click, {w}) >= 1, count(checkout_start, {w}) >= 1, since(page_view) < {d})",
    "count(add_to_cart, {w}) >= 0 and since(any) < {d}",
    "intent >= {p}",
    'intent_online >= {p} or cluster == "c1"',
]


@st.composite
def configs(draw: st.DrawFn) -> str:
    names: list[str] = []
    lines = ["version: 1", "thresholds: {cut: 0.3}", "segments:"]
    for i in range(draw(st.integers(1, 5))):
        rule = draw(st.sampled_from(RULES)).format(
            w=draw(st.sampled_from(["30m", "1h", "24h"])),
            n=draw(st.sampled_from([1, 2, 3])),
            d=draw(st.sampled_from(["1m", "30m", "2h", "48h"])),
            x=draw(st.sampled_from([10, 30, 100])),
            p=draw(st.sampled_from([0.05, 0.2, 0.35, 0.6, "thresholds.cut"])),
        )
        if names and draw(st.integers(0, 4)) == 0:
            rule = f'({rule}) and not in_segment("{draw(st.sampled_from(names))}")'
        name = f"s{i}"
        lines += [f"  - name: {name}", f"    description: segment {i}", f"    rule: '{rule}'"]
        if draw(st.integers(0, 3)) == 0:  # hysteresis and a dwell, outside any group
            leave = draw(st.sampled_from(["intent < 0.02", "intent < 0.1", "intent < 0.3", "count(any, 1h) < 1",
                                          "since(product_view) >= 30m", "cart_value_7d < 20"]))  # fmt: skip
            lines.append(f"    exit: '{leave}'")
        if draw(st.integers(0, 3)) == 0:
            lines.append(f"    min_dwell: {draw(st.sampled_from(['1m', '1h', '2d']))}")
        names.append(name)
    simple = [n for n in names if f"  - name: {n}" in lines and not _stateful(lines, n)]
    if len(simple) >= 2 and draw(st.booleans()):
        lines += ["groups:", "  - name: g", f"    segments: [{', '.join(simple[:3])}]"]
    return "\n".join(lines) + "\n"


def _stateful(lines: list[str], name: str) -> bool:
    at = lines.index(f"  - name: {name}")
    after = lines[at + 1 : at + 5]
    block = after[: next((i for i, line in enumerate(after) if line.startswith("  - name")), len(after))]
    return any(line.strip().startswith(("exit:", "min_dwell:")) for line in block)


def by_user(decided: list[Decided]) -> dict[str, list[tuple[int, str, str]]]:
    out: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for user, segment, kind, at in decided:
        out[user].append((at, segment, kind))
    return dict(out)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=histories(), text=configs(), tail=st.sampled_from([0, 90 * MIN, 5 * 24 * 60 * MIN]))
def test_the_backtest_decides_exactly_what_the_engine_replay_decides(
    models: Scorers, events: list[Event], text: str, tail: int
) -> None:
    config = loads_config(text)
    end = max(e.ts_ms for e in events) + tail
    frozen = copy.deepcopy(models)
    frozen.online.frozen = True
    engine = Engine(config, build_features(config, frozen), frozen, clock="event")
    changes = engine.ingest(events).changes + engine.advance(end)
    expected = by_user([(c.profile_id, c.transition.segment, c.transition.kind, c.transition.at_ms) for c in changes])
    again = copy.deepcopy(models)
    again.online.frozen = True
    got = backtest(config, again, events, end)
    assert by_user(got.transitions) == expected, (text, got.why_replayed)


def engine_and_backtest(text: str, events: list[Event], end: int, models: Scorers) -> None:
    config = loads_config(text)
    frozen = copy.deepcopy(models)
    frozen.online.frozen = True
    engine = Engine(config, build_features(config, frozen), frozen, clock="event")
    changes = engine.ingest(events).changes + engine.advance(end)
    expected = by_user([(c.profile_id, c.transition.segment, c.transition.kind, c.transition.at_ms) for c in changes])
    assert by_user(backtest(config, copy.deepcopy(frozen), events, end).transitions) == expected


def test_a_replayed_user_sees_the_timers_others_events_fired_at_their_own_instant(models: Scorers) -> None:
    """C's window exit is due at T; A (joined by identify, so replayed) has an event at T, B's event at T + 1
    fires C's timer; C's view stamped T arrives behind the clock (replayed too)."""
    text = "version: 1\nsegments:\n  - {name: viewers, description: v, rule: 'count(product_view, 1h) >= 1'}\n"
    t0 = BASE + 10 * MIN
    t = t0 + 61 * MIN  # the view's 1-minute bucket leaves the hour
    events = [
        Event("c1", "product_view", "C", None, t0, t0),
        Event("a1", "identify", "A", "anonA", t, t, kind="identify"),
        Event("b1", "page_view", "B", None, t + 1, t + 1),
        Event("c2", "product_view", "C", None, t, t + 2),
    ]
    engine_and_backtest(text, events, t + 10 * MIN, models)


def test_users_whose_answer_depends_on_arrival_order_are_replayed_and_counted(models: Scorers) -> None:
    text = "version: 1\nsegments:\n  - {name: viewers, description: v, rule: 'count(product_view, 1h) >= 2'}\n"
    t = BASE + 10 * MIN
    events = [
        Event("a1", "product_view", "A", None, t, t),
        Event("b1", "product_view", "B", None, t, t + 1),
        Event("a2", "product_view", "A", None, t, t + 2),  # A at one instant, with B's event between
        Event("d1", "product_view", "D", None, t, t + 3),
        Event("d2", "product_view", "D", None, t, t + 4),  # one after the other: evaluated once, on columns
        Event("c1", "product_view", "C", None, t + 5 * MIN, t + 5),
        Event("c2", "product_view", "C", None, t + MIN, t + 6),  # behind the clock
    ]
    engine_and_backtest(text, events, t + 2 * 60 * MIN, models)
    got = backtest(loads_config(text), models, events, t + 2 * 60 * MIN)
    assert got.why_replayed == {
        "arrived after the clock passed it": 1,
        "two events at one instant with another user's between": 1,
    }
    assert got.replayed == 4 and {u for u, _, _, _ in got.transitions} >= {"A", "C", "D"}


def test_a_purchase_empties_the_cart_for_a_removal_in_its_own_minute(models: Scorers) -> None:
    text = "version: 1\nsegments:\n  - {name: open_cart, description: v, rule: 'cart_value_7d > 0'}\n"
    p = BASE + 30_000
    events = [
        Event("m1", "purchase", "U", None, p, p, properties={"price": 20.0}),
        Event("m2", "remove_from_cart", "U", None, p + 1, p + 1, properties={"price": 9.99}),
    ]
    engine_and_backtest(text, events, p + 10, models)


def test_a_synthetic_month_is_decided_over_columns_exactly_as_the_engine_does(models: Scorers) -> None:
    """The shipped config over a realistic history: nothing replayed, every transition the engine's."""
    from features.table import table_to_events
    from serving.regime import load_config

    config = load_config("config/segments.yaml")
    history = generate(users=120, days=20, seed=8)
    events = list(table_to_events(history.events))
    end = events[-1].ts_ms + 1
    frozen = copy.deepcopy(models)
    frozen.online.frozen = True
    engine = Engine(config, build_features(config, frozen), frozen, clock="event")
    changes = engine.ingest(events).changes + engine.advance(end)
    got = backtest(config, copy.deepcopy(frozen), history.events, end)
    assert got.replayed == 0 and got.rows > len(events)
    expected = by_user([(c.profile_id, c.transition.segment, c.transition.kind, c.transition.at_ms) for c in changes])
    assert len(changes) > 1000 and by_user(got.transitions) == expected
