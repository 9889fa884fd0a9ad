"""Rules as code: timeline fixtures in YAML, run against a segment config.

A fixture file names a config (relative to the file; default
``config/segments.yaml``) and timelines: events at offsets from ``start``,
optional score values from given times, and the enters and exits expected;
only the segments a timeline names (``only``, else those in ``expect``) are
checked. ``run_file`` returns one result per timeline with a readable diff.

```yaml
config: ../segments.yaml
timelines:
  - name: a lone cart add is abandoned 48 hours later
    start: 2026-01-01T00:10:15Z
    events:
      - {at: 0s, type: add_to_cart, price: 30}
    until: 3d
    expect:
      - {at: 48h, enter: cart_abandoners_48h}
```
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from features.defaults import RULE_SPECS
from features.events import Event, datetime_to_ms, format_ms
from features.specs import parse_duration
from segments.config import SegmentConfig, load
from segments.timeline import feature_set_for, fold

_EVENT_FIELDS = ("device", "country", "city", "timezone")


@dataclass(frozen=True, slots=True)
class FixtureResult:
    file: str
    name: str
    passed: bool
    diff: str


_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def _ms(value: Any) -> int:
    """An offset such as ``48h`` or ``24h45s``, in milliseconds."""
    text = str(value).strip()
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not an offset: {text!r} (expected durations such as 48h or 24h45s)")
    return sum(parse_duration(n + u) // timedelta(milliseconds=1) for n, u in parts)


def _start(value: Any, where: str) -> int:
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where}: start {value!r} is not an ISO 8601 time with a timezone") from None
    return datetime_to_ms(dt)


def _line(at: int, start: int, kind: str, segment: str) -> str:
    offset = (at - start) / 1000
    return f"{format_ms(at)} (+{offset:g}s) {kind:5} {segment}"


def run_timeline(config: SegmentConfig, spec: dict[str, Any], where: str) -> tuple[bool, str]:
    start = _start(spec.get("start", "2026-01-01T00:00:00Z"), where)
    events = []
    for i, raw in enumerate(spec.get("events") or []):
        raw = dict(raw)
        at = start + _ms(raw.pop("at"))
        etype = str(raw.pop("type"))
        fields = {k: raw.pop(k) for k in _EVENT_FIELDS if k in raw}
        traits = raw.pop("traits", None) or {}  # an identify or group call's traits
        kind = etype if etype in ("identify", "group") else "track"
        events.append(
            Event(f"fixture-{i}", etype, "u", None, at, at, kind=kind, properties=raw, traits=traits, **fields)
        )
    points = sorted(
        ((start + _ms(s.pop("at")), s) for s in (dict(x) for x in spec.get("scores") or [])), key=lambda p: p[0]
    )

    def scores_at(t: int) -> dict[str, float]:
        current: dict[str, float] = {}
        for when, values in points:
            if when <= t:
                current = {k: float(v) for k, v in values.items()}
        return current

    until = start + _ms(spec.get("until", "7d"))
    fs = feature_set_for(config, RULE_SPECS)
    got = fold(config, events, until, fs, scores_at, spec.get("cluster"))
    expect = []
    for item in spec.get("expect") or []:
        kind = "enter" if "enter" in item else "exit"
        expect.append((start + _ms(item["at"]), kind, str(item[kind])))
    watched = set(spec.get("only") or [seg for _, _, seg in expect])
    unknown = sorted(watched - set(config.segments))
    if unknown:
        raise ValueError(f"{where}: no segment {unknown} in the config (it has {sorted(config.segments)})")
    if not watched:
        raise ValueError(f"{where}: the timeline checks no segment: name them in expect, or in only to expect none")
    actual = [(t.at_ms, t.kind, t.segment) for t in got if t.segment in watched]
    want = sorted(expect)
    have = sorted(actual)
    if want == have:
        return True, ""
    diff = difflib.unified_diff(
        [_line(a, start, k, s) for a, k, s in want],
        [_line(a, start, k, s) for a, k, s in have],
        "expected",
        "actual",
        lineterm="",
    )
    return False, "\n".join(diff)


def run_file(path: str | Path, config: SegmentConfig | None = None) -> list[FixtureResult]:
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("timelines"), list):
        raise ValueError(f"{path}: a fixture file has 'timelines', a list")
    if config is None:
        config_path = (path.parent / data["config"]) if data.get("config") else Path("config/segments.yaml")
        config = load(config_path, RULE_SPECS)
    results = []
    for i, spec in enumerate(data["timelines"]):
        name = str(spec.get("name") or f"timeline {i + 1}")
        passed, diff = run_timeline(config, spec, f"{path}: {name}")
        results.append(FixtureResult(str(path), name, passed, diff))
    return results
