"""A hyperparameter search for the batch intent model (Optuna, TPE, seeded).

Each trial fits on 80% of the rows it is given and is scored by PR-AUC on
the other 20% (stratified); LightGBM stops early inside each fit, on the
model's own holdout. Called on the training rows of a fold or a split, the
search never sees the rows the chosen model is judged on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd
from lightgbm.basic import _ConfigAliases
from sklearn.metrics import average_precision_score
from sklearn.model_selection import train_test_split

from models.intent_batch import DEFAULT_PARAMS, BatchIntentModel
from training.crossval import stratified_tail

SEARCHED = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "bagging_fraction", "lambda_l2")


def space(trial: optuna.Trial) -> dict[str, Any]:
    """The parameters a trial draws: learning rate, leaves, leaf size, feature and row fractions, L2."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 300, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def tune(
    X: pd.DataFrame, y: np.ndarray, trials: int, seed: int, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters (over ``base``) of the best of ``trials`` trials; the
    defaults are trial 0, so the search returns them unless it finds better."""
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        params = {**(base or {}), **space(trial)}
        model = BatchIntentModel(params, random_state=seed, monotone=False).fit(*stratified_tail(X_fit, y_fit, seed))
        return float(average_precision_score(y_val, model.predict_proba(X_val)))

    leaf = min(300, max(20, int(len(y_fit) * 0.8) // 100))  # as BatchIntentModel.fit sets it
    baseline = {k: DEFAULT_PARAMS[k] for k in SEARCHED if k in DEFAULT_PARAMS} | {"min_data_in_leaf": leaf}
    study.enqueue_trial({**baseline, **{k: v for k, v in (base or {}).items() if k in baseline}})
    study.optimize(objective, n_trials=trials)
    return {**(base or {}), **study.best_params}


def unknown_params(params: Mapping[str, Any]) -> list[str]:
    """The names in ``params`` that are no LightGBM parameter nor an alias of one.

    >>> unknown_params({"num_leaves": 7, "eta": 0.1, "num_leavs": 7})
    ['num_leavs']
    """
    known = {alias for aliases in _ConfigAliases._get_all_param_aliases().values() for alias in aliases}
    return sorted(set(params) - known)
