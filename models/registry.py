"""MLflow save and load: every model as a pyfunc with its feature spec.

Registered names: ``segflow-clusters``, ``segflow-intent-batch``,
``segflow-intent-online``; serving loads them by the alias ``champion``,
which moves only when a new model beats the current champion on the same
evaluation set. The batch intent pyfunc returns the calibrated purchase
probability, not a class label; the cluster pyfunc returns cluster ids.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from models import portable

CLUSTERS = "segflow-clusters"
INTENT_BATCH = "segflow-intent-batch"
INTENT_ONLINE = "segflow-intent-online"
CHAMPION = "champion"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at the tracking store (the argument, ``MLFLOW_TRACKING_URI``,
    else ``sqlite:///mlflow.db``), its own logging quiet unless ``SEGFLOW_MLFLOW_VERBOSE`` is set."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if os.environ.get("SEGFLOW_MLFLOW_VERBOSE"):
        return uri
    # A new database store runs its migrations with a logging config of its own
    # (dozens of INFO lines, levels reset): open the store now, below INFO.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.disable(logging.INFO)
    try:
        client = MlflowClient()
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    finally:
        logging.disable(logging.NOTSET)
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return uri


class SegflowModel(PythonModel):
    """A pickled segflow model behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Unpickle the segflow model MLflow logged beside the wrapper."""
        with open(context.artifacts["model"], "rb") as f:
            self.model = pickle.load(f)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """Batch intent: calibrated probabilities; clusters: ids; online intent: probabilities."""
        model = self.model
        kind = type(model).__name__
        if kind == "BatchIntentModel":
            return model.predict_proba(model_input)
        if kind == "ClusterModel":
            return model.predict(model_input)
        if kind == "OnlineIntentModel":
            return np.array([model.predict(model.features(row)) for row in model_input.to_dict("records")])
        raise TypeError(f"no pyfunc prediction for {kind}")


def log_model(model: Any, example: pd.DataFrame, feature_spec: list[str]) -> str:
    """Log a model into the active run; returns its URI. It travels: the
    pyfunc declares its pinned requirements and ships the segflow code its
    pickle refers to (:mod:`models.portable`), with a signature and an input
    example, so ``mlflow.pyfunc.load_model`` works where segflow is not installed."""
    # whole numbers are numbers: a column of ints in the example would make the signature refuse a missing value
    example = example.astype({c: "float64" for c in example.columns if pd.api.types.is_integer_dtype(example[c])})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pkl"
        with open(path, "wb") as f:
            pickle.dump(model, f)
        wrapper = SegflowModel()
        wrapper.model = model
        output = wrapper.predict(None, example)
        code = portable.code_tree(Path(tmp) / "code")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SegflowModel(),
            artifacts={"model": str(path)},
            signature=infer_signature(example, np.asarray(output)),
            input_example=example,
            pip_requirements=portable.requirements(),
            code_paths=[str(code / "models"), str(code / "features")],
        )
        mlflow.log_dict({"features": feature_spec}, "feature_spec.json")
    return str(info.model_uri)


def register(model_uri: str, name: str, description: str = "", tags: dict[str, str] | None = None) -> str:
    """Register a logged model, with a description and tags; returns the new version."""
    with contextlib.redirect_stderr(io.StringIO()):  # "Successfully registered…": the version is returned
        version = mlflow.register_model(model_uri, name, tags=tags)
    if description:
        MlflowClient().update_model_version(name, version.version, description=description)
    return str(version.version)


def version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of a registered version (provenance, ``fitted_until_ms``)."""
    return dict(MlflowClient().get_model_version(name, version).tags)


def champion_version(name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote(name: str, version: str) -> None:
    """Point the ``champion`` alias at ``version``."""
    MlflowClient().set_registered_model_alias(name, CHAMPION, version)


def load(name: str, alias: str = CHAMPION, version: str | None = None) -> Any:
    """The segflow model behind a registered alias, or a version when given
    (None if there is none)."""
    uri = f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"
    path = list(sys.path)  # loading puts the model's shipped code first on the path: segflow has its own
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except MlflowException:
        return None
    finally:
        sys.path[:] = path
    return pyfunc.unwrap_python_model().model
