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


@dataclass(frozen=True, slots=True)
class Flip:
    """One transition: the row's user, when, which segment, enter or exit, and
    its place among the user's evaluations (a row's index; between two rows for a dwell's end)."""

    user: int
    at_ms: int
    segment: str
    kind: str
    order: float


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


def sweep(config: SegmentConfig, users: Array[np.int64], at: Array[np.int64], rows: Columns, end_ms: int) -> list[Flip]:
    """Every transition over the rows, in the order the engine makes them
    (by user, time, evaluation, then the config's segment order); dwells end
    up to ``end_ms``."""
    first = np.ones(len(users), dtype=bool)
    first[1:] = users[1:] != users[:-1]  # a user's first row
    holding: dict[str, Array[np.bool_]] = {}  # before groups: what in_segment reads
    final: dict[str, Array[np.bool_]] = {}
    stateful: list[tuple[str, list[bool], list[bool], int]] = []
    view = Columns(rows.n, rows.features, rows.scores, rows.cluster, holding, config.thresholds)
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
        stateful.append((name, rule.tolist(), stay.tolist(), seg.min_dwell_ms))
    for group in config.groups:  # (of segments without state: see unsupported)
        taken = np.zeros(rows.n, dtype=bool)
        for name in group.segments:
            final[name] = holding[name] & ~taken
            taken |= holding[name]
    flips: list[Flip] = []
    for name, member in final.items():
        flips += _changes(name, users, at, first, member)
    if stateful:
        flips += _Hysteresis(stateful, users.tolist(), at.tolist(), end_ms).run()
    rank = {name: i for i, name in enumerate(config.segments)}
    flips.sort(key=lambda f: (f.user, f.at_ms, f.order, rank[f.segment]))
    return flips


def _changes(
    name: str, users: Array[np.int64], at: Array[np.int64], first: Array[np.bool_], member: Array[np.bool_]
) -> list[Flip]:
    """Enters and exits of a segment without state, from row to row (each user starts outside)."""
    before = np.empty_like(member)
    before[0:1] = False
    before[1:] = member[:-1]
    before[first] = False
    changed = np.flatnonzero(member != before)
    return [Flip(int(users[i]), int(at[i]), name, "enter" if member[i] else "exit", float(i)) for i in changed.tolist()]


class _Hysteresis:
    """The segments with an exit rule or a dwell, user by user, row by row:
    once in, a segment holds until its dwell has passed and its exit rule
    holds (no exit rule: until its rule fails). A dwell's end is a moment
    all of them are evaluated at, as the engine's timer wakes the profile
    then, with the values of the row before (they change only at rows)."""

    def __init__(
        self, segments: list[tuple[str, list[bool], list[bool], int]], users: list[int], at: list[int], end_ms: int
    ) -> None:
        self.segments, self.users, self.at, self.end_ms = segments, users, at, end_ms
        self.inside = [False] * len(segments)
        self.since = [0] * len(segments)
        self.flips: list[Flip] = []
        self.now = 0  # the user's last evaluation

    def run(self) -> list[Flip]:
        users, at = self.users, self.at
        n = len(users)
        for i in range(n):
            if i == 0 or users[i] != users[i - 1]:
                self.inside = [False] * len(self.segments)
            else:
                self._dwells(i - 1, at[i], inclusive=False)
            self._evaluate(i, at[i], i)
            if i + 1 == n or users[i + 1] != users[i]:
                self._dwells(i, self.end_ms, inclusive=True)
        return self.flips

    def _dwells(self, row: int, limit: int, inclusive: bool) -> None:
        """Evaluate at each dwell's end before ``limit`` (or at it), with ``row``'s values."""
        while True:
            now = self.now
            due = min(
                (
                    t
                    for k, seg in enumerate(self.segments)
                    if self.inside[k] and seg[3] and (t := self.since[k] + seg[3]) > now
                ),
                default=None,
            )
            if due is None or due > limit or (due == limit and not inclusive):
                return
            self._evaluate(row, due, row + 0.5)

    def _evaluate(self, row: int, t: int, order: float) -> None:
        user = self.users[row]
        for k, (name, rule, stay, dwell_ms) in enumerate(self.segments):
            if self.inside[k]:
                if not (dwell_ms and t < self.since[k] + dwell_ms) and stay[row]:
                    self.inside[k] = False
                    self.flips.append(Flip(user, t, name, "exit", order))
            elif rule[row]:
                self.inside[k], self.since[k] = True, t
                self.flips.append(Flip(user, t, name, "enter", order))
        self.now = t
