"""Latent clusters of users: KMeans over scaled behavioral vectors.

A scikit-learn style estimator: ``__init__`` stores parameters, ``fit``
learns attributes ending in ``_`` and returns ``self``. Vectors are scaled by
signed ``log1p`` then standardized, with a missing value (a mean over no
events) taken as the column's median at fit time; k is chosen from a range by silhouette on
a sample; cluster ids are kept stable across retrains by matching the new
centroids to a previous model's (Hungarian assignment); each cluster gets a
short description from its centroid's most distinctive features; one row is
assigned by a nearest-centroid lookup in NumPy, not ``KMeans.predict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from features.defaults import HABIT_WORDS
from features.specs import Spec
from models.params import Params
from models.vectors import signed_log1p


class NotFittedError(RuntimeError):
    """A model used before ``fit``."""


class ClusterModel(Params):
    """KMeans clusters of users with stable ids and descriptions."""

    def __init__(
        self,
        k_range: tuple[int, int] = (3, 8),
        features: Sequence[str] | None = None,
        sample_size: int = 5000,
        random_state: int = 0,
        previous: ClusterModel | None = None,
        specs: Sequence[Spec] | None = None,
        words: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.k_range = k_range
        self.features = features
        self.specs = specs  # the feature specs the vectors come from, so a service can compute them
        self.words = words  # feature name -> (what high means, what low means); None: the habits' words
        self.sample_size = sample_size
        self.random_state = random_state
        self.previous = previous

    def _matrix(self, X: pd.DataFrame) -> NDArray[np.float64]:
        cols = list(self.features_in_)
        values = X[cols].to_numpy(dtype=np.float64, na_value=np.nan)
        return signed_log1p(np.where(np.isnan(values), self.medians_, values))

    def fit(self, X: pd.DataFrame) -> ClusterModel:
        """Scale ``X``, choose k by silhouette, keep ids stable against ``previous``; returns self."""
        numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
        if self.features is not None:
            self.features_in_ = list(self.features)
        elif self.specs is not None:
            self.features_in_ = [s.name for s in self.specs]
        else:
            self.features_in_ = numeric
        missing = [c for c in self.features_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"the vectors lack the features {missing}")
        self.specs_: tuple[Spec, ...] = tuple(self.specs or ())
        medians = X[self.features_in_].astype(np.float64).median(skipna=True).to_numpy(dtype=np.float64)
        self.medians_ = np.nan_to_num(medians, nan=0.0)
        raw = self._matrix(X)
        self.mean_ = raw.mean(axis=0)
        self.scale_ = raw.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (raw - self.mean_) / self.scale_
        rng = np.random.default_rng(self.random_state)
        sample = rng.choice(len(Z), size=min(self.sample_size, len(Z)), replace=False)
        lo, hi = self.k_range
        if len(Z) <= lo:
            raise ValueError(f"need more than {lo} rows to cluster, got {len(Z)}")
        self.silhouettes_: dict[int, float] = {}
        best: tuple[float, KMeans] | None = None
        for k in range(lo, min(hi, len(Z) - 1) + 1):
            km = KMeans(n_clusters=k, n_init=4, random_state=self.random_state).fit(Z)
            score = float(silhouette_score(Z[sample], km.labels_[sample]))
            self.silhouettes_[k] = score
            if best is None or score > best[0]:
                best = (score, km)
        assert best is not None
        self.silhouette_, km = best
        centroids = km.cluster_centers_
        labels = km.labels_
        order = self._stable_order(centroids)
        self.centroids_ = centroids[order]
        remap = np.empty(len(order), dtype=np.int64)
        remap[order] = np.arange(len(order))
        self.labels_ = remap[labels]
        self.k_ = len(self.centroids_)
        self.sizes_ = np.bincount(self.labels_, minlength=self.k_)
        self.descriptions_ = [self._describe(c) for c in self.centroids_]
        return self

    def _stable_order(self, centroids: NDArray[np.float64]) -> NDArray[np.int64]:
        """Order new centroids so each takes the id of the nearest previous one."""
        prev = self.previous
        if prev is None or not hasattr(prev, "centroids_") or list(prev.features_in_) != list(self.features_in_):
            return np.argsort(-np.linalg.norm(centroids, axis=1), kind="stable")  # deterministic
        # compare in this model's scaling of the previous centroids' raw positions
        prev_raw = prev.centroids_ * prev.scale_ + prev.mean_
        prev_z = (prev_raw - self.mean_) / self.scale_
        cost = np.linalg.norm(centroids[:, None, :] - prev_z[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(cost)
        order = np.full(len(centroids), -1, dtype=np.int64)
        taken = dict(zip(cols.tolist(), rows.tolist(), strict=True))  # previous id -> new centroid
        new_ids = [taken[i] for i in sorted(taken)]
        rest = [i for i in range(len(centroids)) if i not in set(rows.tolist())]
        order = np.array(new_ids + rest, dtype=np.int64)
        return order

    def _describe(self, centroid: NDArray[np.float64], top: int = 3) -> str:
        """The centroid's most distinctive features, in words where there are some."""
        words = self.words if self.words is not None else HABIT_WORDS
        parts = []
        for i in np.argsort(-np.abs(centroid))[:top]:
            name, high = self.features_in_[i], bool(centroid[i] > 0)
            said = words.get(name)
            parts.append(said[0 if high else 1] if said else f"{'high' if high else 'low'} {name}")
        return ", ".join(parts)

    def _check(self) -> None:
        if not hasattr(self, "centroids_"):
            raise NotFittedError("this ClusterModel is not fitted yet: call fit(X) first")

    def predict(self, X: pd.DataFrame) -> NDArray[np.int64]:
        """The nearest centroid of each row of ``X``."""
        self._check()
        Z = (self._matrix(X) - self.mean_) / self.scale_
        d = ((Z[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        return d.argmin(axis=1)

    def assign_one(self, vector: Mapping[str, object]) -> int:
        """Nearest centroid of one feature vector (a few microseconds)."""
        self._check()
        raw = np.array([_num(vector.get(name)) for name in self.features_in_], dtype=np.float64)
        row = signed_log1p(np.where(np.isnan(raw), self.medians_, raw))
        z = (row - self.mean_) / self.scale_
        return int(((self.centroids_ - z) ** 2).sum(axis=1).argmin())

    def profile(self) -> pd.DataFrame:
        """Centroids (standardized) as a frame: clusters by features."""
        self._check()
        return pd.DataFrame(
            self.centroids_, columns=self.features_in_, index=[f"{i}: {d}" for i, d in enumerate(self.descriptions_)]
        )


def _num(value: object) -> float:
    """A vector value as a float; missing (None, NaN, text) as NaN."""
    if value is None or isinstance(value, str):
        return float("nan")
    return float(value)  # type: ignore[arg-type]
