"""Online purchase intent: a River model that scores every event and keeps
learning from labels that arrive late.

Each scored moment may wait as a *pending sample* (at most one per user per
``sample_every``, so learning does not cost a model update per event) until
a purchase within the horizon resolves it positive, or the horizon passes and
resolves it negative; then the model learns from it. Scores recorded when a
sample was taken and compared with its label when resolved give the
prequential (test-then-train) evaluation, with the real delays. ADWIN watches
the log loss of resolved samples and flags drift.

>>> m = OnlineIntentModel(horizon_ms=1000, sample_every_ms=0)
>>> p = m.score("u", {"add_to_cart_count_1h": 2.0}, at_ms=0)
>>> 0.0 < p < 1.0, m.pending
(True, 1)
>>> m.observe_purchase("u", at_ms=500); m.pending, m.learned
(1, 0)
>>> m.advance(now_ms=1001); m.pending, m.learned, m.evaluated[0][0]
(0, 1, 1)
"""

from __future__ import annotations

import heapq
import math
import numbers
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from river import compose, drift, linear_model, optim, preprocessing

from models import river_fast, river_state
from models.params import Params
from models.vectors import river_features, river_items

DAY_MS = 86_400_000
# a pending sample: (taken at, features, score then, [label so far])
Sample = tuple[int, dict[str, Any], float, list[bool]]


def make_pipeline(kind: str = "logistic", seed: int = 0, learning_rate: float = 0.003) -> compose.Pipeline:
    """The River pipeline by name: ``logistic`` (default: SGD at ``learning_rate``,
    the intercept at 0.02) or ``logistic-l2`` (Adam)."""
    if kind == "logistic":
        lr = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), intercept_lr=0.02)
    elif kind == "logistic-l2":
        lr = linear_model.LogisticRegression(optimizer=optim.Adam(0.01), l2=1e-4)
    else:
        raise ValueError(f"unknown online model {kind!r} (expected 'logistic' or 'logistic-l2')")
    encode = (compose.SelectType(str) | preprocessing.OneHotEncoder()) + (
        compose.SelectType(numbers.Number) | preprocessing.StandardScaler()
    )
    return compose.Pipeline(("encode", encode), ("model", lr))


