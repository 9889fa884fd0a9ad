"""Both intent models on the real Taobao events, with a horizon suited to a
two-hour slice (purchase within 30 minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from features.defaults import DEFAULT_SPECS
from features.online import FeatureSet
from features.specs import HourOfDay, Weekend
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from training.datasets import TrainingSet, build
from training.importers import import_taobao
from training.pipelines import purchases_of, replay_online

HORIZON_MS = 30 * 60_000


@pytest.fixture(scope="module")
def taobao_set(taobao_dir: Path) -> tuple[pa.Table, TrainingSet]:
    table, _ = import_taobao([taobao_dir / "UserBehavior_2017-11-26_0100-0310.csv"])
    # a two-hour slice: the clock only says how late in the slice a moment is, so it is left out
    fs = FeatureSet([s for s in DEFAULT_SPECS if not isinstance(s, HourOfDay | Weekend)])
    return table, build(table, fs, horizon_ms=HORIZON_MS, every_ms=5 * 60_000, seed=0)


def online_figures(table: pa.Table, data: TrainingSet) -> tuple[float, float, float, int]:
    """The online model replayed over the slice, scored prequentially on the
    test period: ROC-AUC, mean score, positive rate, samples learned."""
    _, test = data.split_by_time()
    online = OnlineIntentModel(horizon_ms=HORIZON_MS, sample_every_ms=5 * 60_000)
    scores = replay_online(online, data, purchases_of(table))
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    later = data.cutoffs["at"].to_numpy() >= test.cutoffs["at"].min()
    return (
        roc_auc_score(data.y[later], scores[later]),
        float(scores[later].mean()),
        float(data.y[later].mean()),
        online.learned,
    )


def check_online(auc: float, mean_score: float, positive_rate: float, learned: int) -> None:
    """What the online model must show on this slice. It learns (over 10,000
    samples), its probabilities are calibrated in the large (the mean score
    within 0.02 of the positive rate, about 0.011), and its ranking does not
    fall below what it was when this was written (0.479): on two hours of
    Taobao the online model ranks no better than chance, a gap the batch
    model does not have (0.546), noted for the models' issue."""
    assert learned > 10_000, learned
    assert abs(mean_score - positive_rate) < 0.02, (mean_score, positive_rate)
    assert auc > 0.46, auc


@pytest.mark.realdata
def test_intent_models_on_taobao(taobao_set: tuple[pa.Table, TrainingSet]) -> None:
    table, data = taobao_set
    train, test = data.split_by_time()
    assert 0.005 < data.y.mean() < 0.2
    # few positives (about 450 in training): small trees
    batch = BatchIntentModel(
        random_state=0, params={"num_leaves": 4, "min_data_in_leaf": 400, "learning_rate": 0.02}
    ).fit(train.X, train.y)
    batch_auc = roc_auc_score(test.y, batch.predict_proba(test.X))
    auc, mean_score, rate, learned = online_figures(table, data)
    print(
        f"taobao: cutoffs {len(data.y)}, positive rate {data.y.mean():.4f}, "
        f"batch ROC-AUC {batch_auc:.3f}, online ROC-AUC {auc:.3f}, mean online score {mean_score:.4f}, "
        f"learned {learned}"
    )
    # a 2-hour slice holds one or two events for most users, and most buys come with no cart add in it:
    # the signal is weak (cart adds alone score 0.50, views 0.55); the batch model must still find it
    assert batch_auc > 0.52
    assert np.isfinite(batch.predict_proba(test.X)).all()
    check_online(auc, mean_score, rate, learned)


@pytest.mark.realdata
def test_the_online_check_fails_when_the_model_does_not_learn(
    taobao_set: tuple[pa.Table, TrainingSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OnlineIntentModel, "_learn", lambda self, sample, label: None)
    with pytest.raises(AssertionError):
        check_online(*online_figures(*taobao_set))
