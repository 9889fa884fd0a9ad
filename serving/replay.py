"""Feed an event table to a running segflow over HTTP, in event-time order.

Events go in ``/v1/batch`` requests, paced so that event time runs ``speed``
times faster than the wall clock (``max``: as fast as the server answers).
Each answer's transitions are counted; a progress callback sees the running
totals, which is how ``segflow replay`` draws its live display.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import orjson

from features.events import Event, to_payload


@dataclass
class ReplayStats:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    requests: int = 0
    seconds: float = 0.0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_ms: int = 0

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def parse_speed(text: str) -> float | None:
    """``60x`` → 60.0; ``max`` → None (no pacing)."""
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        value = float(t.removesuffix("x"))
    except ValueError:
        raise ValueError(f"speed must look like '60x' or 'max', not {text!r}") from None
    if value <= 0:
        raise ValueError(f"speed must be above 0, not {text!r}")
    return value


def replay(
    events: Sequence[Event],
    url: str,
    write_key: str,
    speed: float | None = None,
    batch_size: int = 500,
    progress: Callable[[ReplayStats], None] | None = None,
    client: httpx.Client | None = None,
) -> ReplayStats:
    """Send ``events`` (sorted here by event time) and count what came back."""
    ordered = sorted(events, key=lambda e: e.ts_ms)
    stats = ReplayStats()
    own = client is None
    http = client or httpx.Client(base_url=url, auth=(write_key, ""), timeout=60.0)
    started = time.perf_counter()
    first = ordered[0].ts_ms if ordered else 0
    try:
        i = 0
        while i < len(ordered):
            batch = _next_batch(ordered, i, batch_size, speed)
            i += len(batch)
            if speed is not None:
                ahead = (batch[-1].ts_ms - first) / speed / 1000 - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
            body = orjson.dumps({"batch": [to_payload(e) for e in batch]})
            response = http.post("/v1/batch", content=body, headers={"content-type": "application/json"})
            if response.status_code != 200:
                raise RuntimeError(f"/v1/batch answered {response.status_code}: {response.text[:500]}")
            answer = response.json()
            stats.requests += 1
            stats.sent += len(batch)
            stats.accepted += answer["accepted"]
            stats.duplicates += answer["duplicates"]
            stats.last_ms = batch[-1].ts_ms
            for t in answer["transitions"]:
                stats.transitions[(t["segment"], t["kind"])] += 1
            stats.seconds = time.perf_counter() - started
            if progress is not None:
                progress(stats)
    finally:
        if own:
            http.close()
    return stats


def _next_batch(events: Sequence[Event], start: int, size: int, speed: float | None) -> Sequence[Event]:
    """Up to ``size`` events; when paced, no more than a second of event time
    at this speed, so pacing stays smooth."""
    end = min(start + size, len(events))
    if speed is not None:
        limit = events[start].ts_ms + int(speed * 1000)
        j = start + 1
        while j < end and events[j].ts_ms <= limit:
            j += 1
        end = j
    return events[start:end]
