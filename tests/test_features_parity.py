"""Online and offline features agree: on random streams and on real events.

The online vector is read at a time t once every event stamped at or before
t has arrived (and none applied is newer than t); the offline computation at
cutoff t over the whole table must give the same vector, for every feature of
the default set plus filtered, derived and custom-resolution specs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.buckets import Buckets
from features.defaults import DEFAULT_SPECS
from features.events import Event
from features.offline import OfflineFeatures, accepted
from features.online import FeatureSet
from features.specs import (
    ANY,
    Eq,
    In,
    Ratio,
    Recency,
    Relative,
    Spec,
    Trait,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
)
from features.table import events_to_table, table_to_events

MIN = 60_000
DAY = timedelta(days=1)
BASE = 1_767_225_600_000  # 2026-01-01T00:00Z
EXTRA: tuple[Spec, ...] = (
    WindowCount("product_view", timedelta(hours=24), where=Eq("category", "shoes")),
    WindowCount("add_to_cart", timedelta(minutes=90), resolution=timedelta(minutes=30)),
    WindowCount("add_to_cart", timedelta(minutes=45), resolution=timedelta(milliseconds=1)),
    WindowSum("price", "add_to_cart", timedelta(hours=2), where=In("device", ("mobile", "tablet"))),
    WindowMean("price", ANY, timedelta(days=3)),
    WindowDistinct("category", ANY, timedelta(hours=6), where=Eq("device", "desktop")),
    WindowCount("Signed Up", timedelta(days=10)),
    WindowCount("Coupon Applied", timedelta(days=7)),  # custom events as rules derive them (quoted names)
    WindowSum("price", "Coupon Applied", timedelta(hours=12)),
    Recency("Coupon Applied"),
    WindowDistinct("category", "Signed Up", timedelta(days=2)),
    Trait.of("plan"),  # traits of identify and group calls, as rules derive them
    Trait.of("age"),
    Recency("add_to_cart", where=Eq("category", "hats")),
    Ratio(WindowCount("add_to_cart", timedelta(hours=24)), WindowCount("product_view", timedelta(hours=24))),
    WindowMean(Relative.of("price", "category", {"shoes": 20.0, "hats": 5.0}, 10.0), "product_view", 10 * DAY),
    WindowSum(Relative.of("price", "category", {"bags": 150.0}, 1.0), ANY, timedelta(days=3)),
)
SPECS = DEFAULT_SPECS + EXTRA
TYPES = [
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
    "email_send",
    "email_open",
    "email_click",
    "search",
    "wishlist_add",
    "Signed Up",
    "Coupon Applied",
    "identify",
    "group",
]


def same(a: object, b: object) -> bool:
    if isinstance(a, str) or a is None or isinstance(b, str) or b is None:
        return a == b
    fa, fb = float(a), float(b)  # type: ignore[arg-type]
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    if isinstance(a, int | np.integer) and isinstance(b, int | np.integer):
        return int(a) == int(b)
    return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-9)


def identical(a: object, b: object) -> bool:
    """Equal bit for bit (NaN equals NaN; a whole count equals its float)."""
    if isinstance(a, str) or a is None or isinstance(b, str) or b is None:
        return a == b
    fa, fb = float(a), float(b)  # type: ignore[arg-type]
    return (math.isnan(fa) and math.isnan(fb)) or fa == fb


def assert_same(fs: FeatureSet, online: dict, offline: pd.Series, where: str, exact: bool = False) -> None:
    for name in fs.names:
        assert (identical if exact else same)(online[name], offline[name]), (
            f"{where}: {name}: online {online[name]!r} != offline {offline[name]!r}"
        )


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 40))
    users = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    # times on a coarse grid so events tie and window edges coincide with reads
    steps = draw(st.lists(st.sampled_from([0, 0, 1, 5, 30, 60, 61, 24 * 60, 3 * 24 * 60]), min_size=n, max_size=n))
    ts = (BASE + np.cumsum(steps) * MIN).tolist()
    # event times stamped up to 90 minutes back (past the lateness, some), and a
    # network delay of up to 90 minutes: arrival order differs from time order
    jitter = draw(st.lists(st.integers(-90, 0), min_size=n, max_size=n))
    delay = draw(st.lists(st.integers(0, 90), min_size=n, max_size=n))
    arrival = sorted(range(n), key=lambda i: (ts[i] + (jitter[i] + delay[i]) * MIN, i))
    swaps = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=5))
    for i, j in swaps:
        arrival[i], arrival[j] = arrival[j], arrival[i]
    events: list[Event] = []
    for pos, i in enumerate(arrival):
        etype = draw(st.sampled_from(TYPES))
        props: dict[str, object] = {}
        if draw(st.booleans()):
            props["category"] = draw(st.sampled_from(["shoes", "hats", "bags"]))
        if draw(st.booleans()):
            props["price"] = draw(st.sampled_from([0.5, 9.99, 20.0, 149.0]))
        if draw(st.booleans()):
            props["quantity"] = draw(st.sampled_from([1, 2]))
        if draw(st.booleans()):
            props["session_id"] = draw(st.sampled_from(["s1", "s2", "s3"]))
        if draw(st.booleans()):
            props["time_on_page_s"] = draw(st.sampled_from([3.5, 60.0]))
        traits: dict[str, object] = {}
        if etype in ("identify", "group"):
            traits = {k: draw(st.sampled_from(v)) for k, v in (("plan", ["gold", "free", True]), ("age", [30, 41.5]))
                      if draw(st.booleans())}  # fmt: skip
        event = Event(
            message_id=f"m{i}",
            type=etype,
            kind=etype if etype in ("identify", "group") else "track",
            traits=traits,
            user_id=users[i],
            anonymous_id=None,
            ts_ms=ts[i] + jitter[i] * MIN,
            received_ms=BASE + pos * 1000,
            properties=props,
            device=draw(st.sampled_from([None, "mobile", "desktop", "tablet"])),
            country=draw(st.sampled_from([None, "DE", "US"])),
            timezone=draw(st.sampled_from([None, "Europe/Berlin", "America/New_York", "Asia/Kolkata"])),
        )
        events.append(event)
        if draw(st.integers(0, 9)) == 0:  # a retry of the same message: dropped
            events.append(replace(event, received_ms=event.received_ms + 500, properties={"price": 1e6}))
    return events


@given(streams(), st.lists(st.integers(0, 3 * 24 * 60), min_size=1, max_size=3))
def test_online_equals_offline_on_random_streams(events: list[Event], offsets: list[int]) -> None:
    check_parity(events, offsets)


@given(streams(), st.lists(st.integers(0, 3 * 24 * 60), min_size=1, max_size=3))
def test_online_equals_offline_bit_for_bit_when_events_arrive_in_time_order(
    events: list[Event], offsets: list[int]
) -> None:
    """Sums and means too: both add each user's values one by one in the same
    order and subtract the same running sums (a backtest depends on it: a
    score's split or a rule's threshold may sit exactly between two roundings)."""
    in_order = sorted(events, key=lambda e: e.ts_ms)
    check_parity([replace(e, received_ms=BASE + pos * 1000) for pos, e in enumerate(in_order)], offsets, exact=True)


def test_the_streams_arrive_out_of_time_order() -> None:
    """The parity test above sees events arrive out of their time order (else it
    could not catch an online update that assumes order)."""
    out_of_order = []

    @given(streams())
    @settings(max_examples=100)
    def look(events: list[Event]) -> None:
        out_of_order.append(any(b.ts_ms < a.ts_ms for a, b in itertools.pairwise(events)))

    look()
    assert sum(out_of_order) >= 30, sum(out_of_order)


def test_the_parity_check_catches_an_update_that_assumes_time_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Broken on purpose: an out-of-order event lands in the newest bucket."""
    add = Buckets.add

    def in_order_only(self: Buckets, key: int, values: Sequence[float]) -> None:
        add(self, max(key, self.keys[-1]) if self.keys else key, values)

    def ev(mid: str, at_min: int, pos: int) -> Event:
        return Event(mid, "add_to_cart", "a", None, BASE + at_min * MIN, BASE + pos * 1000, properties={"price": 5.0})

    stream = [ev("m1", 300, 0), ev("m2", 250, 1), ev("m3", 301, 2)]  # m2 arrives 50 minutes late, within the lateness
    check_parity(stream, [0, 30, 60])
    monkeypatch.setattr(Buckets, "add", in_order_only)
    with pytest.raises(AssertionError):
        check_parity(stream, [0, 30, 60])


