"""Local time: a user's timezone by name, the hour and weekday there, and a
zone's UTC offsets over many instants at once (the offline path's form)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray


@lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo:
    """A timezone by name; UTC for None or an unknown name."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        return ZoneInfo("UTC")


def local(t: int, tz: tuple[int, str] | None) -> datetime:
    """The instant ``t`` (ms) in a tracked timezone (``(ts, name)``; None: UTC)."""
    return datetime.fromtimestamp(t / 1000.0, tz=UTC).astimezone(zone(None if tz is None else tz[1]))


def local_hour(dt: datetime) -> float:
    """The hour of a local time, with its minutes as a fraction."""
    return dt.hour + dt.minute / 60.0


def _at_seconds(seconds: float, zoneinfo: tzinfo) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC).astimezone(zoneinfo)


def _offset_ms(moment: datetime) -> int:
    offset = moment.utcoffset()
    return 0 if offset is None else int(offset.total_seconds() * 1000)


def utc_offsets_ms(at: NDArray[np.int64], tz: str | None) -> NDArray[np.int64]:
    """The timezone's UTC offset at each instant, from its transitions."""
    zoneinfo = zone(tz)
    if zoneinfo.key == "UTC" or not len(at):
        return np.zeros(len(at), dtype=np.int64)
    # offsets only change at transitions: evaluate once per distinct hour
    hours = at // 3_600_000
    unique, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array([_offset_ms(_at_seconds(h * 3600, zoneinfo)) for h in unique.tolist()], dtype=np.int64)
    # a transition inside an hour: fall back to exact per instant for those
    exact = offsets[inverse]
    ends = np.array([_offset_ms(_at_seconds(h * 3600 + 3599, zoneinfo)) for h in unique.tolist()], dtype=np.int64)
    changing = np.flatnonzero((ends != offsets)[inverse])
    for i in changing.tolist():
        moment = datetime.fromtimestamp(at[i] / 1000.0, tz=UTC).astimezone(zoneinfo)
        exact[i] = _offset_ms(moment)
    return exact
