"""Preview a config change over stored history before anything is saved.

Each config's transitions over the same events are decided on the offline
path (:mod:`serving.backtest`: the engine's answer, computed over columns),
with the same frozen models; timers due by the end of the history fire.
What differs is reported per segment: who would enter or leave under the new
config that did not under the old (with when), the final sizes, and each
day's size under both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.events import Event, format_ms
from features.identity import Link
from features.table import events_to_table
from segments.config import SegmentConfig, as_dict
from serving.backtest import Backtester
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


def preview(
    old: SegmentConfig,
    new: SegmentConfig,
    events: Sequence[Event] | pa.Table,
    scorers: Scorers,
    links: Sequence[Link] = (),
) -> Preview:
    """What would change if ``new`` replaced ``old``, over ``events`` (in arrival order, or their table), the
    identity ``links`` made before them in force (``(source, target, instant)``: those the log was trimmed of)."""
    table = events if isinstance(events, pa.Table) else events_to_table(events)
    times = table.column("ts").cast(pa.int64())
    first, last = (pc.min(times).as_py(), pc.max(times).as_py()) if len(times) else (0, 0)
    end = last + 1
    backtests = Backtester(scorers, table, end, links)
    done = {side: backtests.run(config) for side, config in (("old", old), ("new", new))}
    runs = {side: run.transitions for side, run in done.items()}
    frames = {side: pd.DataFrame(decided, columns=["user", "segment", "kind", "at"]) for side, decided in runs.items()}
    sizes = {side: _daily_sizes(frame, first // DAY_MS * DAY_MS, end) for side, frame in frames.items()}
    old_rules, new_rules = as_dict(old)["segments"], as_dict(new)["segments"]
    tuned = {k for k in {*old.thresholds, *new.thresholds} if old.thresholds.get(k) != new.thresholds.get(k)}
    changed = _changed(old, new, {n for n in new.segments if old_rules.get(n) != new_rules.get(n)
                                  or _thresholds(new, n) & tuned or n not in old.segments})  # fmt: skip
    out = []
    for name in [*new.segments, *[n for n in old.segments if n not in new.segments]]:
        status = (
            "added"
            if name not in old.segments
            else "removed"
            if name not in new.segments
            else "changed"
            if name in changed
            else "same"
        )
        seg = SegmentPreview(name, status)
        if status != "same":  # the same rule and thresholds decide the same transitions
            seen = {side: _of_segment(frame, name) for side, frame in frames.items()}
            seg.only_new = sorted(seen["new"] - seen["old"], key=lambda x: (x[2], x[0]))
            seg.only_old = sorted(seen["old"] - seen["new"], key=lambda x: (x[2], x[0]))
        days = sizes["old"].columns
        old_sizes, new_sizes = (sizes[side].reindex([name]).fillna(0).to_numpy()[0] for side in ("old", "new"))
        seg.daily = [(int(d), int(o), int(n)) for d, o, n in zip(days, old_sizes, new_sizes, strict=True)]
        seg.size_old = seg.daily[-1][1] if seg.daily else 0
        seg.size_new = seg.daily[-1][2] if seg.daily else 0
        out.append(seg)
    replayed = max(run.replayed for run in done.values())
    why = {reason: n for run in done.values() for reason, n in run.why_replayed.items()}
    return Preview(old.config_id, new.config_id, table.num_rows, out, dict(scorers.versions), replayed, why)


def _changed(old: SegmentConfig, new: SegmentConfig, edited: set[str]) -> set[str]:
    """Segments whose members may differ: those edited, those whose rules
    refer to one that may differ, and the members of a group that holds one
    (in either config)."""
    changed = set(edited) | {n for n in old.segments if n not in new.segments}
    groups = [g.segments for g in (*old.groups, *new.groups)]
    while True:
        more = {
            name
            for name, seg in new.segments.items()
            if name not in changed
            and (
                (seg.rule.segments | (seg.exit.segments if seg.exit is not None else set())) & changed
                or any(name in g and changed & set(g) for g in groups)
            )
        }
        if not more:
            return changed
        changed |= more


def _thresholds(config: SegmentConfig, name: str) -> set[str]:
    seg = config.segments[name]
    return set(seg.rule.thresholds) | (set(seg.exit.thresholds) if seg.exit is not None else set())


def _of_segment(frame: pd.DataFrame, segment: str) -> set[tuple[str, str, int]]:
    """A segment's transitions as (user, kind, at)."""
    rows = frame[frame["segment"] == segment]
    return set(zip(rows["user"], rows["kind"], rows["at"].astype(int), strict=True))


def _daily_sizes(frame: pd.DataFrame, start: int, end: int) -> pd.DataFrame:
    """Each segment's size at the end of each day (and at ``end`` for the last): segments by day starts."""
    days = max((end - start + DAY_MS - 1) // DAY_MS, 1)
    day = (frame["at"].to_numpy(dtype=np.int64) - start) // DAY_MS
    sign = np.where(frame["kind"].to_numpy() == "enter", 1, -1)
    delta = pd.DataFrame({"segment": frame["segment"], "day": day, "sign": sign})
    table = delta[delta["day"] < days].pivot_table(index="segment", columns="day", values="sign", aggfunc="sum")
    table = table.reindex(columns=range(days)).fillna(0).cumsum(axis=1)
    table.columns = [start + d * DAY_MS for d in range(days)]
    return table
