"""Training and scoring costs: batch fit against bare LightGBM, the whole
`segflow train` on 1M events, River predict/learn rates, single-row against
batched scoring."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np

from bench.report import best_of, emit
from features.defaults import DEFAULT_SPECS
from features.online import FeatureSet
from models import registry, river_fast
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from training.datasets import build
from training.pipelines import train_all
from training.synthetic import generate


def main() -> None:
    fs = FeatureSet(DEFAULT_SPECS)
    history = generate(users=3000, days=21, seed=7)
    train, test = build(history.events, fs, seed=0).split_by_time()

    model = BatchIntentModel(random_state=0)
    ours = best_of(2, lambda: model.fit(train.X, train.y))
    frame = model._frame(train.X)
    rounds = model.booster_.current_iteration()
    params = model.params_
    bare = best_of(2, lambda: lgb.train(params, lgb.Dataset(frame, train.y), num_boost_round=rounds))
    emit(
        "training",
        "train_vs_bare_lightgbm_ratio",
        ours / bare,
        "x",
        "<= 1.5",
        fit_s=round(ours, 2),
        bare_s=round(bare, 2),
        rounds=rounds,
        rows=len(train.y),
    )

    rows = test.X.head(2000).to_dict("records")
    single = best_of(2, lambda: [model.score_one(r) for r in rows]) / len(rows)
    matrix = np.vstack([model.row(r) for r in rows])
    batched = best_of(3, lambda: model.score_rows(matrix)) / len(rows)
    emit("training", "batch_intent_single_row_us", single * 1e6, "us/row", batched_us_per_row=round(batched * 1e6, 2))

    online = OnlineIntentModel()
    xs = [online.features(r) for r in rows]
    for x, y in zip(xs, test.y[: len(xs)], strict=True):
        online.pipeline_.learn_one(x, bool(y))
    predict = best_of(2, lambda: [online.predict_vector(r) for r in rows])
    river_predict = best_of(2, lambda: [online.pipeline_.predict_proba_one(x) for x in xs])
    emit("training", "online_predict_per_s", len(xs) / predict, "predictions/s", path="from the feature vector",
         river_predict_proba_one_per_s=round(len(xs) / river_predict))  # fmt: skip
    labels = [bool(y) for y in test.y[: len(xs)]]
    parts = river_fast.default_parts(online.pipeline_)
    assert parts is not None

    def fast_learning() -> None:
        for x, y in zip(xs, labels, strict=True):
            river_fast.learn(parts, x, y)

    learn = best_of(2, fast_learning)
    river = best_of(2, lambda: [online.pipeline_.learn_one(x, y) for x, y in zip(xs, labels, strict=True)])
    emit("training", "online_learn_per_s", len(xs) / learn, "updates/s", river_learn_one_per_s=round(len(xs) / river))

    # the River model alone against the batch one, both judged on the test period of the default
    # synthetic history (`segflow generate`): the online model's scores there are prequential
    default = generate(users=2000, days=21, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        registry.configure(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        judged = train_all(default.events, seed=0, register=False)
    batch_auc = judged.metrics["intent_batch"]["roc_auc"]
    online_auc = judged.metrics["intent_online"]["roc_auc"]
    emit("training", "online_vs_batch_roc_auc_gap", batch_auc - online_auc, "ROC-AUC", "<= 0.03",
         batch_roc_auc=round(batch_auc, 4), online_prequential_roc_auc=round(online_auc, 4),
         events=default.events.num_rows)  # fmt: skip

    big = generate(users=8500, days=21, seed=9)  # about a million events
    with tempfile.TemporaryDirectory() as tmp:
        registry.configure(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        start = time.perf_counter()
        result = train_all(big.events, big.users.to_pandas(), big.intent.to_pandas(), seed=0)
        total = time.perf_counter() - start
    emit(
        "training",
        "train_total_s",
        total,
        "s",
        events=big.events.num_rows,
        parts={k: round(v, 1) for k, v in result.seconds.items()},
        batch_roc_auc=round(result.metrics["intent_batch"]["roc_auc"], 4),
        oracle_roc_auc=round(result.metrics["intent_batch"].get("oracle_roc_auc", float("nan")), 4),
        online_roc_auc=round(result.metrics["intent_online"]["roc_auc"], 4),
        persona_ari=round(result.metrics["clusters"].get("persona_ari", float("nan")), 4),
    )


if __name__ == "__main__":
    main()
