"""Folding a stream through online features and waking at each next_due gives
the same transitions as evaluating memberships on offline features at every
event time and every due time; groups never hold two segments; with a minimum
dwell nobody flaps faster than it."""

from __future__ import annotations

import heapq
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.defaults import DEFAULT_SPECS
from features.events import Event
from features.offline import OfflineFeatures
from features.table import events_to_table
from segments import timeline
from segments.config import loads
from segments.membership import Memberships, evaluate
from segments.timeline import feature_set_for, fold

MIN = 60_000
BASE = 1_767_225_600_000
TYPES = ["product_view", "add_to_cart", "purchase", "email_click", "checkout_start", "page_view", "Coupon Applied"]
CONFIG = loads(
    """
version: 1
thresholds: {many: 2}
segments:
  - name: recent_cart
    rule: count(add_to_cart, 1h) >= 1
  - name: shoes
    rule: count(product_view, 2h, category == "shoes") >= thresholds.many
  - name: abandoned
    rule: since(add_to_cart) >= 3h and since(purchase) > since(add_to_cart)
  - name: active
    rule: since(any) <= 30m
  - name: carts_by_name
    rule: page_view_count_30m >= 1
  - name: left_checkout
    rule: not_followed(checkout_start, purchase, 90m)
  - name: both
    rule: in_segment("active") and not in_segment("abandoned")
  - name: busy
    rule: at_least(2, count(product_view, 1h) >= 2, count(email_click, 24h) >= 1, distinct(category, any, 2h) >= 2)
    min_dwell: 45m
  - name: stage_a
    rule: count(any, 24h) >= 1
  - name: stage_b
    rule: count(product_view, 24h) >= 2
  - name: coupon_hunters
    rule: count("Coupon Applied", 2h) >= 2 and since("Coupon Applied") <= 90m
  - name: coupon_no_buy
    rule: not_followed("Coupon Applied", "Order Completed", 1h)
  - name: gold_active
    rule: trait("plan") == "gold" and since(any) <= 30m
  - name: grown_ups
    rule: trait("age") >= 40 or trait("plan") != "gold"
groups:
  - name: stages
    segments: [stage_b, stage_a]
""",
    known_features=DEFAULT_SPECS,
)


@st.composite
def timelines(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 25))
    steps = draw(st.lists(st.sampled_from([0, 1, 10, 29, 30, 31, 60, 61, 180, 240]), min_size=n, max_size=n))
    times = BASE + np.cumsum(steps) * MIN + draw(st.integers(0, 59_999))
    events = []
    for i, t in enumerate(times):
        etype = draw(st.sampled_from([*TYPES, "identify", "group"]))
        traits = {"plan": draw(st.sampled_from(["gold", "free"])), "age": draw(st.sampled_from([30, 45, 45.0]))}
        traits = {k: v for k, v in traits.items() if draw(st.booleans())}  # sometimes missing
        events.append(
            Event(
                f"m{i}",
                etype,
                "u",
                None,
                int(t),
                int(t),
                kind=etype if etype in ("identify", "group") else "track",
                properties={"category": draw(st.sampled_from(["shoes", "hats"]))},
                traits=traits if etype in ("identify", "group") else {},
            )
        )
    return events


def net(transitions: list) -> list[tuple[int, str, str]]:
    """Transitions netted per instant: several events at one instant are
    evaluated one by one online, once offline; what counts is the state after."""
    out: dict[tuple[int, str], int] = {}
    for t in transitions:
        key = (t.at_ms, t.segment)
        out[key] = out.get(key, 0) + (1 if t.kind == "enter" else -1)
    return sorted((at, seg, "enter" if d > 0 else "exit") for (at, seg), d in out.items() if d)


DURATIONS_MS = [m * MIN for m in (30, 45, 60, 90, 120, 180, 24 * 60)]  # every duration CONFIG names
DWELL_MS = 45 * MIN


def instants(events: list[Event], until: int) -> list[int]:
    """Every instant at which CONFIG's memberships can change, found without
    the fold: each event's time, and for each duration a rule names, the
    instant the event leaves a window (at its minute's end, or its own time,
    plus the duration) or a recency or deadline passes it (a millisecond later
    for a strict comparison). Between two of these nothing can change."""
    out = {e.ts_ms for e in events}
    for e in events:
        edge = -(-e.ts_ms // MIN) * MIN
        for d in DURATIONS_MS:
            out |= {edge + d, e.ts_ms + d, e.ts_ms + d + 1, edge + d + 1}
    return sorted(t for t in out if t <= until)


def offline_transitions(events: list[Event], until: int) -> list:
    """Memberships evaluated on offline features at every instant where they
    can change (and where a minimum dwell ends), in time order."""
    fs = feature_set_for(CONFIG, DEFAULT_SPECS)
    table = events_to_table(events)

    def rows(moments: list[int]) -> dict[int, dict]:
        frame = OfflineFeatures(fs, table).at(pd.DataFrame({"profile_id": "u", "at": moments}))
        return {at: row for at, row in zip(moments, frame.to_dict("records"), strict=True)}

    static = instants(events, until)
    known = rows(static)
    queue = list(static)
    heapq.heapify(queue)
    members = Memberships()
    expected = []
    seen: set[int] = set()
    while queue:
        at = heapq.heappop(queue)
        if at in seen:
            continue
        seen.add(at)
        row = known[at] if at in known else rows([at])[at]
        members, changes = evaluate(CONFIG, row, {}, None, members, at)
        expected.extend(changes)
        for t in changes:
            if t.kind == "enter" and t.at_ms + DWELL_MS <= until:
                heapq.heappush(queue, t.at_ms + DWELL_MS)  # a dwell's end can release an exit
        assert not {"stage_a", "stage_b"} <= members.names
    return expected


def check_fold(events: list[Event]) -> list:
    """The fold's transitions equal, instant for instant, the offline evaluation's."""
    fs = feature_set_for(CONFIG, DEFAULT_SPECS)
    until = events[-1].ts_ms + 2 * 24 * 60 * MIN
    online = fold(CONFIG, events, until, fs)
    assert net(online) == net(offline_transitions(events, until))
    return online


@given(timelines())
def test_fold_equals_offline_evaluation(events: list[Event]) -> None:
    online = check_fold(events)
    # dwell: no one leaves 'busy' sooner than 45 minutes after entering
    entered = None
    for t in online:
        if t.segment == "busy":
            if t.kind == "enter":
                entered = t.at_ms
            else:
                assert entered is not None and t.at_ms - entered >= timedelta(minutes=45) // timedelta(milliseconds=1)


def test_the_parity_check_catches_a_wake_a_minute_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold that wakes one minute after each due time must fail the check
    (a five-minute grid would have let it pass whenever no grid point fell in
    that minute)."""
    late = timeline.next_due
    monkeypatch.setattr(timeline, "next_due", lambda *a: None if (d := late(*a)) is None else d + MIN)
    cart = Event("m0", "add_to_cart", "u", None, BASE + 7_000, BASE + 7_000, properties={"category": "hats"})
    with pytest.raises(AssertionError):
        check_fold([cart])
    monkeypatch.setattr(timeline, "next_due", late)
    check_fold([cart])
