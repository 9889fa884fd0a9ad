"""One JSON line per figure: ``{"bench", "metric", "value", "unit", "goal"}``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable


def emit(bench: str, metric: str, value: float, unit: str, goal: str | None = None, **context: object) -> None:
    line: dict[str, object] = {"bench": bench, "metric": metric, "value": round(value, 3), "unit": unit}
    if goal is not None:
        line["goal"] = goal
    line.update(context)
    print(json.dumps(line), flush=True)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by a noisy machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
