"""Training decides on rows a model was not fitted on.

Every model records what it was fitted on (the batch model its rows, the
online model the moments it learned, the clusters their users), and every
prediction checks it: a threshold or a promotion may read only predictions
made on rows the predicting model had not been fitted on, and online scores
made before their moment was learned (prequential). Three runs: a first
version, the same data again (a champion judged as registered), and an
earlier part of the data (a champion whose fitted rows reach into the
evaluation period, judged as its settings refitted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import training.pipelines as pipelines
from models import registry
from models.clusters import ClusterModel
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from training.synthetic import generate


class Ledger:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self.clean: set[float] = set()  # predictions made on rows their model was not fitted on
        self.decisions: list[tuple[str, np.ndarray]] = []
        self.checked = 0


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Ledger:
    book = Ledger()
    real_build = pipelines.build

    def build(*args: Any, **kwargs: Any) -> Any:
        data = real_build(*args, **kwargs)
        data.X.index = data.cutoffs["message_id"].to_numpy()  # each row known by its moment, whatever the run
        return data

    monkeypatch.setattr(pipelines, "build", build)

    fit, proba = BatchIntentModel.fit, BatchIntentModel.predict_proba

    def batch_fit(self: BatchIntentModel, X: Any, y: Any) -> BatchIntentModel:
        self.fitted_rows_ = set(X.index)  # pickled with the model: a champion keeps it
        return fit(self, X, y)

    def batch_proba(self: BatchIntentModel, X: Any) -> np.ndarray:
        seen = set(X.index) & getattr(self, "fitted_rows_", set())
        if seen:
            book.violations.append(f"batch model predicted {len(seen)} rows it was fitted on")
        p = proba(self, X)
        book.clean.update(p.tolist()) if not seen else None
        book.checked += len(p)
        return p

    monkeypatch.setattr(BatchIntentModel, "fit", batch_fit)
    monkeypatch.setattr(BatchIntentModel, "predict_proba", batch_proba)

    sample, learn, score = OnlineIntentModel._sample, OnlineIntentModel._learn, OnlineIntentModel.score

    def online_sample(self: OnlineIntentModel, user: str, at_ms: int, vector: Any, p: float) -> None:
        sample(self, user, at_ms, vector, p)
        queue = self._pending.get(user)
        if queue and queue[-1][0] == at_ms:
            self.__dict__.setdefault("moments_", {})[id(queue[-1][1])] = (user, at_ms)

    def online_learn(self: OnlineIntentModel, taken: Any, label: bool) -> None:
        learn(self, taken, label)
        moment = self.__dict__.get("moments_", {}).get(id(taken[1]))
        self.__dict__.setdefault("learned_moments_", set()).add(moment)

    def online_score(self: OnlineIntentModel, user: str, vector: Any, at_ms: int, sample: bool = True) -> float:
        p = score(self, user, vector, at_ms, sample)
        if (user, at_ms) in self.__dict__.get("learned_moments_", set()):
            book.violations.append(f"online model scored a moment it had learned: {(user, at_ms)}")
        else:
            book.clean.add(p)
        book.checked += 1
        return p

    monkeypatch.setattr(OnlineIntentModel, "_sample", online_sample)
    monkeypatch.setattr(OnlineIntentModel, "_learn", online_learn)
    monkeypatch.setattr(OnlineIntentModel, "score", online_score)

    cluster_fit, cluster_predict = ClusterModel.fit, ClusterModel.predict

    def clusters_fit(self: ClusterModel, X: Any) -> ClusterModel:
        self.fitted_users_ = set(X.index)
        return cluster_fit(self, X)

    def clusters_predict(self: ClusterModel, X: Any) -> np.ndarray:
        seen = set(X.index) & getattr(self, "fitted_users_", set())
        if seen:
            book.violations.append(f"clusters judged on {len(seen)} users they were fitted on")
        book.checked += len(X)
        return cluster_predict(self, X)

    monkeypatch.setattr(ClusterModel, "fit", clusters_fit)
    monkeypatch.setattr(ClusterModel, "predict", clusters_predict)

    threshold, auc = pipelines.best_threshold, pipelines.roc_auc_score

    def decide_threshold(y: Any, p: Any) -> float:
        book.decisions.append(("threshold", np.asarray(p, dtype=float)))
        return threshold(y, p)

    def judge_auc(y: Any, p: Any) -> float:
        book.decisions.append(("promotion", np.asarray(p, dtype=float)))
        return float(auc(y, p))

    monkeypatch.setattr(pipelines, "best_threshold", decide_threshold)
    monkeypatch.setattr(pipelines, "roc_auc_score", judge_auc)
    return book


def test_no_threshold_or_promotion_decision_reads_a_row_its_model_was_fitted_on(tmp_path: Path, ledger: Ledger) -> None:
    registry.configure(f"sqlite:///{tmp_path}/mlflow.db")
    history = generate(users=400, days=12, seed=11)
    first = pipelines.train_all(history.events, seed=0)
    assert all(first.promoted.values()), first.reasons
    again = pipelines.train_all(history.events, seed=0)
    ts = pc.cast(history.events.column("ts"), pa.int64())
    earlier = history.events.filter(pc.less(ts, pc.quantile(ts, 0.5)[0]))
    third = pipelines.train_all(earlier, seed=1)  # other settings (seeds): champions refitted, replayed

    assert ledger.violations == []
    kinds = [kind for kind, _ in ledger.decisions]
    assert kinds.count("threshold") == 6  # each run: the batch model's and the online model's own
    for kind, p in ledger.decisions:
        unclean = [v for v in p.tolist() if v not in ledger.clean]
        assert not unclean, f"a {kind} decision read {len(unclean)} scores not made on unseen rows"
    assert ledger.checked > 1000
    # why each champion moved or stayed is said, and each was judged as the case asks
    for result in (again, third):
        assert set(result.reasons) == {registry.INTENT_BATCH, registry.INTENT_ONLINE, registry.CLUSTERS}
    assert not again.promoted[registry.INTENT_BATCH] and "margin" in again.reasons[registry.INTENT_BATCH]
    # the online champion learned the test period: the same settings on the same data, kept
    assert not again.promoted[registry.INTENT_ONLINE] and "these settings" in again.reasons[registry.INTENT_ONLINE], (
        again.reasons
    )
    assert "silhouette" in again.reasons[registry.CLUSTERS]
    assert "its settings refitted here" in third.reasons[registry.INTENT_BATCH]
    assert "replayed from scratch" in third.reasons[registry.INTENT_ONLINE]


def test_a_champion_of_the_same_settings_on_undated_data_gives_way_to_the_newer_fit(tmp_path: Path) -> None:
    """A champion registered before versions were dated, with the new model's
    settings, cannot be judged apart from its data: the new fit takes over."""
    from mlflow.tracking import MlflowClient

    registry.configure(f"sqlite:///{tmp_path}/mlflow.db")
    history = generate(users=300, days=10, seed=12)
    pipelines.train_all(history.events, seed=0)
    client = MlflowClient()
    for name in (registry.INTENT_BATCH, registry.INTENT_ONLINE, registry.CLUSTERS):
        version = registry.champion_version(name)
        assert version is not None
        for tag in ("fitted_until_ms", "held_out"):
            client.delete_model_version_tag(name, version, tag)
    ts = pc.cast(history.events.column("ts"), pa.int64())
    earlier = history.events.filter(pc.less(ts, pc.quantile(ts, 0.6)[0]))
    result = pipelines.train_all(earlier, seed=0)
    assert result.promoted[registry.INTENT_BATCH] and "undated data" in result.reasons[registry.INTENT_BATCH]
    assert result.promoted[registry.INTENT_ONLINE]
    assert result.promoted[registry.CLUSTERS] and "fitted on every user" in result.reasons[registry.CLUSTERS]
