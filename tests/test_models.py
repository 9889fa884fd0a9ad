"""Model behavior: clusters, batch and online intent, MLflow round trips."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from typer.testing import CliRunner

from cli.main import app
from features.defaults import DEFAULT_SPECS, HABIT_WORDS
from features.events import Event
from features.online import FeatureSet
from models.clusters import ClusterModel, NotFittedError
from models.intent_batch import BatchIntentModel, monotone_for
from models.intent_online import OnlineIntentModel
from training.datasets import TrainingSet, build, cluster_features, user_vectors
from training.synthetic import SyntheticHistory, generate

FS = FeatureSet(DEFAULT_SPECS)


@pytest.fixture(scope="module")
def history() -> SyntheticHistory:
    return generate(users=800, days=12, seed=3)


@pytest.fixture(scope="module")
def data(history: SyntheticHistory) -> tuple[TrainingSet, TrainingSet]:
    return build(history.events, FS, seed=1).split_by_time()


@pytest.fixture(scope="module")
def batch(data: tuple[TrainingSet, TrainingSet]) -> BatchIntentModel:
    train, _ = data
    return BatchIntentModel(random_state=0).fit(train.X, train.y)


def test_batch_intent_scores_are_calibrated_probabilities(batch: BatchIntentModel, data: tuple) -> None:
    _, test = data
    p = batch.predict_proba(test.X)
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(test.y, p) > 0.7
    # calibrated: the mean score is near the observed rate
    assert abs(p.mean() - test.y.mean()) < 0.05
    rows = test.X.head(200).to_dict("records")
    # the single-row fast path gives LightGBM's own answer, also after a round trip through pickle
    assert [batch.score_one(r) for r in rows] == pytest.approx(p[:200].tolist(), rel=1e-12, abs=1e-12)
    again = pickle.loads(pickle.dumps(batch))
    assert again.score_one(rows[7]) == batch.score_one(rows[7])
    rows = rows[:20]
    assert np.allclose(batch.score_rows(np.vstack([batch.row(r) for r in rows])), p[:20])
    top = batch.top_contributions(rows[0], 3)
    assert len(top) == 3 and all(name in FS.names for name, _ in top)
    contrib = batch.contributions(test.X.head(5))
    # contributions add up to the raw score's log-odds
    assert np.allclose(1 / (1 + np.exp(-contrib.sum(axis=1))), batch.predict_raw(test.X.head(5)))


def test_more_cart_adds_or_checkouts_never_lower_intent(batch: BatchIntentModel, data: tuple) -> None:
    _, test = data
    increasing = [c for c, m in zip(batch.features_in_, monotone_for(batch.features_in_), strict=True) if m]
    assert "add_to_cart_count_1h" in increasing and "checkout_start_count_24h" in increasing
    base = test.X.sample(300, random_state=0).reset_index(drop=True)
    before = batch.predict_raw(base)
    for col in increasing:
        more = base.copy()
        more[col] = more[col] + np.random.default_rng(0).integers(1, 4, len(more))
        assert (batch.predict_raw(more) >= before - 1e-12).all(), col


def test_an_unused_property_leaves_scores_unchanged(batch: BatchIntentModel) -> None:
    t = 1_767_225_600_000
    events = [
        Event(f"m{i}", k, "u", None, t + i * 60_000, 0, properties={"price": 20.0, "category": "shoes"})
        for i, k in enumerate(["page_view", "product_view", "add_to_cart", "checkout_start"])
    ]
    other = [replace(e, properties={**e.properties, "coupon": "SPRING", "colour": "red"}) for e in events]
    vectors = []
    for stream in (events, other):
        p = FS.new_profile()
        for e in stream:
            FS.update(p, e)
        vectors.append(FS.read(p, t + 10 * 60_000))
    assert vectors[0] == vectors[1]
    assert batch.score_one(vectors[0]) == batch.score_one(vectors[1])


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (BatchIntentModel(num_boost_round=40, holdout=0.25, calibration="isotonic", random_state=3), "random_state"),
        (ClusterModel(k_range=(2, 4), sample_size=900, random_state=5), "random_state"),
        (OnlineIntentModel(horizon_ms=3_600_000, kind="logistic-l2", seed=7), "seed"),
    ],
    ids=["batch", "clusters", "online"],
)
def test_models_clone_as_scikit_learn_expects(
    model: BatchIntentModel | ClusterModel | OnlineIntentModel, name: str, data: tuple
) -> None:
    """``sklearn.base.clone`` gives an unfitted copy with the same parameters;
    ``set_params`` changes one by name and refuses a name that is not one."""
    train, _ = data
    if isinstance(model, BatchIntentModel):
        model.fit(train.X, train.y)
    elif isinstance(model, ClusterModel):
        model.fit(train.X.select_dtypes("number"))
    copy = clone(model)
    assert type(copy) is type(model) and copy.get_params() == model.get_params()
    assert not hasattr(copy, "booster_") and not hasattr(copy, "centroids_")
    assert copy.set_params(**{name: 11}) is copy and copy.get_params()[name] == 11
    assert model.get_params()[name] != 11
    with pytest.raises(ValueError, match="has no parameter 'depth'"):
        copy.set_params(depth=3)


def test_not_fitted_models_say_so() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        BatchIntentModel().predict_proba(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(NotFittedError, match="call fit"):
        ClusterModel().assign_one({})
    with pytest.raises(ValueError, match="single class"):
        BatchIntentModel().fit(pd.DataFrame({"a": [1.0, 2.0]}), [0, 0])


def test_clusters_assign_rows_like_batch_and_keep_ids(history: SyntheticHistory) -> None:
    habits = cluster_features(history.events)
    vectors = user_vectors(history.events, habits)
    first = ClusterModel(random_state=0, specs=habits.specs).fit(vectors)
    assert first.k_ >= 3 and len(first.descriptions_) == first.k_
    rows = vectors.head(50)
    assert [first.assign_one(r) for r in rows.to_dict("records")] == first.predict(rows).tolist()
    again = ClusterModel(random_state=1, previous=first, k_range=(first.k_, first.k_)).fit(vectors)
    agree = (again.predict(vectors) == first.predict(vectors)).mean()
    assert agree > 0.9  # ids follow the matched centroids, not KMeans' arbitrary order


def test_clusters_recover_the_generators_personas() -> None:
    """Silhouette picks k by itself, and the clusters match the personas
    (ARI >= 0.7). The price level against each category's usual price is what
    tells deal hunters from window shoppers: a plain mean price does not."""
    history = generate(users=1500, days=21, seed=7)
    personas = history.users.to_pandas().set_index("user_id")["persona"]
    habits = cluster_features(history.events)
    vectors = user_vectors(history.events, habits)
    model = ClusterModel(random_state=0).fit(vectors)  # the habits' words by default, the vectors' columns
    assert adjusted_rand_score(personas.reindex(vectors.index), model.labels_) >= 0.7
    assert any("views cheap products for their category" in d for d in model.descriptions_)
    assert set(habits.names) <= HABIT_WORDS.keys()  # every habit is described in words


def test_online_intent_learns_from_delayed_labels(history: SyntheticHistory, data: tuple) -> None:
    from training.pipelines import purchases_of, replay_online

    full = build(history.events, FS, seed=1)
    model = OnlineIntentModel()
    scores = replay_online(model, full, purchases_of(history.events))
    later = full.cutoffs["at"].to_numpy() >= np.quantile(full.cutoffs["at"], 0.7)
    assert model.learned > 1000 and model.pending < model.learned
    assert roc_auc_score(full.y[later], scores[later]) > 0.65
    top = model.contributions(full.X.iloc[0].to_dict(), 3)
    assert len(top) == 3
    # the fast paths give River's own answer: from the learned state, and straight from a vector
    for vector in full.X.iloc[::97].to_dict("records"):
        x = model.features(vector)
        assert model.predict(x) == pytest.approx(model.pipeline_.predict_proba_one(x)[True], rel=1e-12, abs=1e-15)
        assert model.predict_vector(vector) == model.predict(x)


def test_fast_learning_is_rivers_own(data: tuple) -> None:
    """The default pipeline learned straight from its state ends where River's
    own learn_one does: scaler statistics, seen values, weights, intercept."""
    from models import river_fast

    train, _ = data
    ours, river = OnlineIntentModel(), OnlineIntentModel()
    parts = river_fast.default_parts(ours.pipeline_)
    assert parts is not None
    rows = train.X.head(3000).to_dict("records")
    for vector, y in zip(rows, train.y[:3000], strict=True):
        x = ours.features(vector)
        river_fast.learn(parts, x, bool(y))
        river.pipeline_.learn_one(x, bool(y))
    a, b = ours.pipeline_, river.pipeline_
    for part in ("counts", "means", "vars"):
        mine, theirs = (getattr(p["encode"].transformers["Pipeline1"]["StandardScaler"], part) for p in (a, b))
        assert dict(mine) == pytest.approx(dict(theirs), rel=1e-12, abs=1e-15)
    assert a["encode"].transformers["Pipeline"]["OneHotEncoder"].values == (
        b["encode"].transformers["Pipeline"]["OneHotEncoder"].values
    )
    assert a["model"].weights == pytest.approx(b["model"].weights, rel=1e-9, abs=1e-12)
    assert a["model"].intercept == pytest.approx(b["model"].intercept, rel=1e-9)
    assert a["model"].optimizer.n_iterations == b["model"].optimizer.n_iterations == 3000
    for vector in rows[::50]:
        theirs = river.pipeline_.predict_proba_one(river.features(vector))[True]
        assert ours.predict_vector(vector) == pytest.approx(theirs)
    other = OnlineIntentModel(kind="logistic-l2")
    adam = river_fast.default_parts(other.pipeline_)
    assert adam is not None and not river_fast.learns_here(adam[2])  # Adam with L2 learns through River
    for vector, y in zip(rows[:500], train.y[:500], strict=True):
        other.learn(vector, bool(y))
    x = other.features(rows[7])
    assert other.predict(x) == pytest.approx(other.pipeline_.predict_proba_one(x)[True], rel=1e-12)


def test_train_intent_on_a_labeled_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "x": x,
            "noise": rng.normal(size=n),
            "plan": rng.choice(["gold", "basic"], n),
            "bought": np.where(x + rng.normal(scale=0.5, size=n) > 0.5, "Yes", "no"),
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["train", "intent", "--table", str(path), "--label", "bought", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    for key in ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier", "ece", "threshold", "n_train", "n_test"):
        assert key in metrics
    assert metrics["n_train"] == 420 and metrics["n_test"] == 180 and metrics["roc_auc"] > 0.85
    bad = CliRunner().invoke(app, ["train", "intent", "--table", str(path), "--label", "plan"])
    assert bad.exit_code == 1 and "not yes/no" in bad.output and "t.csv" in bad.output


def test_mlflow_champions_load_in_a_fresh_process(tmp_path: Path, history: SyntheticHistory) -> None:
    from models import registry
    from training.pipelines import train_all

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    registry.configure(uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    small = generate(users=400, days=10, seed=5)
    first = train_all(small.events, small.users.to_pandas(), small.intent.to_pandas(), seed=0)
    assert all(first.promoted.values())
    again = train_all(small.events, seed=0)  # same data and seed: no better, champion stays
    assert not any(again.promoted.values())
    assert registry.champion_version(registry.INTENT_BATCH) == first.versions[registry.INTENT_BATCH]
    small.write(tmp_path / "small.parquet")
    shown = CliRunner().invoke(app, ["evaluate", "--table", str(tmp_path / "small.parquet"), "--tracking-uri", uri])
    assert shown.exit_code == 0, shown.output
    assert "intent batch" in shown.output and "clusters: k=" in shown.output and "persona ARI" in shown.output

    data = build(small.events, FS, seed=0)
    sample = data.X.head(25)
    sample.to_parquet(tmp_path / "x.parquet")
    batch = registry.load(registry.INTENT_BATCH)
    online = registry.load(registry.INTENT_ONLINE)
    clusters = registry.load(registry.CLUSTERS)
    cluster_x = user_vectors(small.events, FeatureSet(clusters.specs_)).head(25)
    cluster_x.to_parquet(tmp_path / "c.parquet")
    code = f"""