class OnlineIntentModel(Params):
    """Scores every event; learns from delayed purchase labels."""

    learning_rate = 0.02  # a model pickled before the rate was a parameter learned at this one

    def __init__(
        self,
        horizon_ms: int = DAY_MS,
        sample_every_ms: int = 30 * 60_000,
        max_pending_per_user: int = 64,
        kind: str = "logistic",
        categorical: Sequence[str] = ("last_country", "last_device"),
        seed: int = 0,
        keep_evaluated: int = 2_000_000,
        # prequentially, on synthetic histories of 2,000-3,000 users, a step of 0.003 scored 0.828-0.831
        # ROC-AUC (within 0.005 of the batch model) against 0.802 at 0.02 and 0.763 at 0.05; on two
        # hours of Taobao (nothing to learn there: all near 0.5) 0.494 against 0.479
        learning_rate: float = 0.003,
    ) -> None:
        self.horizon_ms = horizon_ms
        self.sample_every_ms = sample_every_ms
        self.max_pending_per_user = max_pending_per_user
        self.kind = kind
        self.categorical = tuple(categorical)
        self.seed = seed
        self.keep_evaluated = keep_evaluated
        self.learning_rate = learning_rate
        self.pipeline_ = make_pipeline(kind, seed, learning_rate)
        self.drift_ = drift.ADWIN()
        self.drift_detected_ = False
        self._pending: dict[str, list[Sample]] = {}
        self._deadlines: list[tuple[int, int, str]] = []
        self._last_sample: dict[str, tuple[int, int]] = {}
        self._rng = random.Random(seed)
        self._seq = 0
        self.learned = 0
        # (label, score when sampled), the prequential record; bounded for a long-running service
        self.evaluated: deque[tuple[int, float]] = deque(maxlen=keep_evaluated)

    @property
    def pending(self) -> int:
        """How many sampled moments wait for their labels."""
        return sum(len(v) for v in self._pending.values())

    def features(self, vector: Mapping[str, object]) -> dict[str, Any]:
        """A feature vector as the River pipeline reads it."""
        return river_features(vector, self.categorical)

    def predict(self, x: Mapping[str, Any]) -> float:
        """P(purchase within the horizon) of River features ``x``.

        The default pipeline (one-hot and standard scaling, then logistic
        regression) is evaluated directly from its learned state, which gives
        River's own answer several times faster; other pipelines go through River.
        """
        z = self._logit(x.items())
        if z is None:
            return float(self.pipeline_.predict_proba_one(dict(x)).get(True, 0.0))
        return _sigmoid(z)

    def predict_vector(self, vector: Mapping[str, object]) -> float:
        """``predict(features(vector))``, without building the features."""
        z = self._logit(river_items(vector, self.categorical))
        return self.predict(self.features(vector)) if z is None else _sigmoid(z)

    def _logit(self, items: Iterable[tuple[str, Any]]) -> float | None:
        """The default pipeline's log-odds of River feature items (None for other pipelines)."""
        parts = river_fast.default_parts(self.pipeline_)
        return None if parts is None else river_fast.logit(parts, items)

    def predict_columns(self, columns: Mapping[str, NDArray[Any]], n: int) -> NDArray[np.float64]:
        """:meth:`predict_vector` of ``n`` vectors given as columns (in the
        vector's order), learning nothing; a score that is not a probability is 0."""
        parts = river_fast.default_parts(self.pipeline_)
        if parts is None:
            names = list(columns)
            rows = (dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True))
            p = np.fromiter((self.predict_vector(v) for v in rows), dtype=np.float64, count=n)
        else:
            z = river_fast.logits(parts, columns, self.categorical, n)
            with np.errstate(over="ignore"):
                p = np.where(z < -30, 0.0, np.where(z > 30, 1.0, 1.0 / (1.0 + np.exp(-z))))
        return np.where((p >= 0.0) & (p <= 1.0), p, 0.0)

    frozen = False  # True: scores only, learns nothing (a preview, a backtest)

    def score(self, user: str, vector: Mapping[str, object], at_ms: int, sample: bool = True) -> float:
        """Score one moment; maybe keep it as a pending sample for later learning."""
        self.advance(at_ms)
        p = self.predict_vector(vector)
        if not 0.0 <= p <= 1.0:  # NaN: a broken state must not break every score after it
            p = 0.0
        if sample and not self.frozen:
            self._sample(user, at_ms, vector, p)
        return p

    def _sample(self, user: str, at_ms: int, vector: Mapping[str, object], p: float) -> None:
        """Keep one moment per user per ``sample_every`` slot, drawn uniformly
        among the slot's moments (reservoir sampling), so samples are not all
        session starts. Only a kept moment's River features are built."""
        slot = at_ms // self.sample_every_ms if self.sample_every_ms else at_ms
        queue = self._pending.setdefault(user, [])
        last = self._last_sample.get(user)
        if last is not None and last[0] == slot and queue and queue[-1][0] // max(self.sample_every_ms, 1) == slot:
            n = last[1] + 1
            self._last_sample[user] = (slot, n)
            if self._rng.random() * n >= 1.0:
                return
            queue[-1] = (at_ms, self.features(vector), p, [False])
        else:
            if len(queue) >= self.max_pending_per_user:
                return
            self._last_sample[user] = (slot, 1)
            queue.append((at_ms, self.features(vector), p, [False]))
        self._seq += 1
        heapq.heappush(self._deadlines, (at_ms + self.horizon_ms, self._seq, user))

    def observe_purchase(self, user: str, at_ms: int) -> None:
        """A purchase labels the user's pending samples taken in the horizon
        before it positive. They are learned when their horizon ends, like the
        negatives, so the model learns in the order moments were taken: learning
        positives at once and negatives a horizon later skews an SGD learner."""
        for sample in self._pending.get(user, ()):
            if sample[0] < at_ms <= sample[0] + self.horizon_ms:
                sample[3][0] = True

    def merge(self, source: str, target: str) -> None:
        """``source``'s profile joined ``target``'s (identity): its pending
        samples are the target's from now on, labelled by the target's purchases."""
        moved = self._pending.pop(source, None)
        self._last_sample.pop(source, None)
        self._last_sample.pop(target, None)  # its queue's last sample may now be one of the moved
        if not moved:
            return
        queue = self._pending.setdefault(target, [])
        queue.extend(moved)
        queue.sort(key=lambda sample: sample[0])
        del queue[: max(len(queue) - self.max_pending_per_user, 0)]  # the oldest go first
        for sample in moved:
            self._seq += 1
            heapq.heappush(self._deadlines, (sample[0] + self.horizon_ms, self._seq, target))

    def forget(self, user: str) -> None:
        """Drop a user's pending samples (erasure)."""
        self._pending.pop(user, None)
        self._last_sample.pop(user, None)
        kept = [d for d in self._deadlines if d[2] != user]
        if len(kept) != len(self._deadlines):
            heapq.heapify(kept)
            self._deadlines = kept

    def advance(self, now_ms: int) -> None:
        """Learn every sample whose horizon has passed, with its label."""
        if self.frozen:
            return
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < now_ms:
            due, _, user = heapq.heappop(deadlines)
            queue = self._pending.get(user)
            if not queue:
                continue
            keep = []
            for sample in queue:
                if sample[0] + self.horizon_ms <= due:
                    self._learn(sample, sample[3][0])
                else:
                    keep.append(sample)
            if keep:
                self._pending[user] = keep
            else:
                del self._pending[user]

    def _learn(self, sample: Sample, label: bool) -> None:
        x, p = sample[1], sample[2]
        self.evaluated.append((int(label), p))
        loss = -math.log(max(p if label else 1.0 - p, 1e-9))
        self.drift_.update(loss)
        if self.drift_.drift_detected:
            self.drift_detected_ = True
        parts = river_fast.default_parts(self.pipeline_)
        if parts is not None and river_fast.learns_here(parts[2]):
            river_fast.learn(parts, x, label)
        else:
            self.pipeline_.learn_one(x, label)
        self.learned += 1

    def learn(self, vector: Mapping[str, object], label: bool) -> None:
        """Learn one labeled moment directly (warm start from history)."""
        x = self.features(vector)
        self._learn((0, x, self.predict(x), [label]), label)

    # -- state as explicit values (snapshots) ------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything this model has learned and holds, as JSON-ready values:
        its construction, the pipeline's learned state, ADWIN's window, the
        samples waiting for labels, the sampler's random state, the
        prequential record. :meth:`from_state` gives an identical model back."""
        version, internal, gauss = self._rng.getstate()
        return {
            "params": {
                "horizon_ms": self.horizon_ms,
                "sample_every_ms": self.sample_every_ms,
                "max_pending_per_user": self.max_pending_per_user,
                "kind": self.kind,
                "categorical": list(self.categorical),
                "seed": self.seed,
                "keep_evaluated": self.keep_evaluated,
                "learning_rate": self.learning_rate,
            },
            "pipeline": river_state.state_of(self.pipeline_),
            "drift": river_state.state_of_adwin(self.drift_),
            "drift_detected": self.drift_detected_,
            "pending": {u: [[at, x, p, flag[0]] for at, x, p, flag in q] for u, q in self._pending.items()},
            "deadlines": [list(d) for d in self._deadlines],
            "last_sample": {u: list(v) for u, v in self._last_sample.items()},
            "rng": [version, list(internal), gauss],
            "seq": self._seq,
            "learned": self.learned,
            "evaluated": [[y for y, _ in self.evaluated], [p for _, p in self.evaluated]],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OnlineIntentModel:
        """A model back from :meth:`to_state`, identical from then on."""
        p = state["params"]
        model = cls(
            p["horizon_ms"], p["sample_every_ms"], p["max_pending_per_user"], p["kind"],
            p["categorical"], p["seed"], p["keep_evaluated"],
            p.get("learning_rate", 0.02),  # a state from before the rate was kept: the rate then
        )  # fmt: skip
        river_state.fill(model.pipeline_, state["pipeline"])
        river_state.fill_adwin(model.drift_, state["drift"])
        model.drift_detected_ = bool(state["drift_detected"])
        model._pending = {u: [(at, x, pr, [flag]) for at, x, pr, flag in q] for u, q in state["pending"].items()}
        model._deadlines = [(d[0], d[1], d[2]) for d in state["deadlines"]]
        heapq.heapify(model._deadlines)
        model._last_sample = {u: (v[0], v[1]) for u, v in state["last_sample"].items()}
        version, internal, gauss = state["rng"]
        model._rng.setstate((version, tuple(internal), gauss))
        model._seq, model.learned = state["seq"], state["learned"]
        ys, ps = state["evaluated"]
        model.evaluated.extend(zip(ys, ps, strict=True))
        return model

    def contributions(self, vector: Mapping[str, object], k: int = 5) -> list[tuple[str, float]]:
        """Weight × scaled value of the features that moved the score most."""
        x = self.features(vector)
        encoded = self.pipeline_["encode"].transform_one(x)
        weights = self.pipeline_["model"].weights
        parts = [(name, weights.get(name, 0.0) * value) for name, value in encoded.items()]
        parts.sort(key=lambda kv: -abs(kv[1]))
        return parts[:k]


def _sigmoid(z: float) -> float:
    if z < -30:
        return 0.0
    if z > 30:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))
