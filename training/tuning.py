"""Honest scores to tune thresholds on: the later part of an event table,
scored by the champion models as they would have scored it had they not
learned it.

The evaluation moments are the later 30% of an event table's training set
(one cutoff per user per 30 minutes, a horizon's gap before them). A champion
whose fitted rows reach into them (its ``fitted_until_ms`` tag is later than
their start, or it has none) would be judged on what it learned, so it is
scored as the promotion judges it: the batch model's settings refitted on the
moments before the evaluation period, the online model's settings replayed
from scratch with each moment scored before it is learned. A champion
fitted on earlier data scores them as registered (the online one learning
on as it would live). ``how`` says which, per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import sklearn.base
from numpy.typing import NDArray

from features.defaults import DEFAULT_SPECS
from features.offline import OfflineFeatures
from features.online import FeatureSet
from features.specs import DAY_MS, Spec
from models import registry
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from training.datasets import TrainingSet, build
from training.pipelines import purchases_of, replay_online
from training.provenance import fitted_into, fitted_until
from training.thresholds import choose, choose_size, on_grid

AS_REGISTERED = "as registered"
REFITTED = "its settings refitted on the moments before the evaluation period"
REPLAYED = "its settings replayed from scratch, each moment scored before it was learned"
LEARNING_ON = "its state, learning on through the evaluation period"


@dataclass(slots=True)
class EvaluationScores:
    """The evaluation moments: labels, users, times, and each model's scores."""

    y: NDArray[np.int64]
    users: NDArray
    at_ms: NDArray[np.int64]  # each moment's time
    cutoffs: pd.DataFrame  # the moments: profile_id, at (ms), message_id
    start_ms: int  # the first evaluation moment
    scores: dict[str, NDArray[np.float64]] = field(default_factory=dict)  # intent_batch, intent_online
    how: dict[str, str] = field(default_factory=dict)  # intent_batch / intent_online -> how it was scored
    offline: OfflineFeatures | None = field(default=None, repr=False)  # the table, indexed once

    def features(self, specs: list[Spec]) -> pd.DataFrame:
        """Other features at the same moments (a row each), from the table as already indexed."""
        assert self.offline is not None
        return self.offline.at(self.cutoffs, FeatureSet(specs))  # the same (default) lateness

    @property
    def seen_in_training(self) -> bool:
        """Whether a model's own fit reached into the period (so its settings, not it, scored it)."""
        return any(h in (REFITTED, REPLAYED) for h in self.how.values())


def fitted_until_of(versions: dict[str, str]) -> dict[str, int | None]:
    """Per score (``intent_batch``, ``intent_online``), the ``fitted_until_ms``
    tag of the registered version that makes it (``versions``: registered name
    to version, as a service's scorers hold them); None when there is none."""
    out: dict[str, int | None] = {}
    for name, made in ((registry.INTENT_BATCH, "intent_batch"), (registry.INTENT_ONLINE, "intent_online")):
        version = versions.get(name, "")
        out[made] = fitted_until(registry.version_tags(name, version)) if version.isdigit() else None
    return out


def evaluation_scores(
    table: pa.Table,
    online: OnlineIntentModel,
    batch: BatchIntentModel | None = None,
    fitted_until_ms: dict[str, int | None] | None = None,
    horizon_ms: int = DAY_MS,
    seed: int = 0,
) -> EvaluationScores:
    """Score the table's evaluation moments with each model, none on what it
    learned (see the module). ``fitted_until_ms``: per model
    (``intent_batch``, ``intent_online``) the latest moment its fit describes,
    None when unknown (taken as seen). ValueError when the period lacks buyers
    or non-buyers, or the earlier moments are too few to refit on."""
    until = fitted_until_ms or {}
    offline = OfflineFeatures(FeatureSet(DEFAULT_SPECS), table)
    data = build(table, offline.features, horizon_ms=horizon_ms, seed=seed, offline=offline)
    before, evaluation = data.split_by_time(gap_ms=horizon_ms)
    if len(np.unique(evaluation.y)) < 2:
        raise ValueError("the evaluation period (the later 30% of the moments) needs buyers and non-buyers")
    start = int(evaluation.cutoffs["at"].min())
    out = EvaluationScores(
        y=evaluation.y.astype(np.int64),
        users=evaluation.cutoffs["profile_id"].to_numpy(),
        at_ms=evaluation.cutoffs["at"].to_numpy().astype(np.int64),
        cutoffs=evaluation.cutoffs.reset_index(drop=True),
        offline=offline,
        start_ms=start,
    )
    if batch is not None:
        out.scores["intent_batch"], out.how["intent_batch"] = _batch_scores(
            batch, before, evaluation, fitted_into(until.get("intent_batch"), start)
        )
    purchases = purchases_of(table)
    if fitted_into(until.get("intent_online"), start):
        learner = sklearn.base.clone(online)
        out.scores["intent_online"] = replay_online(learner, data, purchases)[evaluation.cutoffs.index]
        out.how["intent_online"] = REPLAYED
    else:
        state = OnlineIntentModel.from_state(online.to_state())
        out.scores["intent_online"] = replay_online(state, evaluation, purchases)
        out.how["intent_online"] = LEARNING_ON
    return out