import json, mlflow, pandas as pd
mlflow.set_tracking_uri({uri!r})
x = pd.read_parquet({str(tmp_path / "x.parquet")!r}); c = pd.read_parquet({str(tmp_path / "c.parquet")!r})
batch = mlflow.pyfunc.load_model("models:/segflow-intent-batch@champion").predict(x)
online = mlflow.pyfunc.load_model("models:/segflow-intent-online@champion").predict(x)
clusters = mlflow.pyfunc.load_model("models:/segflow-clusters@champion").predict(c)
print(json.dumps({{"batch": list(map(float, batch)), "online": list(map(float, online)),
                  "clusters": list(map(int, clusters))}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert np.allclose(got["batch"], batch.predict_proba(sample))
    assert all(0.0 <= p <= 1.0 for p in got["batch"])
    assert np.allclose(got["online"], [online.predict(online.features(r)) for r in sample.to_dict("records")])
    assert got["clusters"] == [clusters.assign_one(r) for r in cluster_x.to_dict("records")]


def test_the_online_model_state_round_trips_through_json_exactly() -> None:
    """The snapshot's explicit values give back a model that scores and learns
    exactly as the original does from then on (pipeline, ADWIN, samples, random state)."""
    import random

    import orjson

    rng = random.Random(1)
    t0 = 1_700_000_000_000

    def moment(i: int) -> dict[str, object]:
        return {"add_to_cart_count_1h": rng.randint(0, 3), "last_country": rng.choice(["DE", "US", None]),
                "since_x": rng.random() * 100 if i % 7 else float("nan")}  # fmt: skip

    a = OnlineIntentModel(sample_every_ms=60_000, horizon_ms=3_600_000)
    for i in range(3000):
        a.score(f"u{i % 40}", moment(i), t0 + i * 60_000)
        if i % 37 == 0:
            a.observe_purchase(f"u{i % 40}", t0 + i * 60_000)
    b = OnlineIntentModel.from_state(orjson.loads(orjson.dumps(a.to_state())))
    assert a.learned == b.learned > 1000 and a.pending == b.pending > 0
    for i in range(3000, 6000):
        x, at = moment(i), t0 + i * 60_000
        assert a.score(f"u{i % 40}", x, at) == b.score(f"u{i % 40}", x, at), i
        if i % 37 == 0:
            a.observe_purchase(f"u{i % 40}", at)
            b.observe_purchase(f"u{i % 40}", at)
    assert orjson.dumps(a.to_state()) == orjson.dumps(b.to_state())
    assert a.drift_.width == b.drift_.width and a.drift_.estimation == b.drift_.estimation
