"""Training pipelines: all three models from an event table, tracked in MLflow.

``train_all`` builds point-in-time training sets, fits the batch intent model
(LightGBM), warm-starts the online intent model by replaying history with
delayed labels (prequential), fits the clusters, logs every run (parameters,
data summary, metrics, plots, the model and its feature spec) and registers
each model, moving the ``champion`` alias only when the new model beats the
current champion on the same evaluation set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sklearn.base
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
from training import provenance
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
from training.promotion import DEFAULT_MARGINS, Champion, judge
from training.summary import summarize

Progress = Callable[[str], None]


@dataclass(slots=True)
class TrainResult:
    """What ``train_all`` did: metrics, versions, promotions with their reasons, seconds, the models."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    promoted: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # why each champion moved or stayed
    seconds: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)  # registered name -> the model trained


class _Runs:
    """The MLflow runs of one training, or nothing at all (``track=False``)."""

    def __init__(self, on: bool, source: str, digest: str, rows: int, summary: dict[str, Any]) -> None:
        self.on, self.source, self.digest, self.rows, self.summary = on, source, digest, rows, summary

    @contextlib.contextmanager
    def run(self, experiment: str, name: str) -> Iterator[None]:
        if not self.on:
            yield
            return
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=f"{name}-{self.digest[:8]}"):
            provenance.log_dataset(self.source, self.digest, self.rows, context="training")
            mlflow.log_dict(self.summary, "data_summary.json")
            yield

    def log(self, params: dict[str, Any], metrics: dict[str, float], figures: Callable[[], dict[str, Any]]) -> None:
        """Parameters, metrics and plots (drawn only when they are logged)."""
        if not self.on:
            return
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        figs = figures()
        for name, fig in figs.items():
            mlflow.log_figure(fig, f"plots/{name}")
        close(list(figs.values()))


def _finish(
    result: TrainResult,
    name: str,
    model: Any,
    example: pd.DataFrame,
    features: list[str],
    metric: str,
    score: float,
    judge_champion: Callable[[Any, dict[str, str]], Champion],
    context: _Context,
) -> None:
    """Log the model; when registering, register it and move the alias if it
    beats the champion by the margin, logging why it did or did not."""
    result.models[name] = model
    if not context.track:
        return
    uri = registry.log_model(model, example, features)
    if not context.register:
        return
    current = registry.champion_version(name)
    champion = None
    if current is not None:
        loaded = registry.load(name)
        tags = registry.version_tags(name, current)
        champion = judge_champion(loaded, tags) if loaded is not None else Champion(current, None, why_not="is gone")
        champion = dataclasses.replace(champion, version=current)
        if champion.score is not None:
            mlflow.log_metric("champion_" + metric, champion.score)
    verdict = judge(metric, score, champion, context.margins.get(metric, 0.0))
    tags = {**provenance.tags(context.digest), "fitted_until_ms": str(context.fitted_until_ms), "run_id": _run_id(),
            **context.tags}  # fmt: skip
    version = registry.register(uri, name, description=verdict.reason, tags=tags)
    if verdict.promote:
        registry.promote(name, version)
    result.versions[name] = version
    result.promoted[name] = verdict.promote
    result.reasons[name] = verdict.reason
    mlflow.set_tags({"promoted_to_champion": str(verdict.promote), "promotion_reason": verdict.reason})


def _run_id() -> str:
    run = mlflow.active_run()
    return run.info.run_id if run is not None else ""


@dataclass(frozen=True, slots=True)
class _Context:
    track: bool
    register: bool
    margins: dict[str, float]
    digest: str
    fitted_until_ms: int  # the latest moment a model's fitted rows describe (a cutoff, or its label horizon)
    tags: dict[str, str] = field(default_factory=dict)  # more, on the version


