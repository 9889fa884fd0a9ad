"""Batch intent on any labeled feature table (CSV or Parquet).

String columns are categoricals; a column whose values are mostly numbers
but holds some text is an error naming the rows (a typo turning a number
column into 6,000 categories helps no one) unless it is named categorical.
Labels may be booleans, 0/1, yes/no or true/false in any case. A stratified
70/30 split by seed holds out the test part; the decision threshold is chosen
on a validation part of the training rows the model was not fitted on.
With ``cv``, stratified k-fold figures per fold with mean and interval;
with ``tune``, a search (:mod:`training.search`) inside the training rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.errors import EmptyDataError, ParserError
from sklearn.model_selection import train_test_split

from models.intent_batch import BatchIntentModel
from training.crossval import CrossValidation, cross_validate, fit_with_threshold
from training.evaluation import intent_metrics
from training.search import tune as search

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class TableError(ValueError):
    """A feature table that cannot be trained on: the message names the file, column and rows."""


def read_features(path: str | Path) -> pd.DataFrame:
    """A labeled feature table from CSV or Parquet, as pandas."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    except EmptyDataError:
        raise TableError(f"{path}: the file is empty (no header, no rows)") from None
    except (ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise TableError(f"{path}: not a readable CSV or Parquet table ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise TableError(f"{path}: no rows (columns: {list(frame.columns)})")
    frame.attrs["source"] = str(path)
    return frame


def _where(frame: pd.DataFrame, rows: Sequence[Any]) -> str:
    """Rows as a reader finds them: CSV lines (the header is line 1), else row numbers."""
    source = str(frame.attrs.get("source", "the table"))
    positions = [int(frame.index.get_loc(r)) for r in rows]
    word, first = ("row", 1) if source.endswith((".parquet", ".pq")) else ("line", 2)
    return f"{word}{'s' if len(positions) > 1 else ''} {', '.join(str(p + first) for p in positions)}"


def parse_labels(values: pd.Series, column: str, frame: pd.DataFrame | None = None) -> np.ndarray:
    """Labels as 0/1 from booleans, numbers 0/1, or yes/no, true/false text.

    >>> parse_labels(pd.Series(["Yes", "no", "TRUE", "0"]), "y").tolist()
    [1, 0, 1, 0]
    """
    frame = frame if frame is not None else values.to_frame()
    source = frame.attrs.get("source", "the table")
    if values.isna().any():
        rows = values.index[values.isna()][:5].tolist()
        raise TableError(f"{source}: label column {column!r} is empty at {_where(frame, rows)}")
    text = values.astype(str).str.strip().str.lower()
    text = text.replace({"1.0": "1", "0.0": "0"})
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        examples = sorted(set(values[bad].astype(str)))[:5]
        raise TableError(
            f"{source}: label column {column!r} has values that are not yes/no, true/false or 0/1: "
            f"{examples} at {_where(frame, values.index[bad][:5].tolist())}"
        )
    return text.isin(_TRUE).to_numpy().astype(int)


def features_of(frame: pd.DataFrame, label: str, categorical: Sequence[str] = ()) -> pd.DataFrame:
    """The feature columns as the model reads them: numbers, booleans as 0/1,
    text as categories. A column of numbers with some text in it is refused."""
    source = frame.attrs.get("source", "the table")
    X = frame.drop(columns=[label])
    unknown = sorted(set(categorical) - set(X.columns))
    if unknown:
        raise TableError(f"{source}: no columns {unknown} to read as categorical (columns: {list(X.columns)})")
    for col in X.columns:
        values = X[col]
        if pd.api.types.is_bool_dtype(values):
            X[col] = values.astype(float)
        elif col in categorical or not pd.api.types.is_numeric_dtype(values):
            if col not in categorical:
                _refuse_text_in_numbers(frame, col)
            X[col] = values.astype(object).where(values.notna(), None)
    return X


def _refuse_text_in_numbers(frame: pd.DataFrame, col: str) -> None:
    values = frame[col]
    present = values.notna() & (values.astype(str).str.strip() != "")
    numbers = pd.to_numeric(values.where(present), errors="coerce")
    text = present & numbers.isna()
    if text.any() and numbers.notna().sum() >= present.sum() / 2:
        rows = values.index[text][:5].tolist()
        examples = sorted({str(v) for v in values[text]})[:5]
        raise TableError(
            f"{frame.attrs.get('source', 'the table')}: column {col!r} holds numbers but {int(text.sum())} "
            f"value(s) are text, {examples} at {_where(frame, rows)}: fix them, or pass --categorical {col} "
            "to read the column as categories"
        )


@dataclass(slots=True)
class TabularResult:
    """A table-trained model, its holdout figures and predictions, its parameters and any k-fold figures."""

    model: BatchIntentModel
    metrics: dict[str, float]
    X_test: pd.DataFrame
    y_test: np.ndarray
    p_test: np.ndarray
    params: dict[str, Any]  # the LightGBM parameters given (tuned or from a file), beside the defaults
    cv: dict[str, CrossValidation] = field(default_factory=dict)  # "default" and, tuned, "tuned"


def train_on_table(
    frame: pd.DataFrame,
    label: str,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    cv: int = 0,
    tune: int = 0,
    categorical: Sequence[str] = (),
) -> TabularResult:
    """Train the batch model on a labelled table: a stratified holdout, optional k-fold figures and search."""
    source = frame.attrs.get("source", "the table")
    if label not in frame:
        raise TableError(f"{source}: no label column {label!r} (columns: {list(frame.columns)})")
    y = parse_labels(frame[label], label, frame)
    X = features_of(frame, label, categorical)
    least = max(30, 10 * cv)  # each fold's model stops early and calibrates on rows of both classes
    counts = np.bincount(y, minlength=2)
    if counts.min() < least:
        raise TableError(
            f"{source}: label column {label!r} has {counts[1]} positive and {counts[0]} negative rows; "
            f"training {'with --cv ' + str(cv) + ' ' if cv else ''}needs at least {least} of each"
        )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    chosen = dict(params or {})
    cvs: dict[str, CrossValidation] = {}
    if cv:
        cvs["default"] = cross_validate(X, y, cv, seed, lambda X_, y_: dict(params or {}))
        if tune:
            cvs["tuned"] = cross_validate(X, y, cv, seed, lambda X_, y_: search(X_, y_, tune, seed, params))
    if tune:
        chosen = search(X_train, y_train, tune, seed, params)
    model, threshold = fit_with_threshold(X_train, y_train, chosen, seed)
    p = model.predict_proba(X_test)
    metrics = intent_metrics(y_test, p, threshold)
    metrics.update({"n_train": float(len(y_train)), "n_test": float(len(y_test))})
    return TabularResult(model, metrics, X_test, y_test, p, chosen, cvs)
