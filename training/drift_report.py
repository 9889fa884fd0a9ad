"""Drift of an event table's latest days against what the batch champion was
trained on: the population stability index of its scores and top features at
moments drawn as training draws them (one per user per 30 minutes). The
service counts every event live (``/metrics``), busy sessions weighing more."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.defaults import DEFAULT_SPECS
from features.offline import OfflineFeatures
from features.online import FeatureSet
from features.specs import DAY_MS
from models.drift import SCORE, SHIFTED
from models.intent_batch import BatchIntentModel
from training.datasets import sample_cutoffs

MOVING = 0.1


@dataclass(frozen=True, slots=True)
class DriftReport:
    """PSI per column over a table's latest days, how many moments, and since when."""

    psi: dict[str, float]
    events: int
    since_ms: int

    @property
    def shifted(self) -> list[str]:
        """The columns whose PSI says shifted (above 0.25)."""
        return [name for name, value in self.psi.items() if value > SHIFTED]

    def as_dict(self) -> dict[str, object]:
        """The report with each column's status (stable, moving, shifted), JSON-ready."""
        status = {n: "shifted" if v > SHIFTED else "moving" if v > MOVING else "stable" for n, v in self.psi.items()}
        return {"psi": self.psi, "status": status, "events": self.events, "since_ms": self.since_ms}


def drift_report(events: pa.Table, model: BatchIntentModel, days: float) -> DriftReport:
    """PSI per column over the events of the table's last ``days`` days."""
    reference = getattr(model, "reference_", None)
    if reference is None:
        raise ValueError("this batch model was trained before models kept their training distribution: retrain it")
    ts = pc.cast(events.column("ts"), pa.int64())
    since = int(pc.max(ts).as_py()) - int(days * DAY_MS) if events.num_rows else 0
    offline = OfflineFeatures(FeatureSet(DEFAULT_SPECS), events)
    # moments drawn as training drew them (one per user per 30 minutes): the reference's own kind
    moments = sample_cutoffs(events, stitching=offline.stitching)
    moments = moments[moments["at"].to_numpy() >= since]
    if moments.empty:
        raise ValueError(f"no events in the last {days:g} days of the table")
    X = offline.at(moments[["profile_id", "at"]])
    scores = model.predict_proba(X)
    psi = {
        name: reference.psi(name, scores if name == SCORE else X[name].to_numpy(dtype=np.float64))
        for name in reference.edges
    }
    return DriftReport(psi, len(moments), since)
