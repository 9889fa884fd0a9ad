"""A user's timeline folded through features and memberships on the event
clock: each event is applied and memberships evaluated at its time, and in
between the fold wakes at each ``next_due`` so time-driven changes happen
exactly when due. Fixture tests and replays use it; the serving engine does
the same per event and per timer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from features.events import Event
from features.online import FeatureSet
from segments.config import SegmentConfig
from segments.membership import Memberships, Transition, evaluate, next_due

ScoresAt = Callable[[int], Mapping[str, float]]


def feature_set_for(config: SegmentConfig, base: Iterable = ()) -> FeatureSet:
    """A feature set with the given specs plus every spec the rules derive."""
    specs = list(base)
    names = {s.name for s in specs}
    for spec in config.specs:
        if spec.name not in names:
            specs.append(spec)
            names.add(spec.name)
    return FeatureSet(specs)


def fold(
    config: SegmentConfig,
    events: Iterable[Event],
    until_ms: int,
    features: FeatureSet | None = None,
    scores_at: ScoresAt | None = None,
    cluster: str | None = None,
) -> list[Transition]:
    """Every transition of one user's events (in arrival order) up to ``until_ms``."""
    fs = features or feature_set_for(config)
    profile = fs.new_profile()
    members = Memberships()
    out: list[Transition] = []
    scores = scores_at or (lambda _t: {})

    def at(t: int) -> None:
        nonlocal members
        vector = fs.read(profile, t)
        members, changes = evaluate(config, vector, scores(t), cluster, members, t)
        out.extend(changes)

    def wake_until(limit: int, now: int) -> int:
        while True:
            due = next_due(config, fs, profile, members, now)
            if due is None or due >= limit:
                return now
            at(due)
            now = due

    now = -1
    for event in events:
        if now >= 0:
            now = wake_until(event.ts_ms, now)
        fs.update(profile, event)
        now = max(now, profile.newest)
        at(now)
    if now >= 0:
        wake_until(until_ms + 1, now)
    return out
