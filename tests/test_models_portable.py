"""A registered model travels: in a fresh virtual environment built only from
the requirements the model declares (no segflow), the champion loads with
``mlflow.pyfunc`` and gives the probabilities segflow's scorer gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np

from models import registry
from serving.regime import intent_feature_names
from serving.scorers import load_scorers
from training.datasets import build
from training.pipelines import train_all
from training.synthetic import generate

LOADER = """
import importlib.util, json, pickle, sys
assert importlib.util.find_spec("segflow") is None, "segflow is installed here"
assert importlib.util.find_spec("features") is None and importlib.util.find_spec("models") is None
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/segflow-intent-batch@champion")
with open(sys.argv[2], "rb") as f:
    x = pickle.load(f)
print(json.dumps([float(p) for p in model.predict(x)]))
"""


def test_the_champion_loads_and_scores_where_only_its_declared_requirements_are_installed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    registry.configure(uri)
    history = generate(users=300, days=10, seed=21)
    train_all(history.events, seed=0)
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/segflow-intent-batch@champion"))
    declared = requirements.read_text().split()
    assert any(r.startswith("lightgbm==") for r in declared) and not any("segflow" in r for r in declared)

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
        capture_output=True, text=True, timeout=900, env=clean,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]

    sample = build(history.events, registry_features(), seed=0).X.tail(40)
    sample.to_pickle(tmp_path / "x.pkl")
    done = subprocess.run(
        [str(python), "-I", "-c", LOADER, uri, str(tmp_path / "x.pkl")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=clean,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    travelled = np.array(json.loads(done.stdout.strip().splitlines()[-1]))

    scorers = load_scorers(intent_feature_names(), tracking_uri=uri)
    assert scorers.batch is not None
    here = np.array([scorers.batch.score_one(r) for r in sample.to_dict("records")])
    assert len(travelled) == len(sample) and np.allclose(travelled, here, rtol=1e-9, atol=1e-12)
    assert here.min() > 0.0 and here.max() < 1.0


def registry_features():  # type: ignore[no-untyped-def]
    from features.defaults import DEFAULT_SPECS
    from features.online import FeatureSet

    return FeatureSet(DEFAULT_SPECS)