def check_parity(events: list[Event], offsets: list[int], exact: bool = False) -> None:
    """Online reads after each arrival equal the offline computation at the same moments
    (``exact``: bit for bit, else to rounding)."""
    fs = FeatureSet(SPECS)
    table = events_to_table(events)
    offline = OfflineFeatures(fs, table)
    dup, late = accepted(table.to_pandas(), fs.lateness_ms)
    applied = ~dup & ~late
    ts = np.array([e.ts_ms for e in events])
    # the earliest applied event still to arrive after each prefix
    rest_min = np.minimum.accumulate(np.where(applied, ts, np.iinfo(np.int64).max)[::-1])[::-1]
    profiles = {u: fs.new_profile() for u in ("a", "b", "c")}
    seen: set[str] = set()
    newest = -1
    reads = []
    for k, e in enumerate(events):
        if e.message_id not in seen:
            seen.add(e.message_id)
            fs.update(profiles[e.profile_id], e)
            newest = max(newest, e.ts_ms) if applied[k] else newest
        upper = rest_min[k + 1] if k + 1 < len(events) else np.iinfo(np.int64).max
        for off in offsets:
            t = newest + off * MIN
            if newest >= 0 and t < upper:
                for user, p in profiles.items():
                    reads.append((user, t, fs.read(p, t)))
    if not reads:
        return
    cut = pd.DataFrame([(u, t) for u, t, _ in reads], columns=["profile_id", "at"])
    got = offline.at(cut)
    for i, (user, t, online) in enumerate(reads):
        assert_same(fs, online, got.iloc[i], f"user {user} at {t}", exact)


