"""Drift: how far live scores and features have moved from what a model was
trained on, as the population stability index (PSI) per column.

A :class:`Reference` keeps, for each column, the deciles of the training
values as bin edges and the share of training rows in each bin (missing
values in a bin of their own). A :class:`Monitor` counts live values into the
same bins. PSI = Σ (live − train) · ln(live / train) over the bins; the usual
reading: below 0.1 stable, 0.1–0.25 moving, above 0.25 shifted.

>>> rng = np.random.default_rng(0)
>>> ref = Reference.of({"x": rng.normal(size=5000)})
>>> round(ref.psi("x", rng.normal(size=5000)), 3) < 0.02, ref.psi("x", rng.normal(1.0, size=5000)) > 0.25
(True, True)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

BINS = 10
PRIOR = 0.5  # counts added to every bin (see smoothed)
SHIFTED = 0.25
SCORE = "score"  # the model's own score, beside its features


def psi(expected: NDArray[np.float64], actual: NDArray[np.float64]) -> float:
    """The population stability index of two distributions over the same bins (shares)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    return float(np.sum((a - e) * np.log(a / e)))


def smoothed(counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Shares from counts with half a count added to every bin, so a bin empty
    on one side (a few hundred rows rarely fill all eleven) is unlikely, not impossible."""
    c = np.asarray(counts, dtype=np.float64) + PRIOR
    return c / c.sum()


@dataclass(frozen=True, slots=True)
class Reference:
    """Bin edges and training shares per column (the last bin: missing values)."""

    edges: dict[str, tuple[float, ...]]
    shares: dict[str, tuple[float, ...]]
    rows: int

    @classmethod
    def of(cls, columns: Mapping[str, Any]) -> Reference:
        """The bins and shares of each column (name -> values) as training saw them."""
        edges: dict[str, tuple[float, ...]] = {}
        shares: dict[str, tuple[float, ...]] = {}
        rows = 0
        for name, values in columns.items():
            v = np.asarray(values, dtype=np.float64)
            rows = max(rows, len(v))
            present = v[~np.isnan(v)]
            cuts: list[float] = []
            if len(present):
                cuts = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1])).tolist()
            edges[name] = tuple(float(c) for c in cuts)
            shares[name] = tuple(_shares(edges[name], v).tolist())
        return cls(edges, shares, rows)

    def psi(self, name: str, values: Any) -> float:
        """PSI of ``values`` against the training values of column ``name``."""
        return psi(np.array(self.shares[name]), _shares(self.edges[name], np.asarray(values, dtype=np.float64)))


def _shares(edges: tuple[float, ...], values: NDArray[np.float64]) -> NDArray[np.float64]:
    return smoothed(_counts(edges, values))


def _counts(edges: tuple[float, ...], values: NDArray[np.float64]) -> NDArray[np.float64]:
    missing = np.isnan(values)
    binned = np.searchsorted(np.asarray(edges), values[~missing], side="right")
    counts = np.bincount(binned, minlength=len(edges) + 1).astype(np.float64)
    return np.append(counts, float(missing.sum()))


@dataclass(slots=True)
class Monitor:
    """Live values counted into a reference's bins, one vector at a time."""

    reference: Reference
    counts: dict[str, list[int]] = field(default_factory=dict)
    seen: int = 0

    def __post_init__(self) -> None:
        self.counts = {name: [0] * (len(e) + 2) for name, e in self.reference.edges.items()}

    def observe(self, vector: Mapping[str, Any], score: float | None) -> None:
        """Count one live vector and the model's score of it; a column it lacks counts as missing."""
        self.seen += 1
        for name, edges in self.reference.edges.items():
            value = score if name == SCORE else vector.get(name)
            if value is None or isinstance(value, str) or not math.isfinite(value):
                self.counts[name][-1] += 1
            else:
                self.counts[name][bisect_right(edges, value)] += 1

    def reset(self) -> None:
        """Count from now on (a replay's events are not live ones)."""
        self.__post_init__()
        self.seen = 0

    def report(self) -> dict[str, float]:
        """PSI per column of what was observed (empty before anything was)."""
        if not self.seen:
            return {}
        return {
            name: psi(np.array(self.reference.shares[name]), smoothed(np.array(c))) for name, c in self.counts.items()
        }
