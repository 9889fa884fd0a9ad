"""Both intent models on the real Taobao events, with a horizon suited to a
two-hour slice (purchase within 30 minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from features.defaults import DEFAULT_SPECS
from features.online import FeatureSet
from features.specs import HourOfDay, Weekend
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from training.datasets import build
from training.importers import import_taobao
from training.pipelines import purchases_of, replay_online

HORIZON_MS = 30 * 60_000


@pytest.mark.realdata
def test_intent_models_on_taobao(taobao_dir: Path) -> None:
    table, _ = import_taobao([taobao_dir / "UserBehavior_2017-11-26_0100-0310.csv"])
    # a two-hour slice: the clock only says how late in the slice a moment is, so it is left out
    fs = FeatureSet([s for s in DEFAULT_SPECS if not isinstance(s, HourOfDay | Weekend)])
    data = build(table, fs, horizon_ms=HORIZON_MS, every_ms=5 * 60_000, seed=0)
    train, test = data.split_by_time()
    assert 0.005 < data.y.mean() < 0.2
    # few positives (about 450 in training): small trees
    batch = BatchIntentModel(
        random_state=0, params={"num_leaves": 4, "min_data_in_leaf": 400, "learning_rate": 0.02}
    ).fit(train.X, train.y)
    batch_auc = roc_auc_score(test.y, batch.predict_proba(test.X))
    online = OnlineIntentModel(horizon_ms=HORIZON_MS, sample_every_ms=5 * 60_000)
    scores = replay_online(online, data, purchases_of(table))
    later = data.cutoffs["at"].to_numpy() >= test.cutoffs["at"].min()
    online_auc = roc_auc_score(data.y[later], scores[later])
    print(
        f"taobao: cutoffs {len(data.y)}, positive rate {data.y.mean():.4f}, "
        f"batch ROC-AUC {batch_auc:.3f}, online ROC-AUC {online_auc:.3f}, learned {online.learned}"
    )
    # a 2-hour slice holds one or two events for most users, and most buys come with no cart add in it:
    # the signal is weak (cart adds alone score 0.50, views 0.55); the batch model must still find it
    assert batch_auc > 0.52
    assert online.learned > 10_000 and scores.min() >= 0.0 and scores.max() <= 1.0
    assert np.isfinite(batch.predict_proba(test.X)).all()
