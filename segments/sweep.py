"""Memberships over many rows at once: the stateful pass of a backtest.

Rows are one per user and moment, sorted by user, then time, then arrival:
each holds what the rules read then (:class:`segments.columns.Columns`). The
pass decides, as :func:`segments.membership.evaluate` does one moment at a
time, who is in each segment after each row and which transitions that
makes: segments in dependency order (``in_segment`` sees this moment's
memberships), rules as columns, hysteresis and ``min_dwell`` as a small state
machine per user, groups keeping their highest-priority member.

Rule values change only at rows (the caller makes a row at every instant
time alone can flip one: :func:`time_varying` says whether a config allows
it), so a dwell that ends between two rows is decided with the values of the
row before, at the instant it ends, as the engine's timer decides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray as Array

from features.specs import (
    CartValue,
    LastValue,
    Ratio,
    Recency,
    Spec,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
)
from segments.columns import Columns, evaluate
from segments.config import SegmentConfig

# specs whose value time alone changes only where a window or a recency edge
# says (what next_due wakes for); LastValue (traits included) changes with events only
_STEPWISE = (WindowCount, WindowSum, WindowMean, WindowDistinct, CartValue, Recency, LastValue)


@dataclass(frozen=True)
class Flips:
    """Transitions as columns, in the engine's order (by user, time,
    evaluation, then the config's segment order): each one's user (the rows'
    code), instant, segment (its place in the config) and whether it enters."""

    users: Array[np.int64]
    at: Array[np.int64]
    segments: Array[np.int64]
    enter: Array[np.bool_]


def unsupported(config: SegmentConfig) -> str | None:
    """Why the pass cannot decide this config exactly (None: it can): a rule
    reads a value time changes between wake-ups (hour of day, a ratio of
    other kinds), compares a recency in a way whose flips are not worked
    out, or a group holds, or a rule refers to, a segment with an exit rule
    or a dwell (its membership changes at any evaluation)."""
    for name, seg in config.segments.items():
        for rule in (seg.rule, seg.exit):
            if rule is None:
                continue
            if rule.loose:
                return f"{name}: a recency compared in a way whose flips are not worked out"
            for spec in rule.specs:
                if not _stepwise(spec):
                    return f"{name}: {spec.name} changes with time between wake-ups"
    stateful = {name for name, seg in config.segments.items() if seg.exit is not None or seg.min_dwell_ms}
    for group in config.groups:
        for name in group.segments:
            if name in stateful:
                return f"group {group.name}: {name} has an exit rule or a dwell"
    for name, seg in config.segments.items():
        for rule in (seg.rule, seg.exit):
            if rule is not None and rule.segments & stateful:
                return f"{name}: refers to a segment with an exit rule or a dwell"
    return None


def _stepwise(spec: Spec) -> bool:
    if isinstance(spec, Ratio):
        return _stepwise(spec.numerator) and _stepwise(spec.denominator)
    return isinstance(spec, _STEPWISE)


def sweep(config: SegmentConfig, users: Array[np.int64], at: Array[np.int64], rows: Columns, end_ms: int) -> Flips:
    """Every transition over the rows; dwells end up to ``end_ms``."""
    first = np.ones(len(users), dtype=bool)
    first[1:] = users[1:] != users[:-1]  # a user's first row
    holding: dict[str, Array[np.bool_]] = {}  # before groups: what in_segment reads
    final: dict[str, Array[np.bool_]] = {}
    stateful: list[tuple[int, Array[np.bool_], Array[np.bool_], int]] = []
    view = Columns(rows.n, rows.features, rows.scores, rows.cluster, holding, config.thresholds)
    rank = {name: i for i, name in enumerate(config.segments)}
    for name, seg in config.segments.items():
        assert seg.rule.tree is not None
        rule = evaluate(seg.rule.tree, view)
        if seg.exit is None and not seg.min_dwell_ms:
            holding[name] = final[name] = rule
            continue
        stay = ~rule  # what ends a membership once the dwell is over
        if seg.exit is not None:
            assert seg.exit.tree is not None
            stay = evaluate(seg.exit.tree, view)
        stateful.append((rank[name], rule, stay, seg.min_dwell_ms))
    for group in config.groups:  # (of segments without state: see unsupported)
        taken = np.zeros(rows.n, dtype=bool)
        for name in group.segments:
            final[name] = holding[name] & ~taken
            taken |= holding[name]
    found = [_changes(rank[name], users, at, first, member) for name, member in final.items()]
    if stateful:
        found.append(_Hysteresis(stateful, users, at, end_ms).run())
    u, t, o, k, e = (np.concatenate(part) for part in zip(*found, strict=True)) if found else _NONE
    by = np.lexsort((k, o, t, u))
    return Flips(u[by], t[by], k[by], e[by])


_Found = tuple[Array[np.int64], Array[np.int64], Array[np.float64], Array[np.int64], Array[np.bool_]]
_NONE: _Found = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool))


def _changes(
    k: int, users: Array[np.int64], at: Array[np.int64], first: Array[np.bool_], member: Array[np.bool_]
) -> _Found:
    """Where a segment without state is entered or left, row to row (each
    user starts outside): users, instants, evaluation order, segment, enter."""
    before = np.empty_like(member)
    before[0:1] = False
    before[1:] = member[:-1]
    before[first] = False
    rows = np.flatnonzero(member != before)
    return users[rows], at[rows], rows.astype(np.float64), np.full(len(rows), k, dtype=np.int64), member[rows]


class _Hysteresis:
    """The segments with an exit rule or a dwell, user by user, row by row:
    once in, a segment holds until its dwell has passed and its exit rule
    holds (no exit rule: until its rule fails). A dwell's end is a moment
    all of them are evaluated at, as the engine's timer wakes the profile
    then, with the values of the row before (they change only at rows).
    Only rows where one may be entered, or some is held, are visited."""

    def __init__(
        self,
        segments: list[tuple[int, Array[np.bool_], Array[np.bool_], int]],
        users: Array[np.int64],
        at: Array[np.int64],
        end_ms: int,
    ) -> None:
        self.ranks = [k for k, _, _, _ in segments]
        self.rules = [rule.tolist() for _, rule, _, _ in segments]
        self.stays = [stay.tolist() for _, _, stay, _ in segments]
        self.dwells = [d for _, _, _, d in segments]
        self.may_enter = np.logical_or.reduce([rule for _, rule, _, _ in segments]).tolist()
        self.may_leave = np.logical_or.reduce([stay for _, _, stay, _ in segments]).tolist()
        self.users, self.at, self.end_ms = users.tolist(), at.tolist(), end_ms
        self.inside = [False] * len(segments)
        self.since = [0] * len(segments)
        self.held = 0  # how many segments the user is in
        self.found: list[tuple[int, int, float, int, bool]] = []
        self.now = 0  # the user's last evaluation
        self.due: int | None = None  # the next dwell's end after it

    def run(self) -> _Found:
        users, at, may_enter, may_leave = self.users, self.at, self.may_enter, self.may_leave
        n, count = len(users), len(self.ranks)
        for i in range(n):
            t = at[i]
            if i == 0 or users[i] != users[i - 1]:
                self.inside = [False] * len(self.ranks)
                self.held, self.due = 0, None
            elif self.due is not None and self.due < t:
                self._dwells(i - 1, t, inclusive=False)
            if (self.held < count and may_enter[i]) or (self.held and may_leave[i]):  # else nothing can change
                self._evaluate(i, t, i)
            else:
                self.now = t
                if self.due is not None and self.due <= t:
                    self._next_due()
            if self.due is not None and (i + 1 == n or users[i + 1] != users[i]):
                self._dwells(i, self.end_ms, inclusive=True)
        found = self.found
        return (
            np.array([f[0] for f in found], dtype=np.int64),
            np.array([f[1] for f in found], dtype=np.int64),
            np.array([f[2] for f in found], dtype=np.float64),
            np.array([f[3] for f in found], dtype=np.int64),
            np.array([f[4] for f in found], dtype=bool),
        )

    def _dwells(self, row: int, limit: int, inclusive: bool) -> None:
        """Evaluate at each dwell's end before ``limit`` (or at it), with ``row``'s values."""
        while (due := self.due) is not None and (due < limit or (due == limit and inclusive)):
            self._evaluate(row, due, row + 0.5)

    def _evaluate(self, row: int, t: int, order: float) -> None:
        user, inside, since = self.users[row], self.inside, self.since
        for k in range(len(self.ranks)):
            if inside[k]:
                dwell = self.dwells[k]
                if not (dwell and t < since[k] + dwell) and self.stays[k][row]:
                    inside[k] = False
                    self.held -= 1
                    self.found.append((user, t, order, self.ranks[k], False))
            elif self.rules[k][row]:
                inside[k], since[k] = True, t
                self.held += 1
                self.found.append((user, t, order, self.ranks[k], True))
        self.now = t
        self._next_due()

    def _next_due(self) -> None:
        inside, since, now = self.inside, self.since, self.now
        ends = (since[k] + dwell for k, dwell in enumerate(self.dwells) if inside[k] and dwell)
        self.due = min((end for end in ends if end > now), default=None)
