"""A table-trained model's run in MLflow: parameters, figures (per fold too),
plots, the data set with its hash, the model, and a registration under a
name of its own when asked (experiment ``segflow-tables``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow

from models import registry
from training import provenance
from training.evaluation import close, intent_plots
from training.tabular import TabularResult

EXPERIMENT = "segflow-tables"


def file_digest(path: Path) -> str:
    """A file's content hash (sha256), 16 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def log_table_run(
    table: Path, label: str, seed: int, result: TabularResult, tracking_uri: str | None, register: str | None
) -> tuple[str, str | None]:
    """Log the run; returns its id and the registered version (None unless ``register``)."""
    registry.configure(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    digest = file_digest(table)
    version = None
    with mlflow.start_run(run_name=f"{table.stem}-{label}-{digest[:8]}") as run:
        provenance.log_dataset(
            str(table), digest, int(result.metrics["n_train"] + result.metrics["n_test"]), "training"
        )
        mlflow.log_params({"label": label, "seed": seed, **provenance.flat(result.model.params_)})
        mlflow.log_metrics(result.metrics)
        for name, cv in result.cv.items():
            for i, fold in enumerate(cv.folds):
                mlflow.log_metrics({f"cv_{name}.{k}": v for k, v in fold.items()}, step=i)
            mlflow.log_metrics({f"cv_{name}.mean.{k}": v for k, v in cv.mean.items()})
            mlflow.log_metrics({f"cv_{name}.low95.{k}": lo for k, (lo, _) in cv.interval.items()})
            mlflow.log_metrics({f"cv_{name}.high95.{k}": hi for k, (_, hi) in cv.interval.items()})
            mlflow.log_dict(cv.as_dict(), f"cv_{name}.json")
        mlflow.log_dict(result.params, "chosen_params.json")
        figs = intent_plots(result.y_test, result.p_test, result.model.importance())
        for name, fig in figs.items():
            mlflow.log_figure(fig, f"plots/{name}")
        close(list(figs.values()))
        uri = registry.log_model(result.model, result.X_test.head(5), list(result.X_test.columns))
        if register is not None:
            description = f"{label} on {table.name}: ROC-AUC {result.metrics['roc_auc']:.4f}"
            version = registry.register(uri, register, description, provenance.tags(digest))
        return run.info.run_id, version