def _batch_scores(
    batch: BatchIntentModel, before: TrainingSet, evaluation: TrainingSet, seen: bool
) -> tuple[NDArray[np.float64], str]:
    if not seen:
        return np.asarray(batch.predict_proba(evaluation.X), dtype=np.float64), AS_REGISTERED
    if len(np.unique(before.y)) < 2:
        raise ValueError(
            "the batch champion was fitted on the evaluation period, and the moments before it are too few "
            "to refit its settings on: tune on a longer table, or on events later than its training"
        )
    columns = list(getattr(batch, "features_in_", before.X.columns))
    refit = sklearn.base.clone(batch).fit(before.X[columns], before.y)
    return np.asarray(refit.predict_proba(evaluation.X), dtype=np.float64), REFITTED


@dataclass(slots=True)
class Choice:
    """A threshold chosen for one comparison: the value to write, the values
    a written threshold sees (``grid``, negated for ``<``/``<=``), the
    chosen value on that grid, and the moments it flags as the rule would."""

    written: float
    grid: NDArray[np.float64]
    on_grid: float
    flagged: NDArray[np.bool_]


_FLAGS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}


def choose_threshold(
    values: NDArray,
    op: str,
    y: NDArray,
    metric: str,
    goal: float,
    users: NDArray,
    at_ms: NDArray,
    recency: bool = False,
) -> Choice:
    """The threshold for ``values OP threshold`` meeting a target (``precision``,
    ``recall`` or ``size``), among the values one written with 4 decimals can
    take, flagging exactly the moments the rule flags: a missing value never
    (``recency``: it is infinitely long ago, as ``since()`` reads it). For
    ``<``/``<=`` the values are negated, so precision still takes the threshold
    with the most members. ValueError when no (finite) threshold meets it.

    >>> y, users, at = np.array([0, 1, 1]), np.array(["a", "b", "c"]), np.zeros(3)
    >>> choose_threshold(np.array([5.0, 1.0, 2.0]), "<=", y, "precision", 1.0, users, at).written
    2.0
    >>> never = choose_threshold(np.array([np.nan, 9.0, np.nan]), ">=", np.array([1, 0, 1]), "precision", 1.0,
    ...                          users, at, recency=True)  # never seen: long ago, above any finite threshold
    >>> never.written, never.flagged.tolist()
    (9.0001, [True, False, True])
    """
    values = np.asarray(values, dtype=np.float64)
    if recency:
        values = np.where(np.isnan(values), np.inf, values)
    below = op in ("<", "<=")
    seen = -values if below else values
    seen = np.where(np.isnan(seen), -np.inf, seen)  # a missing value is never flagged
    grid = on_grid(seen, {"<": ">", "<=": ">="}.get(op, op))
    # a value above every finite one (a recency never seen, for >=) is flagged by any threshold above those:
    # the lowest such written value stands in for it (infinity is no value to write)
    finite = grid[np.isfinite(grid)]
    grid = np.where(grid == np.inf, (np.round(finite.max() * 1e4) + 1) / 1e4 if len(finite) else 0.0, grid)
    value = choose_size(grid, users, at_ms, goal) if metric == "size" else choose(y, grid, metric, goal)
    written = -value if below else value
    written += 0.0  # never -0.0 (and finite: choose takes finite thresholds only)
    return Choice(written, grid, value, _FLAGS[op](values, written))
