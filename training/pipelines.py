"""Training pipelines: all three models from an event table, tracked in MLflow.

``train_all`` builds point-in-time training sets, fits the batch intent model
(LightGBM), warm-starts the online intent model by replaying history with
delayed labels (prequential), fits the clusters, logs every run (parameters,
data summary, metrics, plots, the model and its feature spec) and registers
each model, moving the ``champion`` alias only when the new model beats the
current champion on the same evaluation set.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import roc_auc_score

from features.defaults import DEFAULT_SPECS, HABIT_WORDS
from features.events import PURCHASE
from features.offline import OfflineFeatures
from features.online import FeatureSet
from features.specs import DAY_MS
from models import registry
from models.clusters import ClusterModel
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from training.datasets import TrainingSet, build, cluster_features, habits_of, user_vectors
from training.evaluation import (
    best_threshold,
    close,
    cluster_heatmap,
    cluster_silhouette,
    intent_metrics,
    intent_plots,
    persona_ari,
)
from training.summary import summarize

Progress = Callable[[str], None]


@dataclass(slots=True)
class TrainResult:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    promoted: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _log_figures(figs: dict[str, Any]) -> None:
    for name, fig in figs.items():
        mlflow.log_figure(fig, f"plots/{name}")
    close(list(figs.values()))


def _finish(
    result: TrainResult,
    name: str,
    model: Any,
    example: pd.DataFrame,
    features: list[str],
    score_current: Callable[[Any], float],
    score_new: float,
    register: bool,
) -> None:
    uri = registry.log_model(model, example, features)
    if not register:
        return
    version = registry.register(uri, name)
    result.versions[name] = version
    current = registry.champion_version(name)
    better = True
    if current is not None:
        champion = registry.load(name)
        current_score = score_current(champion) if champion is not None else float("-inf")
        mlflow.log_metric("champion_score_same_eval", current_score)
        better = score_new > current_score
    if better:
        registry.promote(name, version)
    result.promoted[name] = better
    mlflow.set_tag("promoted_to_champion", str(better))


def purchases_of(table: pa.Table) -> pd.DataFrame:
    """The purchases of an event table: ``at`` (ms) and ``profile_id``."""
    ts = pc.cast(table.column("ts"), pa.int64()).to_numpy()
    is_buy = table.column("type").to_numpy(zero_copy_only=False) == PURCHASE
    users = table.column("profile_id").to_numpy(zero_copy_only=False)
    return pd.DataFrame({"at": ts[is_buy], "profile_id": users[is_buy]})


def replay_online(model: OnlineIntentModel, data: TrainingSet, purchases: pd.DataFrame) -> np.ndarray:
    """Prequential replay: score each cutoff in time order (sampling it), let
    purchases label pending samples; returns the score at each cutoff."""
    cut = data.cutoffs
    order = np.argsort(cut["at"].to_numpy(), kind="stable")
    records = data.X.to_dict("records")
    buys = list(zip(purchases["at"].to_numpy().tolist(), purchases["profile_id"].tolist(), strict=True))
    heapq.heapify(buys)
    scores = np.empty(len(cut))
    users = cut["profile_id"].to_numpy()
    ats = cut["at"].to_numpy()
    for i in order.tolist():
        at = int(ats[i])
        while buys and buys[0][0] <= at:
            when, who = heapq.heappop(buys)
            model.observe_purchase(who, when)
        scores[i] = model.score(users[i], records[i], at)
    while buys:
        when, who = heapq.heappop(buys)
        model.observe_purchase(who, when)
    return scores


def train_all(
    table: pa.Table,
    users_truth: pd.DataFrame | None = None,
    intent_truth: pd.DataFrame | None = None,
    horizon_ms: int = DAY_MS,
    seed: int = 0,
    register: bool = True,
    progress: Progress | None = None,
) -> TrainResult:
    say = progress or (lambda _msg: None)
    result = TrainResult()
    fs = FeatureSet(DEFAULT_SPECS)
    started = time.perf_counter()
    offline = OfflineFeatures(fs, table)
    data = build(table, fs, horizon_ms=horizon_ms, seed=seed, offline=offline)
    train, test = data.split_by_time()
    summary = summarize(table).as_dict()
    result.seconds["features"] = time.perf_counter() - started
    say(f"training set: {len(train.y):,} train / {len(test.y):,} test cutoffs")
    data_params = {
        "events": summary["events"],
        "users": summary["users"],
        "horizon_ms": horizon_ms,
        "seed": seed,
        "train_cutoffs": len(train.y),
        "test_cutoffs": len(test.y),
    }
    oracle = None
    if intent_truth is not None:
        latent = intent_truth.set_index("message_id")["latent_intent"]
        oracle = float(roc_auc_score(test.y, latent.reindex(test.cutoffs["message_id"]).to_numpy()))
    names = list(fs.names)

    # batch intent
    mlflow.set_experiment(registry.INTENT_BATCH)
    with mlflow.start_run(run_name="lightgbm"):
        t = time.perf_counter()
        model = BatchIntentModel(random_state=seed).fit(train.X, train.y)
        result.seconds["batch_fit"] = time.perf_counter() - t
        threshold = best_threshold(train.y, model.predict_proba(train.X))
        p = model.predict_proba(test.X)
        metrics = intent_metrics(test.y, p, threshold)
        if oracle is not None:
            metrics["oracle_roc_auc"] = oracle
        mlflow.log_params({**data_params, "best_iteration": model.best_iteration_, "calibration": model.calibration})
        mlflow.log_dict(summary, "data_summary.json")
        mlflow.log_metrics(metrics)
        _log_figures(intent_plots(test.y, p, model.importance()))
        _finish(
            result,
            registry.INTENT_BATCH,
            model,
            test.X.head(5),
            names,
            lambda champ: float(roc_auc_score(test.y, champ.predict_proba(test.X))),
            metrics["roc_auc"],
            register,
        )
        result.metrics["intent_batch"] = metrics
    say(f"batch intent: ROC-AUC {metrics['roc_auc']:.3f}" + (f" (oracle {oracle:.3f})" if oracle else ""))

    # online intent: warm start by replaying history, evaluated prequentially
    mlflow.set_experiment(registry.INTENT_ONLINE)
    with mlflow.start_run(run_name="river-logistic"):
        t = time.perf_counter()
        online = OnlineIntentModel(horizon_ms=horizon_ms, seed=seed)
        ts = pc.cast(table.column("ts"), pa.int64()).to_numpy()
        is_buy = table.column("type").to_numpy(zero_copy_only=False) == PURCHASE
        purchases = pd.DataFrame(
            {"at": ts[is_buy], "profile_id": table.column("profile_id").to_numpy(zero_copy_only=False)[is_buy]}
        )
        scores = replay_online(online, data, purchases)
        result.seconds["online_replay"] = time.perf_counter() - t
        test_mask = data.cutoffs["at"].to_numpy() >= test.cutoffs["at"].min()
        p_online = scores[test_mask]
        y_online = data.y[test_mask]
        metrics = intent_metrics(y_online, p_online, threshold)
        evaluated = np.array(online.evaluated) if online.evaluated else np.zeros((0, 2))
        if len(evaluated) and len(np.unique(evaluated[:, 0])) == 2:
            metrics["prequential_roc_auc"] = float(roc_auc_score(evaluated[:, 0], evaluated[:, 1]))
        metrics["drift_detected"] = float(online.drift_detected_)
        metrics["learned"] = float(online.learned)
        mlflow.log_params({**data_params, "kind": online.kind, "sample_every_ms": online.sample_every_ms})
        mlflow.log_metrics(metrics)
        _log_figures(intent_plots(y_online, p_online))

        def online_auc(champ: OnlineIntentModel) -> float:
            return float(roc_auc_score(test.y, [champ.predict(champ.features(r)) for r in test.X.to_dict("records")]))

        _finish(result, registry.INTENT_ONLINE, online, test.X.head(5), names, online_auc, online_auc(online), register)
        result.metrics["intent_online"] = metrics
    say(f"online intent: ROC-AUC {metrics['roc_auc']:.3f} (prequential, delayed labels)")

    # clusters
    mlflow.set_experiment(registry.CLUSTERS)
    with mlflow.start_run(run_name="kmeans"):
        t = time.perf_counter()
        habits = cluster_features(table, offline)
        numeric = user_vectors(table, habits, offline)
        previous = registry.load(registry.CLUSTERS) if register else None
        clusters = ClusterModel(random_state=seed, previous=previous, specs=habits.specs, words=HABIT_WORDS).fit(
            numeric
        )
        result.seconds["clusters"] = time.perf_counter() - t
        metrics = {"silhouette": clusters.silhouette_, "k": float(clusters.k_)}
        if users_truth is not None:
            personas = users_truth.set_index("user_id")["persona"].reindex(numeric.index)
            metrics["persona_ari"] = persona_ari(clusters.labels_, personas)
        mlflow.log_params({"k": clusters.k_, "k_range": str(clusters.k_range), "users": len(numeric)})
        mlflow.log_metrics(metrics)
        mlflow.log_dict({str(i): d for i, d in enumerate(clusters.descriptions_)}, "cluster_descriptions.json")
        _log_figures({"cluster_profiles.png": cluster_heatmap(clusters.profile())})

        def silhouette(champ: ClusterModel) -> float:
            """Each model on the same users, over the features it reads itself."""
            own = numeric if champ is clusters else user_vectors(table, habits_of(champ), offline)
            return cluster_silhouette(champ, own, seed=seed)

        _finish(
            result,
            registry.CLUSTERS,
            clusters,
            numeric.head(5),
            list(habits.names),
            silhouette,
            silhouette(clusters),
            register,
        )
        result.metrics["clusters"] = metrics
    say(
        f"clusters: k={clusters.k_}, silhouette {clusters.silhouette_:.3f}"
        + (f", persona ARI {metrics['persona_ari']:.3f}" if "persona_ari" in metrics else "")
    )
    result.seconds["total"] = time.perf_counter() - started
    return result
