"""Membership as pure functions: state + features + scores + time → memberships,
old vs new → transitions, each with its reason; and when time alone could
change the answer next.

Segments are evaluated in dependency order, so ``in_segment`` sees this
moment's memberships. A segment with an ``exit`` rule holds once entered until
its exit rule holds (hysteresis); ``min_dwell`` keeps a member in at least
that long. In a group, only the highest-priority segment that holds is kept.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from features.online import FeatureSet, Profile
from features.specs import Recency, Spec
from segments.closures import Context
from segments.config import SegmentConfig


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a transition happened: the config version, the rule, and each clause with its value."""

    config_id: str
    rule: str
    clauses: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Transition:
    segment: str
    kind: str  # "enter" or "exit"
    at_ms: int
    reason: Reason


@dataclass(slots=True)
class Memberships:
    """A user's segments and when each was entered."""

    entered: dict[str, int] = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.entered)


def evaluate(
    config: SegmentConfig,
    features: Mapping[str, Any],
    scores: Mapping[str, float],
    cluster: str | None,
    current: Memberships,
    at_ms: int,
) -> tuple[Memberships, list[Transition]]:
    """New memberships at ``at_ms`` and the transitions from ``current``."""
    holding: set[str] = set()
    ctx = Context(features, scores, cluster, holding, config.thresholds)
    entered = current.entered
    for name, dwell_ms, exit_fn, rule_fn in config.steps:
        if name in entered:
            if dwell_ms and at_ms < entered[name] + dwell_ms:
                holding.add(name)
                continue
            if exit_fn is not None:
                if not exit_fn(ctx):
                    holding.add(name)
                continue
        if rule_fn(ctx):
            holding.add(name)
    for group in config.groups:
        members = [s for s in group.segments if s in holding]
        for loser in members[1:]:
            holding.discard(loser)
    new = Memberships({n: entered.get(n, at_ms) for n in config.segments if n in holding} if holding else {})
    transitions: list[Transition] = []
    if new.entered.keys() == current.entered.keys():
        return new, transitions
    for name, seg in config.segments.items():
        before, after = name in current.entered, name in holding
        if before == after:
            continue
        rule = seg.exit if (before and seg.exit is not None) else seg.rule
        reason = Reason(config.config_id, rule.text.strip(), tuple(rule.explain(ctx)))
        transitions.append(Transition(name, "enter" if after else "exit", at_ms, reason))
    return new, transitions


def next_due(
    config: SegmentConfig, features: FeatureSet, profile: Profile, current: Memberships, at_ms: int
) -> int | None:
    """The earliest instant after ``at_ms`` at which some membership could
    change with no new event: a window edge, a recency threshold, a dwell end.
    Waking earlier than needed is harmless; never later."""
    dwell, drops, windows, recencies = _bound(config, features)
    due = math.inf
    entered = current.entered
    for name, ms in dwell:
        if name in entered:
            end = entered[name] + ms
            if at_ms < end < due:
                due = end
    for drop, level in drops:
        when = drop(profile, at_ms, level)
        if when is not None and at_ms < when < due:
            due = when
    for change in windows:
        when = change(profile, at_ms)
        if when is not None and at_ms < when < due:
            due = when
    for change, offsets in recencies:
        when = change(profile, at_ms)
        if when is None:
            continue
        for offset in offsets:  # >= flips at the threshold, > just after
            t = when + offset
            if at_ms < t < due:
                due = t
    return None if due == math.inf else int(due)


WakePlan = tuple[
    tuple[tuple[str, int], ...],
    tuple[Spec, ...],
    tuple[tuple[Spec, int], ...],
    tuple[tuple[Spec, tuple[int, ...]], ...],
]
_wake_plans: dict[str, WakePlan] = {}


_Bound = tuple[
    tuple[tuple[str, int], ...],
    tuple[tuple[Callable[[Profile, int, int], int | None], int], ...],
    tuple[Callable[[Profile, int], int | None], ...],
    tuple[tuple[Callable[[Profile, int], int | None], tuple[int, ...]], ...],
]
_bounds: weakref.WeakKeyDictionary[FeatureSet, dict[str, _Bound]] = weakref.WeakKeyDictionary()


def _bound(config: SegmentConfig, features: FeatureSet) -> _Bound:
    """The config's plan with each spec's change function looked up once per feature set."""
    per_config = _bounds.setdefault(features, {})
    bound = per_config.get(config.config_id)
    if bound is None:
        dwell, windows, levels, recencies = wake_plan(config)
        bound = per_config[config.config_id] = (
            dwell,
            tuple((features.drop_function(spec), level) for spec, level in levels),
            tuple(features.change_function(spec) for spec in windows),
            tuple((features.change_function(spec), offsets) for spec, offsets in recencies),
        )
    return bound


def wake_plan(config: SegmentConfig) -> WakePlan:
    """What ``next_due`` looks at for a config, worked out once: dwell times,
    windowed specs (woken at each window exit), window counts with the level
    they are woken at, and recency specs with the offsets after their last event
    at which a comparison flips (every duration of the rule, both edges, where
    the rule compares one in a way not worked out)."""
    plan = _wake_plans.get(config.config_id)
    if plan is not None:
        return plan
    dwell = tuple((name, seg.min_dwell_ms) for name, seg in config.segments.items() if seg.min_dwell_ms)
    windows: dict[Spec, None] = {}
    levels: dict[tuple[Spec, int], None] = {}
    recencies: dict[Spec, set[int]] = {}
    for seg in config.segments.values():
        for rule in (seg.rule, seg.exit):
            if rule is None:
                continue
            leveled = {spec for spec, _ in rule.count_levels}
            for spec in rule.specs:
                if not isinstance(spec, Recency) and spec not in leveled:
                    windows[spec] = None
            for item in rule.count_levels:
                levels[item] = None
            for spec, offset in rule.edges:
                recencies.setdefault(spec, set()).add(offset)
            for spec in rule.loose:
                for seconds in rule.durations:
                    t = math.ceil(seconds * 1000)
                    recencies.setdefault(spec, set()).update((t, t + 1))
    plan = (dwell, tuple(windows), tuple(levels), tuple((s, tuple(sorted(o))) for s, o in recencies.items()))
    _wake_plans[config.config_id] = plan
    return plan
