"""Durations as rules and specs write them (``30m``, ``24h``, ``7d``), in
milliseconds, and the bucket resolution a window of each length counts in."""

from __future__ import annotations

import re
from datetime import timedelta

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def duration_ms(d: timedelta) -> int:
    """A positive duration in whole milliseconds (ValueError for zero or less)."""
    ms = d // timedelta(milliseconds=1)
    if ms <= 0:
        raise ValueError(f"a window must be longer than zero, got {d}")
    return ms


def format_duration(ms: int) -> str:
    """Short names for durations: ``30m``, ``1h``, ``24h``, ``7d``.

    >>> [format_duration(m) for m in (30 * MINUTE_MS, HOUR_MS, DAY_MS, 2 * DAY_MS, 7 * DAY_MS, 90_000)]
    ['30m', '1h', '24h', '48h', '7d', '90s']
    """
    if ms % DAY_MS == 0 and ms > 2 * DAY_MS:
        return f"{ms // DAY_MS}d"
    if ms % HOUR_MS == 0:
        return f"{ms // HOUR_MS}h"
    if ms % MINUTE_MS == 0:
        return f"{ms // MINUTE_MS}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def resolution_for(within_ms: int) -> int:
    """The default bucket resolution of a window (milliseconds).

    >>> [resolution_for(w) // MINUTE_MS for w in (30 * MINUTE_MS, DAY_MS, 7 * DAY_MS, 30 * DAY_MS)]
    [1, 1, 60, 1440]
    """
    if within_ms <= DAY_MS:
        return MINUTE_MS
    if within_ms <= 8 * DAY_MS:
        return HOUR_MS
    return DAY_MS


_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` and the like.

    >>> parse_duration("48h"), parse_duration("30m")
    (datetime.timedelta(days=2), datetime.timedelta(seconds=1800))
    """
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (expected a number and a unit: ms, s, m, h, d or w, as in 24h)")
    return timedelta(milliseconds=int(m.group(1)) * _UNIT_MS[m.group(2)])