def test_windows_exit_with_no_new_event() -> None:
    fs = FeatureSet(
        [
            WindowCount("add_to_cart", timedelta(hours=1)),
            WindowDistinct("category", "product_view", timedelta(hours=24)),
        ]
    )
    p = fs.new_profile()
    t0 = BASE + 10 * MIN + 15_000  # 00:10:15
    fs.update(p, Event("m1", "add_to_cart", "u", None, t0, t0))
    fs.update(p, Event("m2", "product_view", "u", None, t0, t0, properties={"category": "shoes"}))
    # the 1-minute bucket (00:10, 00:11] leaves the hour window at 01:11:00, not before
    assert fs.read(p, BASE + 71 * MIN - 1)["add_to_cart_count_1h"] == 1
    assert fs.read(p, BASE + 71 * MIN)["add_to_cart_count_1h"] == 0
    # distinct values keep exact times: out at t0 + 24h
    assert fs.read(p, t0 + 24 * 60 * MIN - 1)["product_view_distinct_category_24h"] == 1
    assert fs.read(p, t0 + 24 * 60 * MIN)["product_view_distinct_category_24h"] == 0


def test_late_events_are_counted_not_applied() -> None:
    fs = FeatureSet([WindowCount(ANY, timedelta(days=1))])
    p = fs.new_profile()
    assert fs.update(p, Event("m1", "x", "u", None, BASE + 120 * MIN, 0))
    assert fs.update(p, Event("m2", "x", "u", None, BASE + 60 * MIN, 0))  # exactly the lateness: applied
    assert not fs.update(p, Event("m3", "x", "u", None, BASE + 60 * MIN - 1, 0))
    assert p.late == 1 and fs.read(p, BASE + 120 * MIN)["any_count_24h"] == 2


