"""A config's transitions over stored history, decided on the offline path.

What the engine would decide replaying the events on the event clock with
frozen models, computed over columns instead of one event at a time:

1. Which events apply: duplicates and events later than the allowed
   lateness are dropped as the engine drops them (:mod:`features.offline`).
2. Rows: each applied event's arrival (several of one user at one instant,
   one after another, are evaluated once, after the last, as the engine
   does), and every instant time alone can flip a rule: a window's exit
   (each event's own), a recency edge after each event, a sequence's
   deadline. Features at each row come from the offline computation; scores
   from the models as given, vectorized at arrivals and kept until the
   user's next event, as the engine keeps them between its timers.
3. Rules as columns, then the stateful pass (:mod:`segments.sweep`).

Some users' histories make the engine's answer depend on the order of
arrival in ways a point-in-time row cannot see: ids joined by identity,
events that arrive after the clock moved past them, two events of one user
at one instant with another user's between. Those users, and every user
when the config reads a value time changes between wake-ups
(:func:`segments.sweep.unsupported`), are replayed through the engine
itself, which sees the same clock as the full replay would.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray as Array

from features.events import Event
from features.identity import IdentityGraph, Link
from features.offline import USER_SHIFT, OfflineFeatures
from features.online import CART, FeatureSet
from features.specs import (
    CartValue,
    Predicate,
    Ratio,
    Recency,
    Spec,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
)
from features.stitching import table_links
from features.table import events_to_table, table_to_events
from segments.columns import Columns
from segments.config import SegmentConfig
from segments.membership import wake_plan
from segments.sweep import sweep, unsupported
from serving.engine import Engine
from serving.outbox import Change
from serving.regime import build_features
from serving.scorers import Scorers

Decided = tuple[str, str, str, int]  # (user, segment, kind, at_ms)
_SHIFT = USER_SHIFT  # a (user, instant) key, as offline features key events


@dataclass
class Backtest:
    """A config's transitions over history: in the engine's order per user."""

    transitions: list[Decided]
    rows: int = 0  # evaluated on the offline path
    replayed: int = 0  # events replayed through the engine
    why_replayed: dict[str, int] = field(default_factory=dict)  # reason -> users


def backtest(
    config: SegmentConfig,
    scorers: Scorers,
    events: Sequence[Event] | pa.Table,
    end_ms: int,
    links: Sequence[Link] = (),
) -> Backtest:
    """Transitions of ``config`` over ``events`` (in arrival order, or their
    table) up to ``end_ms``, with ``links`` made before them in force; the
    online model scores as given and learns nothing."""
    return Backtester(scorers, events, end_ms, links).run(config)


class Backtester:
    """Backtests of configs over one history with one frozen copy of the
    models. What configs with the same features share (the features at
    every arrival, the models' scores) is computed once."""

    def __init__(
        self, scorers: Scorers, events: Sequence[Event] | pa.Table, end_ms: int, links: Sequence[Link] = ()
    ) -> None:
        self.scorers = copy.deepcopy(scorers)
        self.scorers.online.frozen = True  # scores as given, learns nothing
        self.table = events if isinstance(events, pa.Table) else events_to_table(events)
        times = self.table.column("ts").cast(pa.int64())
        if len(times) and end_ms < (last := pc.max(times).as_py()):
            raise ValueError(f"a backtest ends at or after its last event ({last}), not at {end_ms}")
        self.end_ms, self.links = end_ms, links
        self._shared: dict[tuple[str, ...], _Shared] = {}

    def run(self, config: SegmentConfig) -> Backtest:
        shared = self._of(build_features(config, self.scorers))
        arrivals = shared.arrivals
        why = unsupported(config)
        replay = np.ones(len(arrivals.ids), dtype=bool) if why is not None else arrivals.replay
        out = Backtest([], why_replayed={why: len(set(arrivals.ids.tolist()))} if why else arrivals.why)
        if not replay.all():
            out.transitions, out.rows = _offline(config, shared, ~replay, self.end_ms)
        if replay.any():
            out.transitions += _replayed(config, self.scorers, self.table, arrivals, replay, self.end_ms, self.links)
            out.replayed = int(replay.sum())
        return out

    def _of(self, features: FeatureSet) -> _Shared:
        shared = self._shared.get(features.names)
        if shared is None:
            offline = OfflineFeatures(features, self.table)
            arrivals = _Arrivals.of(self.table, offline, self.links)
            at_event = ~arrivals.replay & arrivals.applied & arrivals.evaluated
            cutoffs = pd.DataFrame({"profile_id": arrivals.ids[at_event], "at": arrivals.ts[at_event]})
            vectors = offline.at(cutoffs)
            scores, cluster = self.scorers.score_columns(vectors)
            users, names = pd.factorize(cutoffs["profile_id"])
            shared = _Shared(features, offline, arrivals, cutoffs, users, pd.Index(names), vectors, scores, cluster)
            self._shared[features.names] = shared
        return shared


@dataclass
class _Shared:
    """What backtests of configs with the same features share: the features
    at each arrival evaluated on the offline path, and the scores there."""

    features: FeatureSet
    offline: OfflineFeatures
    arrivals: _Arrivals
    cutoffs: pd.DataFrame  # profile_id, at: the arrivals evaluated on the offline path
    users: Array[np.int64]  # each cutoff's user, a code into names
    names: pd.Index
    vectors: pd.DataFrame
    scores: dict[str, Array[np.float64]]
    cluster: Array | None


@dataclass
class _Arrivals:
    """The events that reach the engine (duplicates dropped), in arrival order."""

    rows: Array[np.int64]  # table rows
    ids: Array  # profile ids
    ts: Array[np.int64]
    applied: Array[np.bool_]  # not later than the allowed lateness
    evaluated: Array[np.bool_]  # not followed at once by the same profile at the same instant
    replay: Array[np.bool_]  # the user's history needs the engine
    why: dict[str, int]

    @classmethod
    def of(cls, table: pa.Table, offline: OfflineFeatures, links: Sequence[Link]) -> _Arrivals:
        duplicate = offline.duplicate
        rows = np.flatnonzero(~duplicate)
        ids = table.column("profile_id").to_numpy(zero_copy_only=False)[rows]
        ts = table.column("ts").cast(pa.int64()).to_numpy()[rows]
        applied = offline.applied[rows]
        same_next = np.zeros(len(rows), dtype=bool)
        same_next[:-1] = (ids[:-1] == ids[1:]) & (ts[:-1] == ts[1:])
        before = np.maximum.accumulate(np.concatenate(([-(2**62)], ts[:-1])))  # the clock when each arrives
        reasons = {
            "identity": set(_linked(table, duplicate, links)),
            "arrived after the clock passed it": set(ids[ts < before].tolist()),
            "two events at one instant with another user's between": set(_split_instants(ids, ts).tolist()),
        }
        replay = np.zeros(len(rows), dtype=bool)
        taken: set[str] = set()
        why = {}
        for reason, users in reasons.items():
            users -= taken
            if users:
                why[reason] = len(users)
                taken |= users
        if taken:
            replay = pd.Series(ids).isin(taken).to_numpy()
        return cls(rows, ids, ts, applied, ~same_next, replay, why)


def _linked(table: pa.Table, duplicate: Array[np.bool_], links: Sequence[Link]) -> list[str]:
    found = [(s, t) for _, s, t, _ in table_links(table, duplicate)] + [(s, t) for s, t, _ in links]
    return [pid for pair in found for pid in pair]


def _split_instants(ids: Array, ts: Array[np.int64]) -> Array:
    """Users with two events at one instant that are not next to each other in arrival."""
    frame = pd.DataFrame({"id": ids, "ts": ts, "i": np.arange(len(ids))})
    twice = frame[frame.duplicated(["id", "ts"], keep=False)]
    if twice.empty:
        return np.array([], dtype=object)
    spans = twice.groupby(["id", "ts"])["i"].agg(["min", "max", "size"])
    split = spans[spans["max"] - spans["min"] + 1 != spans["size"]]
    return np.unique(split.index.get_level_values("id").to_numpy())


def _offline(config: SegmentConfig, shared: _Shared, keep: Array[np.bool_], end_ms: int) -> tuple[list[Decided], int]:
    """The users not replayed, decided over rows."""
    offline, cutoffs, vectors = shared.offline, shared.cutoffs, shared.vectors
    if not keep.any() or len(cutoffs) == 0:
        return [], 0
    arrived = cutoffs["at"].to_numpy(dtype=np.int64)
    wake_users, wake_at = _wakes(config, offline, shared.names, shared.users, arrived, end_ms)
    rules = _rule_features(config, shared.features)
    woken = offline.at(pd.DataFrame({"profile_id": shared.names.take(wake_users), "at": wake_at}), rules)
    # every row: arrivals first, then the wakes; ordered by user, time, arrival
    users = np.concatenate([shared.users, wake_users])
    at = np.concatenate([arrived, wake_at])
    order = np.lexsort((np.arange(len(at)), at, users))
    users, at = users[order], at[order]
    event_row = order < len(cutoffs)
    # the arrival whose scores hold: the user's last (a user's first row is an arrival)
    source = np.maximum.accumulate(np.where(event_row, np.arange(len(order)), 0))
    source = order[source]
    both = {name: (vectors[name].to_numpy(), woken[name].to_numpy()) for name in rules.names}
    rows = Columns(
        len(at),
        {name: np.concatenate(parts)[order] for name, parts in both.items()},
        {k: v[source] for k, v in shared.scores.items()},
        None if shared.cluster is None else shared.cluster[source],
    )
    flips = sweep(config, users, at, rows, end_ms)
    names = np.asarray(shared.names, dtype=object)[flips.users].tolist()
    segments = np.array(list(config.segments), dtype=object)[flips.segments].tolist()
    kinds = np.where(flips.enter, "enter", "exit").tolist()
    return list(zip(names, segments, kinds, flips.at.tolist(), strict=True)), len(at)


def _rule_features(config: SegmentConfig, features: FeatureSet) -> FeatureSet:
    """The features the rules read, as a feature set with the service's lateness."""
    specs: dict[Spec, None] = {}
    for seg in config.segments.values():
        for rule in (seg.rule, seg.exit):
            if rule is not None:
                specs.update(dict.fromkeys(rule.specs))
    names = set(features.names)
    missing = [s.name for s in specs if s.name not in names]
    if missing:
        raise ValueError(f"the feature set lacks what the rules read: {missing}")
    return FeatureSet(list(specs), lateness=timedelta(milliseconds=features.lateness_ms))


def _wakes(
    config: SegmentConfig,
    offline: OfflineFeatures,
    names: pd.Index,
    arrived_users: Array[np.int64],
    arrived_at: Array[np.int64],
    end_ms: int,
) -> tuple[Array[np.int64], Array[np.int64]]:
    """Every instant the engine's timers wake a user of ``names`` at, with
    no event of theirs then (:func:`segments.membership.next_due`, worked out
    over the whole history): each window exit, each count's fall to the
    level its rule compares with, each recency edge after a stream's last
    event so far, each distinct value's exit unless it recurs first. Dwell
    ends are the sweep's. Users (codes into ``names``) and instants."""
    _, windows, levels, recencies = wake_plan(config)
    found: list[tuple[Array[np.int64], Array[np.int64]]] = []
    for spec in {inner: None for outer in windows for inner in _windows(outer)}:
        if isinstance(spec, WindowDistinct):
            codes, ts, nxt = offline.recurrences(spec)
            due = ts + spec.within_ms
            found.append((codes[nxt >= due], due[nxt >= due]))
        else:
            codes, ts = offline.times(*_stream(spec))
            found.append((codes, _exit(spec, ts)))
    for spec, level in levels:
        codes, ts = offline.times(*_stream(spec))
        found.append(_falls(codes, ts, _exit(spec, ts), level))
    for spec, offsets in recencies:
        codes, ts = offline.times(*_stream(spec))
        nxt = np.full(len(ts), np.iinfo(np.int64).max, dtype=np.int64)
        same = codes[1:] == codes[:-1]
        nxt[:-1][same] = ts[1:][same]
        for offset in offsets:
            due = ts + offset
            found.append((codes[due < nxt], due[due < nxt]))  # the last event's edge, as the engine keeps it
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ours = names.get_indexer(offline.users)  # the offline path's user codes as ours (-1: replayed)
    users = ours[np.concatenate([codes for codes, _ in found])]
    at = np.concatenate([at for _, at in found])
    kept = (users >= 0) & (at <= end_ms)
    keys = np.unique(users[kept] * _SHIFT + at[kept])  # one wake per user and instant
    keys = keys[~np.isin(keys, arrived_users * _SHIFT + arrived_at)]  # an event then: evaluated with it
    return keys // _SHIFT, keys % _SHIFT


def _falls(ids: Array, ts: Array[np.int64], exits: Array[np.int64], level: int) -> tuple[Array, Array[np.int64]]:
    """When each user's count in the window falls to ``level``, after each of
    their events, unless their next event comes first: the exit of the
    event ``level`` places before (the counts of later exits stay)."""
    n = len(ts)
    if level < 0 or not n:  # a count never falls below zero
        return ids[:0], ts[:0]
    start = np.ones(n, dtype=bool)
    start[1:] = ids[1:] != ids[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    back = np.arange(n) - level
    ok = back >= first
    due = np.where(ok, exits[np.maximum(back, 0)], 0)
    nxt = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    nxt[:-1][~start[1:]] = ts[1:][~start[1:]]
    keep = ok & (due > ts) & (due < nxt)
    return ids[keep], due[keep]


def _windows(spec: Spec) -> list[Spec]:
    if isinstance(spec, Ratio):
        return _windows(spec.numerator) + _windows(spec.denominator)
    return [spec] if isinstance(spec, WindowCount | WindowSum | WindowMean | WindowDistinct | CartValue) else []


def _stream(spec: Spec) -> tuple[str, Predicate | None]:
    if isinstance(spec, CartValue):
        return CART, None
    assert isinstance(spec, WindowCount | WindowSum | WindowMean | WindowDistinct | Recency)
    return spec.event, spec.where


def _exit(spec: Spec, ts: Array[np.int64]) -> Array[np.int64]:
    """When each event leaves the spec's window (its bucket's end plus the window)."""
    assert isinstance(spec, WindowCount | WindowSum | WindowMean | CartValue)
    r = spec.resolution_ms
    w = spec.within_ms if not isinstance(spec, CartValue) else int(spec.within.total_seconds() * 1000)
    return -(-ts // r) * r + w


def _replayed(
    config: SegmentConfig,
    scorers: Scorers,
    table: pa.Table,
    arrivals: _Arrivals,
    replay: Array[np.bool_],
    end_ms: int,
    links: Sequence[Link],
) -> list[Decided]:
    """The users replayed through the engine, on the clock the whole replay
    would have: before each of their events, the timers fire that the
    events of others arriving before it would have fired."""
    engine = Engine(config, build_features(config, scorers), scorers, clock="event")
    engine.identity = IdentityGraph.of(links)
    picked = np.flatnonzero(replay)
    events = list(_events(table, arrivals.rows[picked]))
    clock = np.maximum.accumulate(arrivals.ts)
    before = np.concatenate(([-(2**62)], clock[:-1]))[picked]  # the clock when each arrives
    # its request ends with it when the next arrival is somebody else's
    ends = [bool(k + 1 >= len(replay) or not replay[k + 1]) for k in picked.tolist()]
    out: list[Decided] = []
    run: list[Event] = []
    run_ends: list[bool | None] = []
    pending = engine.watermark  # the engine's clock once the run so far is applied
    for e, now, end in zip(events, before.tolist(), ends, strict=True):
        if now > pending:  # others' events moved the clock: the timers due before it fired then
            out += _decided(engine.replay(run, ends=run_ends))
            run, run_ends = [], []
            out += _decided(engine.pass_clock(now))
            pending = now
        run.append(e)
        run_ends.append(end)
        pending = max(pending, e.ts_ms)
    out += _decided(engine.replay(run, ends=run_ends))
    out += _decided(engine.advance(end_ms))
    return out


def _events(table: pa.Table, rows: Array[np.int64]) -> list[Event]:
    return list(table_to_events(table.take(pa.array(rows))))


def _decided(changes: Sequence[Change]) -> list[Decided]:
    return [(c.profile_id, c.transition.segment, c.transition.kind, c.transition.at_ms) for c in changes]
