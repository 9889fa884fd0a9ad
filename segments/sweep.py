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
    out, or a group holds a segment with an exit rule or a dwell."""
    for name, seg in config.segments.items():
        for rule in (seg.rule, seg.exit):
            if rule is None:
                continue
            if rule.loose:
                return f"{name}: a recency compared in a way whose flips are not worked out"
            for spec in rule.specs:
                if not _stepwise(spec):
                    return f"{name}: {spec.name} changes with time between wake-ups"
    for group in config.groups:
        for name in group.segments:
            seg = config.segments[name]
            if seg.exit is not None or seg.min_dwell_ms:
                return f"group {group.name}: {name} has an exit rule or a dwell"
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
    last = np.ones(len(users), dtype=bool)
    last[:-1] = users[:-1] != users[1:]
    holding: dict[str, Array[np.bool_]] = {}  # before groups: what in_segment reads
    final: dict[str, Array[np.bool_]] = {}
    flips: list[Flip] = []
    view = Columns(rows.n, rows.features, rows.scores, rows.cluster, holding, config.thresholds)
    for name, seg in config.segments.items():
        assert seg.rule.tree is not None
        rule = evaluate(seg.rule.tree, view)
        if seg.exit is None and not seg.min_dwell_ms:
            holding[name] = final[name] = rule
            continue
        leave = None
        if seg.exit is not None:
            assert seg.exit.tree is not None
            leave = evaluate(seg.exit.tree, view)
        holding[name], stateful = _hysteresis(name, users, at, first, last, rule, leave, seg.min_dwell_ms, end_ms)
        flips += stateful
    for group in config.groups:  # (of segments without state: see unsupported)
        taken = np.zeros(rows.n, dtype=bool)
        for name in group.segments:
            final[name] = holding[name] & ~taken
            taken |= holding[name]
    for name, member in final.items():
        flips += _changes(name, users, at, first, member)
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


def _hysteresis(
    name: str,
    users: Array[np.int64],
    at: Array[np.int64],
    first: Array[np.bool_],
    last: Array[np.bool_],
    rule: Array[np.bool_],
    leave: Array[np.bool_] | None,
    dwell_ms: int,
    end_ms: int,
) -> tuple[Array[np.bool_], list[Flip]]:
    """A segment with an exit rule or a dwell, row by row: once in, it holds
    until its dwell has passed and its exit rule holds (no exit rule: until
    its rule fails). A dwell that ends before the user's next row (or by
    ``end_ms``) is decided at its end with the row's values. Memberships
    after each row, and every transition."""
    held = np.zeros(len(users), dtype=bool)
    flips: list[Flip] = []
    inside, since = False, 0
    stay = ~rule if leave is None else leave  # what ends a membership once the dwell is over
    rule_l, stay_l, at_l, users_l = rule.tolist(), stay.tolist(), at.tolist(), users.tolist()
    first_l, last_l = first.tolist(), last.tolist()
    for i in range(len(users_l)):
        t = at_l[i]
        if first_l[i]:
            inside = False
        if inside:
            if not (dwell_ms and t < since + dwell_ms) and stay_l[i]:
                inside = False
                flips.append(Flip(users_l[i], t, name, "exit", i))
        elif rule_l[i]:
            inside, since = True, t
            flips.append(Flip(users_l[i], t, name, "enter", i))
        held[i] = inside
        if inside and dwell_ms:  # a dwell ending before the next row is decided at its end, with this row's values
            due = since + dwell_ms
            nxt = end_ms + 1 if last_l[i] else at_l[i + 1]
            if t < due < nxt and due <= end_ms and stay_l[i]:
                inside = False
                flips.append(Flip(users_l[i], due, name, "exit", i + 0.5))
    return held, flips
