"""Preview a config change over stored history before anything is saved.

The same events are replayed on the event clock through two engines, one per
config, each starting from its own copy of the same models; then the clocks
move to the end so due exits and deadlines fire. What differs is reported per
segment: who would enter or leave under the new config that did not under the
old (with when), the final sizes, and each day's size under both.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from features.events import Event, format_ms
from features.identity import IdentityGraph, Link
from segments.config import SegmentConfig, as_dict
from serving.engine import DAY_MS, Engine
from serving.outbox import Change
from serving.regime import build_features
from serving.scorers import Scorers


@dataclass
class SegmentPreview:
    name: str
    status: str  # "same", "changed", "added" or "removed"
    only_new: list[tuple[str, str, int]] = field(default_factory=list)  # (user, kind, at_ms) only under new
    only_old: list[tuple[str, str, int]] = field(default_factory=list)  # ... only under old
    size_old: int = 0
    size_new: int = 0
    daily: list[tuple[int, int, int]] = field(default_factory=list)  # (day start ms, old size, new size)

    def as_dict(self, limit: int = 100) -> dict[str, Any]:
        def rows(items: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
            return [{"user": u, "kind": k, "at": format_ms(t)} for u, k, t in items[:limit]]

        return {
            "segment": self.name,
            "status": self.status,
            "size_old": self.size_old,
            "size_new": self.size_new,
            "would_enter": sum(1 for _, k, _ in self.only_new if k == "enter"),
            "would_leave": sum(1 for _, k, _ in self.only_new if k == "exit"),
            "transitions_only_new": rows(self.only_new),
            "transitions_only_old": rows(self.only_old),
            "daily_sizes": [{"day": format_ms(d)[:10], "old": o, "new": n} for d, o, n in self.daily],
        }


@dataclass
class Preview:
    old_config: str
    new_config: str
    events: int
    segments: list[SegmentPreview]
    models: dict[str, str] = field(default_factory=dict)  # registered name -> version, and the intent mode

    def as_dict(self, limit: int = 100) -> dict[str, Any]:
        return {
            "old_config": self.old_config,
            "new_config": self.new_config,
            "events": self.events,
            "models": self.models,
            "online_model": "frozen: scores as registered, learns nothing during the preview",
            "segments": [s.as_dict(limit) for s in self.segments],
        }


def _run(
    config: SegmentConfig, scorers: Scorers, events: Sequence[Event], end_ms: int, links: Sequence[Link]
) -> list[Change]:
    scorers.online.frozen = True  # both sides score with the same model: it learns nothing meanwhile
    engine = Engine(config, build_features(config, scorers), scorers, clock="event")
    engine.identity = IdentityGraph.of(links)
    changes: list[Change] = []
    for i in range(0, len(events), 1000):
        changes += engine.ingest(events[i : i + 1000]).changes
    changes += engine.advance(end_ms)
    return changes


def preview(
    old: SegmentConfig, new: SegmentConfig, events: Sequence[Event], scorers: Scorers, links: Sequence[Link] = ()
) -> Preview:
    """What would change if ``new`` replaced ``old``, over ``events`` (in arrival order), the identity
    ``links`` made before them in force (``(source, target, instant)``: those the log was trimmed of)."""
    end = max((e.ts_ms for e in events), default=0) + 1
    runs = {
        side: _run(config, copy.deepcopy(scorers), events, end, links) for side, config in (("old", old), ("new", new))
    }
    old_rules, new_rules = as_dict(old)["segments"], as_dict(new)["segments"]
    start = min((e.ts_ms for e in events), default=0) // DAY_MS * DAY_MS
    tuned = {k for k in {*old.thresholds, *new.thresholds} if old.thresholds.get(k) != new.thresholds.get(k)}
    out = []
    for name in [*new.segments, *[n for n in old.segments if n not in new.segments]]:
        status = (
            "added"
            if name not in old.segments
            else "removed"
            if name not in new.segments
            else "same"
            if old_rules.get(name) == new_rules.get(name) and not (_thresholds(new, name) & tuned)
            else "changed"
        )
        seen = {side: _transitions(changes, name) for side, changes in runs.items()}
        seg = SegmentPreview(
            name,
            status,
            only_new=sorted(seen["new"] - seen["old"], key=lambda x: (x[2], x[0])),
            only_old=sorted(seen["old"] - seen["new"], key=lambda x: (x[2], x[0])),
        )
        sizes = {side: _daily_sizes(seen[side], start, end) for side in runs}
        seg.daily = [(d, sizes["old"][i][1], sizes["new"][i][1]) for i, (d, _) in enumerate(sizes["old"])]
        seg.size_old = seg.daily[-1][1] if seg.daily else 0
        seg.size_new = seg.daily[-1][2] if seg.daily else 0
        out.append(seg)
    return Preview(old.config_id, new.config_id, len(events), out, dict(scorers.versions))


def _thresholds(config: SegmentConfig, name: str) -> set[str]:
    seg = config.segments[name]
    return set(seg.rule.thresholds) | (set(seg.exit.thresholds) if seg.exit is not None else set())


def _transitions(changes: list[Change], segment: str) -> set[tuple[str, str, int]]:
    return {(c.profile_id, c.transition.kind, c.transition.at_ms) for c in changes if c.transition.segment == segment}


def _daily_sizes(transitions: set[tuple[str, str, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The segment's size at the end of each day (and at ``end`` for the last)."""
    delta: dict[int, int] = defaultdict(int)
    for _, kind, at in transitions:
        delta[(at - start) // DAY_MS] += 1 if kind == "enter" else -1
    days = max((end - start + DAY_MS - 1) // DAY_MS, 1)
    size, out = 0, []
    for d in range(days):
        size += delta.get(d, 0)
        out.append((start + d * DAY_MS, size))
    return out
