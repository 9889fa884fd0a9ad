"""The scores thresholds are tuned on come from no model that learned them:
a champion fitted on the evaluation period is scored as its settings refitted
on the moments before it (batch) or replayed from scratch (online); one fitted
before it is scored as registered, its state untouched."""

from __future__ import annotations

import numpy as np
import pytest

from features.defaults import DEFAULT_SPECS
from features.online import FeatureSet
from features.specs import DAY_MS
from models import registry
from models.intent_batch import BatchIntentModel
from training.datasets import build
from training.pipelines import train_all
from training.synthetic import generate
from training.tuning import AS_REGISTERED, LEARNING_ON, REFITTED, REPLAYED, evaluation_scores


def test_a_champion_that_learned_the_period_is_scored_as_its_settings_never_on_what_it_learned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = generate(users=300, days=9, seed=5)
    models = train_all(history.events, seed=0, register=False, track=False).models
    batch, online = models[registry.INTENT_BATCH], models[registry.INTENT_ONLINE]
    data = build(history.events, FeatureSet(DEFAULT_SPECS), horizon_ms=DAY_MS)
    _, evaluation = data.split_by_time(gap_ms=DAY_MS)
    start = int(evaluation.cutoffs["at"].min())

    fitted: list[np.ndarray] = []
    real_fit = BatchIntentModel.fit

    def recording_fit(self: BatchIntentModel, X, y):  # type: ignore[no-untyped-def]
        fitted.append(X.index.to_numpy())
        return real_fit(self, X, y)

    monkeypatch.setattr(BatchIntentModel, "fit", recording_fit)
    state = online.to_state()
    seen = evaluation_scores(history.events, online, batch, {"intent_batch": None, "intent_online": start + 1})
    assert seen.how == {"intent_batch": REFITTED, "intent_online": REPLAYED} and seen.seen_in_training
    (rows,) = fitted  # one refit, on moments whose labels end before the period
    assert not set(rows) & set(evaluation.cutoffs.index)
    assert int(data.cutoffs.loc[rows, "at"].max()) + DAY_MS <= start
    assert (seen.y == evaluation.y).all() and len(seen.scores["intent_online"]) == len(evaluation.y)
    assert online.to_state() == state  # the champion itself learned nothing

    fitted.clear()
    before = evaluation_scores(history.events, online, batch, {"intent_batch": start, "intent_online": start})
    assert before.how == {"intent_batch": AS_REGISTERED, "intent_online": LEARNING_ON} and not before.seen_in_training
    assert fitted == []  # nothing refitted
    assert np.array_equal(before.scores["intent_batch"], batch.predict_proba(evaluation.X))
    assert online.to_state() == state  # learning on happens in a copy
