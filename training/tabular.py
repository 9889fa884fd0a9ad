"""Batch intent on any labeled feature table (CSV or Parquet).

String columns are categoricals; labels may be booleans, 0/1, yes/no or
true/false in any case; a stratified 70/30 split by seed holds out the test
part, and the decision threshold is chosen on the training part only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from models.intent_batch import BatchIntentModel
from training.evaluation import best_threshold, intent_metrics

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def parse_labels(values: pd.Series, column: str) -> np.ndarray:
    """Labels as 0/1 from booleans, numbers 0/1, or yes/no, true/false text.

    >>> parse_labels(pd.Series(["Yes", "no", "TRUE", "0"]), "y").tolist()
    [1, 0, 1, 0]
    """
    if values.isna().any():
        rows = values.index[values.isna()][:5].tolist()
        raise ValueError(f"label column {column!r} has empty values (rows {rows})")
    text = values.astype(str).str.strip().str.lower()
    text = text.replace({"1.0": "1", "0.0": "0"})
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        examples = sorted(set(values[bad].astype(str)))[:5]
        raise ValueError(f"label column {column!r} has values that are not yes/no, true/false or 0/1: {examples}")
    return text.isin(_TRUE).to_numpy().astype(int)


@dataclass(frozen=True, slots=True)
class TabularResult:
    model: BatchIntentModel
    metrics: dict[str, float]
    X_test: pd.DataFrame
    y_test: np.ndarray


def train_on_table(frame: pd.DataFrame, label: str, seed: int = 0) -> TabularResult:
    if label not in frame:
        raise ValueError(f"no label column {label!r} (columns: {list(frame.columns)})")
    y = parse_labels(frame[label], label)
    X = frame.drop(columns=[label])
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]) and not pd.api.types.is_bool_dtype(X[col]):
            X[col] = X[col].astype(object).where(X[col].notna(), None)
        elif pd.api.types.is_bool_dtype(X[col]):
            X[col] = X[col].astype(float)
    if np.bincount(y, minlength=2).min() < 4:
        raise ValueError(f"label column {label!r} needs at least 4 rows of each class")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    model = BatchIntentModel(random_state=seed, monotone=False).fit(X_train.reset_index(drop=True), y_train)
    threshold = best_threshold(y_train, model.predict_proba(X_train))
    metrics = intent_metrics(y_test, model.predict_proba(X_test), threshold)
    metrics.update({"n_train": float(len(y_train)), "n_test": float(len(y_test))})
    return TabularResult(model, metrics, X_test, y_test)