def _same_settings(champion: Any, new: Any, tags: dict[str, str], fitted_until_ms: int) -> Champion | None:
    """A champion with the new model's settings, fitted on rows of this test
    period, would score as the new one does when refitted here: only the data
    differs, so the newer data wins (None: the settings differ)."""
    if champion.get_params() != new.get_params():
        return None
    theirs = int(tags.get("fitted_until_ms", "-1"))
    if theirs >= fitted_until_ms:
        return Champion("", None, why_not="has these settings and was fitted on data as new", keep=True)
    dated = "older data" if theirs >= 0 else "undated data"
    return Champion("", None, why_not=f"has these settings and was fitted on {dated}: the newer fit")


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
    register: bool | None = None,
    progress: Progress | None = None,
    source: str = "events",
    margins: dict[str, float] | None = None,
    track: bool = True,
) -> TrainResult:
    """Train, judge and register the three models on an event table.

    Cutoffs split in time into fit, validation and test parts, one horizon
    apart: the batch model is fitted on the first, its threshold chosen on the
    second, and it is judged on the third. The online model scores every
    cutoff before it learns it (prequential, labels arriving a horizon late):
    its threshold comes from its validation-period scores, its figures from its
    test-period ones. Clusters are fitted on four users in five and judged on
    the fifth (by a hash of the id, so the same users in every run). A champion
    is judged on the same rows; one whose fitted rows reach into them is judged
    as its settings refitted here. ``source`` names the table in the runs.

    ``table`` is an event table as :func:`features.table.read_table` reads
    it (a ``pyarrow.Table``). ``register`` (default: as ``track``) registers
    the models and moves the champion alias; ``track=False``: no MLflow at
    all (nothing logged, registered or read), for a notebook. The models are
    in the result's ``models`` either way.
    """
    if not isinstance(table, pa.Table):
        raise TypeError(
            f"train_all takes an event table (a pyarrow.Table: features.table.read_table(path)), "
            f"not a {type(table).__name__}"
        )
    register = track if register is None else register
    if register and not track:
        raise ValueError("registering a model means tracking it: register=False, or track=True")
    say = progress or (lambda _msg: None)
    result = TrainResult()
    fs = FeatureSet(DEFAULT_SPECS)
    started = time.perf_counter()
    offline = OfflineFeatures(fs, table)
    data = build(table, fs, horizon_ms=horizon_ms, seed=seed, offline=offline)
    fit, valid, test = data.splits(horizon_ms)
    if min(len(np.unique(part.y)) for part in (fit, valid, test)) < 2:
        raise ValueError(
            f"{source}: too little history to train on ({len(data.y):,} labelled moments; "
            "the fit, validation and test parts need purchases and non-purchases)"
        )
    summary = summarize(table).as_dict()
    digest = provenance.digest(table)
    result.seconds["features"] = time.perf_counter() - started
    say(f"training set: {len(fit.y):,} fit / {len(valid.y):,} validation / {len(test.y):,} test cutoffs")
    test_start = int(test.cutoffs["at"].min())
    data_params = {
        "events": summary["events"],
        "users": summary["users"],
        "horizon_ms": horizon_ms,
        "seed": seed,
        "fit_cutoffs": len(fit.y),
        "validation_cutoffs": len(valid.y),
        "test_cutoffs": len(test.y),
        "test_from_ms": test_start,
    }
    oracle = None
    if intent_truth is not None:
        latent = intent_truth.set_index("message_id")["latent_intent"]
        oracle = float(roc_auc_score(test.y, latent.reindex(test.cutoffs["message_id"]).to_numpy()))
    names = list(fs.names)
    margins = {**DEFAULT_MARGINS, **(margins or {})}
    fitted_until = int(fit.cutoffs["at"].max()) + horizon_ms

    runs = _Runs(track, source, digest, table.num_rows, summary)
    run = runs.run

    # batch intent
    with run(registry.INTENT_BATCH, "lightgbm"):
        t = time.perf_counter()
        model = BatchIntentModel(random_state=seed).fit(fit.X, fit.y)
        result.seconds["batch_fit"] = time.perf_counter() - t
        threshold = best_threshold(valid.y, model.predict_proba(valid.X))
        p = model.predict_proba(test.X)
        metrics = intent_metrics(test.y, p, threshold)
        if oracle is not None:
            metrics["oracle_roc_auc"] = oracle
        params = {**data_params, "best_iteration": model.best_iteration_, **provenance.flat(model.params_)}
        runs.log(params, metrics, lambda: intent_plots(test.y, p, model.importance()))

        def judge_batch(champion: BatchIntentModel, tags: dict[str, str]) -> Champion:
            how = ""
            if set(getattr(champion, "features_in_", ())) != set(fit.X.columns):
                return Champion("", None, why_not="reads other features than these rows hold")
            if provenance.seen_in(tags, test_start):
                same = _same_settings(champion, model, tags, fitted_until)
                if same is not None:
                    return same
                champion, how = sklearn.base.clone(champion).fit(fit.X, fit.y), "its settings refitted here"
            try:
                return Champion("", float(roc_auc_score(test.y, champion.predict_proba(test.X))), how)
            except KeyError as exc:
                return Champion("", None, why_not=f"reads features these rows lack ({exc})")

        context = _Context(track, register, margins, digest, fitted_until)
        _finish(result, registry.INTENT_BATCH, model, test.X.head(5), names, "roc_auc", metrics["roc_auc"],
                judge_batch, context)  # fmt: skip
        result.metrics["intent_batch"] = metrics
    say(f"batch intent: ROC-AUC {metrics['roc_auc']:.3f}" + (f" (oracle {oracle:.3f})" if oracle else ""))

    # online intent: warm start by replaying history, judged prequentially
    with run(registry.INTENT_ONLINE, "river-logistic"):
        t = time.perf_counter()
        purchases = purchases_of(table)
        online = OnlineIntentModel(horizon_ms=horizon_ms, seed=seed)
        scores = replay_online(online, data, purchases)
        result.seconds["online_replay"] = time.perf_counter() - t
        threshold = best_threshold(valid.y, scores[valid.cutoffs.index])
        p_online = scores[test.cutoffs.index]
        metrics = intent_metrics(test.y, p_online, threshold)
        evaluated = np.array(online.evaluated) if online.evaluated else np.zeros((0, 2))
        if len(evaluated) and len(np.unique(evaluated[:, 0])) == 2:
            metrics["prequential_roc_auc"] = float(roc_auc_score(evaluated[:, 0], evaluated[:, 1]))
        metrics["drift_detected"] = float(online.drift_detected_)
        metrics["learned"] = float(online.learned)
        runs.log({**data_params, **provenance.flat(online.get_params())}, metrics,
                 lambda: intent_plots(test.y, p_online))  # fmt: skip

        def judge_online(champion: OnlineIntentModel, tags: dict[str, str]) -> Champion:
            """A learned state is judged on what it has not learned; one that
            learned these rows is judged as a learner, replayed from scratch."""
            if not provenance.seen_in(tags, test_start):
                state = OnlineIntentModel.from_state(champion.to_state())
                theirs = replay_online(state, data.take(data.cutoffs["at"].to_numpy() >= test_start), purchases)
                return Champion("", float(roc_auc_score(test.y, theirs)), "its state, learning on")
            same = _same_settings(champion, online, tags, online_until)
            if same is not None:
                return same
            theirs = replay_online(sklearn.base.clone(champion), data, purchases)[test.cutoffs.index]
            return Champion("", float(roc_auc_score(test.y, theirs)), "its settings replayed from scratch")

        online_until = int(data.cutoffs["at"].max()) + horizon_ms
        context = _Context(track, register, margins, digest, online_until)
        _finish(result, registry.INTENT_ONLINE, online, test.X.head(5), names, "roc_auc", metrics["roc_auc"],
                judge_online, context)  # fmt: skip
        result.metrics["intent_online"] = metrics
    say(
        f"online intent: ROC-AUC {metrics['roc_auc']:.3f} on the test period (each moment scored before it was learned)"
    )

    # clusters: fitted on four users in five, judged on the fifth
    with run(registry.CLUSTERS, "kmeans"):
        t = time.perf_counter()
        habits = cluster_features(table, offline)
        numeric = user_vectors(table, habits, offline)
        held = held_out(numeric.index)
        previous = registry.load(registry.CLUSTERS) if register else None
        clusters = ClusterModel(random_state=seed, previous=previous, specs=habits.specs, words=HABIT_WORDS).fit(
            numeric.loc[~held]
        )
        result.seconds["clusters"] = time.perf_counter() - t
        judged = numeric.loc[held]
        held_score = cluster_silhouette(clusters, judged, seed=seed)
        metrics = {"silhouette": clusters.silhouette_, "held_out_silhouette": held_score, "k": float(clusters.k_)}
        if users_truth is not None:
            personas = users_truth.set_index("user_id")["persona"].reindex(judged.index)
            metrics["persona_ari"] = persona_ari(clusters.predict(judged), personas)
        params = {
            "k": clusters.k_,
            "k_range": str(clusters.k_range),
            "users": len(numeric),
            "held_out_users": len(judged),
        }
        runs.log(params, metrics, lambda: {"cluster_profiles.png": cluster_heatmap(clusters.profile())})
        if track:
            mlflow.log_dict({str(i): d for i, d in enumerate(clusters.descriptions_)}, "cluster_descriptions.json")

        def judge_clusters(champion: ClusterModel, tags: dict[str, str]) -> Champion:
            """On the held-out users, over the features the champion reads itself."""
            if tags.get("held_out") != HELD_OUT:
                return Champion("", None, why_not="was fitted on every user, those it would be judged on too")
            own = user_vectors(table, habits_of(champion), offline).loc[judged.index]
            return Champion("", cluster_silhouette(champion, own, seed=seed))

        end = int(pc.max(pc.cast(table.column("ts"), pa.int64())).as_py())
        context = _Context(track, register, margins, digest, end, {"held_out": HELD_OUT})
        _finish(result, registry.CLUSTERS, clusters, judged.head(5), list(habits.names), "silhouette", held_score,
                judge_clusters, context)  # fmt: skip
        result.metrics["clusters"] = metrics
    say(
        f"clusters: k={clusters.k_}, silhouette {clusters.silhouette_:.3f} (held-out users {held_score:.3f})"
        + (f", persona ARI {metrics['persona_ari']:.3f}" if "persona_ari" in metrics else "")
    )
    result.seconds["total"] = time.perf_counter() - started
    return result


HELD_OUT = "crc32(id) % 5 == 0"  # the users clusters are judged on, tagged on each version


def held_out(users: pd.Index) -> np.ndarray:
    """One user in five, the same in every run (a hash of the id): the users clusters are judged on."""
    return np.array([zlib.crc32(str(u).encode()) % 5 == 0 for u in users], dtype=bool)
