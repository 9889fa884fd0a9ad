"""The registered champions scored on an event table's later part, logged
to MLflow with the versions scored (experiment ``segflow-evaluations``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa

from features.defaults import DEFAULT_SPECS
from features.online import FeatureSet
from models import registry
from training import provenance
from training.datasets import build, habits_of, user_vectors
from training.evaluation import cluster_silhouette, intent_metrics, persona_ari
from training.synthetic import truth_paths

EXPERIMENT = "segflow-evaluations"
SHOWN = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "positive_rate")


@dataclass(slots=True)
class Evaluation:
    """The champions' figures on an evaluation period, their versions, and the run that logged them."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seen: dict[str, bool] = field(default_factory=dict)  # the champion was fitted on rows of this period
    run_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The evaluation as one JSON-ready object (``evaluate --json``)."""
        return {"metrics": self.metrics, "versions": self.versions, "seen_in_training": self.seen,
                "run_id": self.run_id}  # fmt: skip


def evaluate_champions(events: pa.Table, horizon_ms: int, source: str) -> Evaluation:
    """Score the registered champions on the later part of ``events`` and log the run."""
    report = Evaluation()
    data = build(events, FeatureSet(DEFAULT_SPECS), horizon_ms=horizon_ms)
    _, test = data.split_by_time(gap_ms=horizon_ms)
    start = int(test.cutoffs["at"].min()) if len(test.y) else 0
    digest = provenance.digest(events)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"evaluate-{digest[:8]}") as run:
        provenance.log_dataset(source, digest, events.num_rows, context="evaluation")
        for key, name in (("intent_batch", registry.INTENT_BATCH), ("intent_online", registry.INTENT_ONLINE)):
            model, version = registry.load(name), registry.champion_version(name)
            if model is None or version is None or len(np.unique(test.y)) < 2:
                continue
            if key == "intent_batch":
                p = model.predict_proba(test.X)
            else:
                p = np.asarray([model.predict(model.features(r)) for r in test.X.to_dict("records")])
            metrics = intent_metrics(test.y, p, 0.5)
            report.metrics[key] = {k: metrics[k] for k in SHOWN}
            report.versions[key] = version
            report.seen[key] = provenance.seen_in(registry.version_tags(name, version), start)
        clusters, version = registry.load(registry.CLUSTERS), registry.champion_version(registry.CLUSTERS)
        if clusters is not None and version is not None:
            vectors = user_vectors(events, habits_of(clusters))
            metrics = {"k": float(clusters.k_), "silhouette": cluster_silhouette(clusters, vectors)}
            users_path, _ = truth_paths(Path(source))
            if users_path.exists():
                personas = pd.read_parquet(users_path).set_index("user_id")["persona"].reindex(vectors.index)
                metrics["persona_ari"] = persona_ari(clusters.predict(vectors), personas)
            report.metrics["clusters"] = metrics
            report.versions["clusters"] = version
        mlflow.log_params({f"{key}_version": v for key, v in report.versions.items()})
        mlflow.log_metrics({f"{key}.{k}": v for key, m in report.metrics.items() for k, v in m.items()})
        mlflow.set_tags({f"{key}_seen_in_training": str(v) for key, v in report.seen.items()})
        report.run_id = run.info.run_id
    return report
