"""Stratified k-fold figures of a training procedure, with a confidence interval.

Each fold's model is made by the procedure on the other folds only (its
parameters chosen there, its threshold on a validation part of them), then
judged on the fold: a search nested inside the folds, never reading the
rows it is judged on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import StratifiedKFold, train_test_split

from models.intent_batch import BatchIntentModel
from training.evaluation import best_threshold, intent_metrics

# the training rows of a fold -> the LightGBM parameters to fit with
ChooseParams = Callable[[pd.DataFrame, np.ndarray], Mapping[str, Any]]
REPORTED = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "f1", "precision", "recall")


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Per-fold figures, their mean and 95% interval, and each fold's chosen parameters."""

    folds: list[dict[str, float]]
    mean: dict[str, float]
    interval: dict[str, tuple[float, float]]  # 95% t-interval of the mean across folds
    params: list[dict[str, Any]]  # each fold's chosen parameters

    def as_dict(self) -> dict[str, Any]:
        """The figures as one JSON-ready object."""
        return {
            "folds": self.folds,
            "mean": self.mean,
            "interval95": {k: list(v) for k, v in self.interval.items()},
            "params": self.params,
        }


def interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of ``values``.

    >>> [round(v, 3) for v in interval([0.8, 0.82, 0.81])]
    [0.785, 0.835]
    """
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return float(a.mean()), float(a.mean())
    half = float(stats.t.ppf((1 + level) / 2, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return float(a.mean() - half), float(a.mean() + half)


def stratified_tail(X: pd.DataFrame, y: np.ndarray, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows in an order whose last fifth (where the model stops boosting, then
    calibrates, half each) holds both classes in their proportions: a table's
    rows have no time order to keep, and a calibration part with no buyer fails."""
    rows = np.arange(len(y))
    rest, tail = train_test_split(rows, test_size=0.2, stratify=y, random_state=seed)
    stop, calibrate = train_test_split(tail, test_size=0.5, stratify=y[tail], random_state=seed)
    order = np.concatenate([rest, stop, calibrate])
    return X.iloc[order], y[order]


def fit_with_threshold(
    X: pd.DataFrame, y: np.ndarray, params: Mapping[str, Any], seed: int
) -> tuple[BatchIntentModel, float]:
    """A model fitted on 80% of the rows and the F1-best threshold of its
    predictions on the other 20%, rows it was not fitted on (stratified)."""
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    model = BatchIntentModel(dict(params) or None, random_state=seed, monotone=False).fit(
        *stratified_tail(X_fit, y_fit, seed)
    )
    return model, best_threshold(y_val, model.predict_proba(X_val))


def cross_validate(X: pd.DataFrame, y: np.ndarray, k: int, seed: int, choose: ChooseParams) -> CrossValidation:
    """Stratified ``k``-fold figures of fitting with the parameters ``choose`` picks on each fold's training rows."""
    folds, chosen = [], []
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y):
        X_train, y_train = X.iloc[train], y[train]
        params = dict(choose(X_train, y_train))
        model, threshold = fit_with_threshold(X_train, y_train, params, seed)
        metrics = intent_metrics(y[test], model.predict_proba(X.iloc[test]), threshold)
        folds.append({name: metrics[name] for name in (*REPORTED, "threshold")})
        chosen.append(params)
    mean = {name: float(np.mean([f[name] for f in folds])) for name in REPORTED}
    bounds = {name: (0.0, math.inf if name == "log_loss" else 1.0) for name in REPORTED}
    intervals = {name: _within(interval([f[name] for f in folds]), *bounds[name]) for name in REPORTED}
    return CrossValidation(folds, mean, intervals, chosen)


def _within(pair: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    """An interval clipped to what the metric can be (a recall above 1 says nothing)."""
    return max(pair[0], lo), min(pair[1], hi)
