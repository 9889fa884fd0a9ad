"""The models the engine scores with, loaded from the MLflow registry by alias.

Every event gets the online intent score (and, when a batch model is
registered, the batch score and the cluster). ``intent``, the primary score
rules read, is chosen in settings (``intent``): ``auto`` (the
batch score when there is a batch model, else the online one), ``batch``,
``online``, or ``blend:W`` (W times the batch score plus 1 − W times the
online one); without a batch model it is the online score. With nothing
registered the engine starts with a fresh online model and says so.

>>> from models.intent_online import OnlineIntentModel
>>> s = Scorers(OnlineIntentModel(), ())
>>> s.use_intent("blend:0.25"); s.versions["intent"], s.primary(0.8, 0.4)
('blend:0.25', 0.5)
>>> s.use_intent("online"); s.primary(0.8, 0.4)
0.4
>>> s.use_intent("blend:2")
Traceback (most recent call last):
ValueError: intent 'blend:2': a blend's weight is a number from 0 to 1 (blend:0.3)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from features.specs import Spec
from models import registry
from models.clusters import ClusterModel
from models.drift import Monitor
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel

log = logging.getLogger("segflow.scorers")
INTENT = "intent"  # the key of the intent mode among the versions a log record keeps
FRESH = "fresh"  # the online model's "version" when none is registered: fresh:RATE


@dataclass
class Scorers:
    online: OnlineIntentModel
    intent_features: tuple[str, ...]
    batch: BatchIntentModel | None = None
    clusters: ClusterModel | None = None
    versions: dict[str, str] = field(default_factory=dict)  # registered name -> version, or fresh:RATE; the intent mode
    intent: str = "auto"
    _blend: float | None = None  # the batch score's weight under blend:W
    drift: Monitor | None = None  # live batch scores and features against the batch model's training ones

    def __post_init__(self) -> None:
        reference = getattr(self.batch, "reference_", None)  # a model trained before it kept one: none
        self.drift = Monitor(reference) if reference is not None else None

    def use_intent(self, mode: str) -> None:
        """Make ``intent`` this way (recorded beside the model versions, so a
        replay makes it the same way); ValueError names a mode that is not one."""
        blend = None
        if mode.startswith("blend:"):
            try:
                blend = float(mode.removeprefix("blend:"))
            except ValueError:
                blend = math.nan
            if not 0.0 <= blend <= 1.0:
                raise ValueError(f"intent {mode!r}: a blend's weight is a number from 0 to 1 (blend:0.3)")
        elif mode not in ("auto", "batch", "online"):
            raise ValueError(f"intent {mode!r} is not one of auto, batch, online, blend:W")
        self.intent, self._blend = mode, blend
        self.versions[INTENT] = mode

    def primary(self, batch: Any, online: Any) -> Any:
        """The ``intent`` score from the batch score (None: no batch model) and
        the online one: numbers, or arrays of them."""
        if batch is None or self.intent == "online":
            return online
        if self._blend is not None:
            return self._blend * batch + (1.0 - self._blend) * online
        return batch

    def scores(self, user: str, vector: Mapping[str, Any], at_ms: int, sample: bool) -> dict[str, float]:
        """Scores of one moment; ``sample`` lets the online model keep it to learn from later."""
        x = {name: vector[name] for name in self.intent_features}
        online = self.online.score(user, x, at_ms, sample=sample)
        if self.batch is None:
            return {"intent_online": online, "intent": online}
        batch = self.batch.score_one(vector)
        if sample and self.drift is not None:
            self.drift.observe(vector, batch)
        return {"intent_online": online, "intent_batch": batch, "intent": self.primary(batch, online)}

    def score_columns(self, vectors: pd.DataFrame) -> tuple[dict[str, NDArray[np.float64]], NDArray[Any] | None]:
        """Scores and cluster names of many vectors at once (a row each), as
        :meth:`scores` and :meth:`cluster` give them one at a time; the online
        model learns nothing."""
        n = len(vectors)
        online = self.online.predict_columns({name: vectors[name].to_numpy() for name in self.intent_features}, n)
        batch = None if self.batch is None else (self.batch.predict_proba(vectors) if n else np.zeros(0))
        scores = self.with_intent(online, batch)
        if self.clusters is None:
            return scores, None
        assigned = self.clusters.predict(vectors) if n else np.zeros(0, dtype=np.int64)
        names = np.array([cluster_name(i) for i in range(int(assigned.max(initial=-1)) + 1)], dtype=object)
        return scores, names[assigned]

    def with_intent(
        self, online: NDArray[np.float64], batch: NDArray[np.float64] | None = None
    ) -> dict[str, NDArray[np.float64]]:
        """The online and batch scores of many rows, and ``intent`` made from
        them as this service makes it (the intent mode)."""
        scores = {"intent_online": online}
        if batch is not None:
            scores["intent_batch"] = batch
        scores["intent"] = self.primary(batch, online)
        return scores

    def cluster(self, vector: Mapping[str, Any]) -> str | None:
        if self.clusters is None:
            return None
        return cluster_name(self.clusters.assign_one(vector))

    def cluster_description(self, name: str | None) -> str | None:
        if self.clusters is None or name is None:
            return None
        return str(self.clusters.descriptions_[int(name.removeprefix("c"))])

    def contributions(self, vector: Mapping[str, Any], k: int = 5) -> dict[str, list[tuple[str, float]]]:
        """The features that moved each score most (computed when read, not per event)."""
        x = {name: vector[name] for name in self.intent_features}
        out = {"intent_online": self.online.contributions(x, k)}
        if self.batch is not None:
            out["intent_batch"] = self.batch.top_contributions(vector, k)
        return out

    @property
    def specs(self) -> tuple[Spec, ...]:
        """Feature specs the models bring with them (the cluster model's habits)."""
        return tuple(getattr(self.clusters, "specs_", ())) if self.clusters is not None else ()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Every feature the models read from a vector."""
        names = list(self.intent_features)
        if self.batch is not None:
            names += self.batch.features_in_
        if self.clusters is not None:
            names += self.clusters.features_in_
        return tuple(dict.fromkeys(names))

    @property
    def fresh(self) -> bool:
        return self.versions.get(registry.INTENT_ONLINE, "").startswith(FRESH)

    @property
    def intent_source(self) -> str:
        """What ``intent`` is made of here: batch, online or blend."""
        if self.batch is None or self.intent == "online":
            return "online"
        return "blend" if self.intent.startswith("blend:") else "batch"


def cluster_name(index: int) -> str:
    """A cluster's name as rules compare it: ``cluster == "c2"``."""
    return f"c{index}"


def fresh_online(version: str) -> OnlineIntentModel:
    """A fresh online model as a record names it: ``fresh:RATE`` (its learning
    rate), or ``fresh`` (written before the rate was kept: 0.02, the rate then).

    >>> fresh_online("fresh").learning_rate, fresh_online("fresh:0.003").learning_rate
    (0.02, 0.003)
    """
    return OnlineIntentModel(learning_rate=float(version.partition(":")[2] or 0.02))


def load_scorers(
    intent_features: Sequence[str],
    alias: str = registry.CHAMPION,
    tracking_uri: str | None = None,
    pinned: Mapping[str, str] | None = None,
) -> Scorers:
    """The registered models by alias; a fresh online model when none is
    registered. ``pinned``: these versions instead (as a log record names
    them; a model it does not name is not loaded), LookupError when one is gone."""
    registry.configure(tracking_uri)
    versions: dict[str, str] = {}
    loaded: dict[str, Any] = {}
    for name in (registry.INTENT_ONLINE, registry.INTENT_BATCH, registry.CLUSTERS):
        if pinned is not None:
            version = pinned.get(name)
            if version is None or version.startswith(FRESH):
                continue
            model = registry.load(name, version=version)
            if model is None:
                raise LookupError(f"{name} version {version} is not in the registry")
        else:
            model = registry.load(name, alias)
        if model is not None:
            loaded[name] = model
            versions[name] = pinned[name] if pinned is not None else registry.champion_version(name) or alias
    online = loaded.get(registry.INTENT_ONLINE)
    if online is None:
        named = (pinned or {}).get(registry.INTENT_ONLINE, "")
        if named.startswith(FRESH):
            online = fresh_online(named)
        else:
            log.warning("no %s@%s registered: starting with a fresh online model", registry.INTENT_ONLINE, alias)
            online = OnlineIntentModel()
        versions[registry.INTENT_ONLINE] = f"{FRESH}:{online.learning_rate}"
    return Scorers(
        online=online,
        intent_features=tuple(intent_features),
        batch=loaded.get(registry.INTENT_BATCH),
        clusters=loaded.get(registry.CLUSTERS),
        versions=versions,
    )