def test_profile_size_is_bounded() -> None:
    fs = FeatureSet(DEFAULT_SPECS)
    p = fs.new_profile()
    sizes = []
    for i in range(40 * 24 * 12):  # an event every 5 minutes for 40 days
        fs.update(
            p,
            Event(
                f"m{i}",
                "product_view",
                "u",
                None,
                BASE + i * 5 * MIN,
                0,
                properties={"category": f"c{i % 97}", "product_id": f"p{i}"},
            ),
        )
        if i % 2000 == 0:
            sizes.append(sum(len(b) for b in p.buckets) + sum(len(d) for d in p.distinct))
    assert max(sizes[len(sizes) // 2 :]) <= max(sizes[: len(sizes) // 2 + 1]) * 1.05


def _valid_cutoffs(events: Sequence[Event], applied: np.ndarray, rng: np.random.Generator, n: int) -> set[int]:
    """Positions after which a read of that event's user at its time is valid."""
    users = np.array([e.profile_id for e in events], dtype=object)
    ts = np.array([e.ts_ms for e in events], dtype=np.int64)
    frame = pd.DataFrame({"u": users, "ts": np.where(applied, ts, np.iinfo(np.int64).max)})
    rest = frame[::-1].groupby("u")["ts"].cummin()[::-1].groupby(frame["u"]).shift(-1)
    newest = pd.Series(np.where(applied, ts, -1)).groupby(users).cummax()
    ok = applied & (newest.to_numpy() == ts) & ~(rest.to_numpy() <= ts)
    candidates = np.flatnonzero(ok)
    return set(rng.choice(candidates, size=min(n, len(candidates)), replace=False).tolist())


@pytest.mark.realdata
def test_online_equals_offline_on_taobao(taobao_dir: Path) -> None:
    from training.importers import import_taobao

    table, _ = import_taobao(sorted(taobao_dir.glob("*.csv")))
    fs = FeatureSet(SPECS)
    events = list(table_to_events(table))
    dup, late = accepted(table.to_pandas(), fs.lateness_ms)
    picks = _valid_cutoffs(events, ~dup & ~late, np.random.default_rng(0), 1000)
    assert len(picks) == 1000
    profiles: dict[str, object] = {}
    reads = []
    seen: set[str] = set()
    for k, e in enumerate(events):
        if e.message_id in seen:
            continue
        seen.add(e.message_id)
        p = profiles.get(e.profile_id) or profiles.setdefault(e.profile_id, fs.new_profile())
        fs.update(p, e)  # type: ignore[arg-type]
        if k in picks:
            reads.append((e.profile_id, e.ts_ms, fs.read(p, e.ts_ms)))  # type: ignore[arg-type]
    got = OfflineFeatures(fs, table).at(pd.DataFrame([(u, t) for u, t, _ in reads], columns=["profile_id", "at"]))
    for i, (user, t, online) in enumerate(reads):
        assert_same(fs, online, got.iloc[i], f"user {user} at {t}")


@given(streams())
def test_codec_roundtrip_and_layout_change(events: list[Event]) -> None:
    from features.codec import decode, encode

    fs = FeatureSet(SPECS)
    smaller = FeatureSet(DEFAULT_SPECS[:20])
    profiles = {u: fs.new_profile() for u in ("a", "b", "c")}
    for e in events:
        fs.update(profiles[e.profile_id], e)
    t = max(e.ts_ms for e in events)
    for p in profiles.values():
        data = encode(fs, p)
        assert decode(data, fs) == p
        # a feature set with fewer specs keeps what it shares
        full, part = fs.read(p, t), smaller.read(decode(data, smaller), t)
        for name in smaller.names:
            assert same(part[name], full[name]), name


def test_codec_refuses_unknown_version() -> None:
    from features.codec import decode

    with pytest.raises(ValueError, match="codec version 9 is not supported"):
        decode(b"\x09abc", FeatureSet(DEFAULT_SPECS))
