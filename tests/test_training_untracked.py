"""Training from a notebook without side effects: ``train_all(track=False)``
touches no MLflow store and hands the models back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest

from models import registry
from training.pipelines import train_all
from training.synthetic import generate


def test_training_untracked_touches_no_mlflow_and_returns_the_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("MLflow was called")

    for name in ("set_experiment", "start_run", "log_param", "log_params", "log_metric", "log_metrics", "log_figure",
                 "log_dict", "log_text", "log_input", "set_tag", "set_tags", "set_tracking_uri"):  # fmt: skip
        monkeypatch.setattr(mlflow, name, forbidden)
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", forbidden)
    monkeypatch.setattr(registry, "MlflowClient", forbidden)
    for name in ("load", "log_model", "register", "promote", "configure", "champion_version", "version_tags"):
        monkeypatch.setattr(registry, name, forbidden)
    monkeypatch.chdir(tmp_path)
    history = generate(users=300, days=10, seed=13)
    result = train_all(history.events, seed=0, track=False)  # registers nothing either
    assert set(result.models) == {registry.INTENT_BATCH, registry.INTENT_ONLINE, registry.CLUSTERS}
    assert result.versions == {} and result.metrics["intent_batch"]["roc_auc"] > 0.6
    assert list(tmp_path.iterdir()) == []  # no store, no artifacts
    clusters = result.models[registry.CLUSTERS]
    assert all(d and "high" not in d.split(",")[0] for d in clusters.descriptions_)  # described in words
    with pytest.raises(ValueError, match="register"):
        train_all(history.events, track=False, register=True)
    with pytest.raises(TypeError, match="read_table"):
        train_all(history.events.to_pandas(), track=False)  # type: ignore[arg-type]
