"""Preview a config change over stored history before anything is saved.

Each config's transitions over the same events are decided on the offline
path (:mod:`serving.backtest`: the engine's answer, computed over columns),
with the same frozen models; timers due by the end of the history fire.
What differs is reported per segment: who would enter or leave under the new
config that did not under the old (with when), the final sizes, and each
day's size under both.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from features.events import Event, format_ms
from features.identity import Link
from features.table import events_to_table
from segments.config import SegmentConfig, as_dict
from serving.backtest import Backtest, Decided, backtest
from serving.engine import DAY_MS
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
    replayed: int = 0  # events whose users were replayed through the engine (the rest: over columns)
    why_replayed: dict[str, int] = field(default_factory=dict)  # reason -> users

    def as_dict(self, limit: int = 100) -> dict[str, Any]:
        return {
            "old_config": self.old_config,
            "new_config": self.new_config,
            "events": self.events,
            "models": self.models,
            "online_model": "frozen: scores as registered, learns nothing during the preview",
            "replayed_through_engine": {"events": self.replayed, "users_by_reason": self.why_replayed},
            "segments": [s.as_dict(limit) for s in self.segments],
        }


def _run(config: SegmentConfig, scorers: Scorers, events: pa.Table, end_ms: int, links: Sequence[Link]) -> Backtest:
    scorers.online.frozen = True  # both sides score with the same model: it learns nothing meanwhile
    return backtest(config, scorers, events, end_ms, links)


def preview(
    old: SegmentConfig, new: SegmentConfig, events: Sequence[Event], scorers: Scorers, links: Sequence[Link] = ()
) -> Preview:
    """What would change if ``new`` replaced ``old``, over ``events`` (in arrival order), the identity
    ``links`` made before them in force (``(source, target, instant)``: those the log was trimmed of)."""
    end = max((e.ts_ms for e in events), default=0) + 1
    table = events_to_table(events)
    done = {
        side: _run(config, copy.deepcopy(scorers), table, end, links) for side, config in (("old", old), ("new", new))
    }
    runs = {side: run.transitions for side, run in done.items()}
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
    replayed = max(run.replayed for run in done.values())
    why = {reason: n for run in done.values() for reason, n in run.why_replayed.items()}
    return Preview(old.config_id, new.config_id, len(events), out, dict(scorers.versions), replayed, why)


def _thresholds(config: SegmentConfig, name: str) -> set[str]:
    seg = config.segments[name]
    return set(seg.rule.thresholds) | (set(seg.exit.thresholds) if seg.exit is not None else set())


def _transitions(decided: list[Decided], segment: str) -> set[tuple[str, str, int]]:
    return {(user, kind, at) for user, name, kind, at in decided if name == segment}


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
