"""Feature vectors as model inputs: one numeric transform shared by models.

Categorical features (``last_country``, ``last_device``) are kept as strings
for LightGBM's native handling and one-hot encoding in River; numeric ones go
through a signed ``log1p`` (counts, sums and recencies have heavy tails) with
NaN (no such event yet) mapped to a missing indicator.

>>> signed_log1p(np.array([0.0, 9.0, -9.0, np.nan])).round(3).tolist()
[0.0, 2.303, -2.303, nan]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

NEVER = math.log1p(90 * 86_400.0)


def signed_log1p(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """sign(x) · log(1 + |x|), elementwise (NaN stays NaN)."""
    return np.sign(x) * np.log1p(np.abs(x))


def river_features(vector: Mapping[str, object], categorical: Sequence[str]) -> dict[str, float | str]:
    """A feature vector as River expects it: numbers (missing → 0 plus an
    indicator), categoricals as strings."""
    return dict(river_items(vector, categorical))


def river_items(vector: Mapping[str, object], categorical: Sequence[str]) -> Iterator[tuple[str, float | str]]:
    """The items of :func:`river_features`, in its order, without the dict."""
    kinds = _kinds(tuple(categorical))
    for name, value in vector.items():
        kind = kinds.get(name)
        if kind is None:
            kind = kinds[name] = _kind(name, categorical)
        if kind == _CATEGORICAL:
            if value is not None:
                yield name, str(value)
        elif value is None or not -math.inf < value < math.inf:  # type: ignore[operator]
            # missing, NaN or (from a bug upstream) infinite. The indicator is always
            # sent: River's scaler learns nothing from a feature that is only ever 1
            yield name + "_missing", 1.0
            if kind == _RECENCY:
                yield name, NEVER  # never is long ago, not just now
        else:
            v = float(value)  # type: ignore[arg-type]
            yield name, (math.log1p(v) if v >= 0 else -math.log1p(-v))
            if kind != _PLAIN:
                yield name + "_missing", 0.0


_PLAIN, _CATEGORICAL, _RECENCY, _MEAN = range(4)
_KINDS: dict[tuple[str, ...], dict[str, int]] = {}


def _kinds(categorical: tuple[str, ...]) -> dict[str, int]:
    kinds = _KINDS.get(categorical)
    if kinds is None:
        kinds = _KINDS[categorical] = {}
    return kinds


def feature_kind(name: str, categorical: Sequence[str]) -> str:
    """How River features treat a vector's feature: ``categorical``, ``recency``
    (never is long ago), ``mean`` (with a missing flag) or ``plain``."""
    return ("plain", "categorical", "recency", "mean")[_kind(name, categorical)]


def _kind(name: str, categorical: Sequence[str]) -> int:
    if name in categorical:
        return _CATEGORICAL
    if name.endswith("_recency_s"):
        return _RECENCY
    return _MEAN if "_mean_" in name else _PLAIN
