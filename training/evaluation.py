"""Metrics and plots of intent and cluster models."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt  # no backend forced: headless, matplotlib falls back to Agg; a notebook keeps its own
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray
from sklearn.metrics import (
    adjusted_rand_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
    silhouette_score,
)


def expected_calibration_error(y: NDArray, p: NDArray, bins: int = 10) -> float:
    """Mean |observed rate − mean score| over equal-width score bins, weighted by size.

    >>> round(expected_calibration_error(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])), 3)
    0.0
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += float(m.sum() * abs(y[m].mean() - p[m].mean()))
    return total / max(len(y), 1)


def best_threshold(y: NDArray, p: NDArray) -> float:
    """The score threshold that maximizes F1 (chosen on training data only)."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def intent_metrics(y: NDArray, p: NDArray, threshold: float) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, ECE and, at ``threshold``, F1, precision and recall."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    decided = p >= threshold
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "f1": float(f1_score(y, decided, zero_division=0)),
        "precision": float(precision_score(y, decided, zero_division=0)),
        "recall": float(recall_score(y, decided, zero_division=0)),
        "threshold": float(threshold),
        "positive_rate": float(y.mean()),
    }


def intent_plots(y: NDArray, p: NDArray, importance: pd.Series | None = None) -> dict[str, Figure]:
    """ROC, precision-recall and calibration curves (and importance when given), as figures by file name."""
    figs: dict[str, Figure] = {}
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    figs["roc.png"] = fig
    precision, recall, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(recall, precision)
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
    figs["precision_recall.png"] = fig
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
    xs = [p[which == b].mean() for b in range(10) if (which == b).any()]
    ys = [np.asarray(y)[which == b].mean() for b in range(10) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(xs, ys, "o-")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="predicted probability", ylabel="observed rate", title="calibration")
    figs["calibration.png"] = fig
    if importance is not None:
        top = importance.head(15)[::-1]
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.barh(top.index, top.to_numpy())
        ax.set(title="feature importance (gain)")
        fig.tight_layout()
        figs["feature_importance.png"] = fig
    return figs


def cluster_silhouette(model: Any, vectors: pd.DataFrame, sample: int = 3000, seed: int = 0) -> float:
    """Silhouette of a fitted cluster model's assignment of ``vectors`` (a
    sample of them), in the model's own scaled space; -inf for one cluster."""
    rows = vectors.sample(min(len(vectors), sample), random_state=seed)
    labels = model.predict(rows)
    if len(np.unique(labels)) < 2:
        return float("-inf")
    z = (model._matrix(rows) - model.mean_) / model.scale_
    return float(silhouette_score(z, labels))


def persona_ari(labels: NDArray, personas: pd.Series) -> float:
    """Agreement of clusters with known personas (adjusted Rand index), over
    the users whose persona is known (``personas`` aligned with ``labels``)."""
    known = personas.notna().to_numpy()
    return float(adjusted_rand_score(personas[known], np.asarray(labels)[known]))


def cluster_heatmap(profile: pd.DataFrame, top: int = 20) -> Figure:
    """The standardized centroids over the features that set clusters apart most."""
    spread = profile.abs().max(axis=0).sort_values(ascending=False).index[:top]
    fig, ax = plt.subplots(figsize=(10, 1 + 0.5 * len(profile)))
    im = ax.imshow(profile[spread].to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-2, vmax=2)
    ax.set_xticks(range(len(spread)), spread, rotation=75, fontsize=7)
    ax.set_yticks(range(len(profile)), [str(i) for i in range(len(profile))])
    fig.colorbar(im, ax=ax)
    ax.set_title("cluster profiles (standardized centroids)")
    with warnings.catch_warnings():  # a few clusters: the margins cannot fit, the figure is fine as it is
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    return fig


def close(figs: Sequence[Figure]) -> None:
    """Free the figures' memory (matplotlib keeps them otherwise)."""
    for fig in figs:
        plt.close(fig)
