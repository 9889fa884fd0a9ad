"""The synthetic generator: deterministic, realistic enough, partly observable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from features.table import read_table
from training.labels import purchase_within
from training.summary import type_counts
from training.synthetic import PERSONAS, SyntheticHistory, generate, truth_paths

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def history() -> SyntheticHistory:
    return generate(users=2500, days=14, seed=11)


def test_same_seed_same_history() -> None:
    a, b, c = generate(users=60, days=3, seed=5), generate(users=60, days=3, seed=5), generate(users=60, days=3, seed=6)
    assert a.events.equals(b.events) and a.intent.equals(b.intent) and a.users.equals(b.users)
    assert not a.events.equals(c.events)


def test_history_has_personas_funnel_campaigns_and_context(history: SyntheticHistory) -> None:
    personas = set(history.users.column("persona").to_pylist())
    assert personas == {p.name for p in PERSONAS} and len(personas) >= 5
    counts = type_counts(history.events)
    for t in (
        "page_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "wishlist_add",
        "checkout_start",
        "purchase",
        "search",
        "email_send",
        "email_open",
        "email_click",
    ):
        assert counts.get(t, 0) > 0, t
    assert counts["product_view"] > counts["add_to_cart"] > counts["checkout_start"] > counts["purchase"]
    assert counts["email_send"] > counts["email_open"] > counts["email_click"]
    ev = history.events
    assert set(ev.column("device").to_pylist()) == {"mobile", "desktop"}
    assert pc.count_distinct(ev.column("country")).as_py() >= 5
    assert pc.count_distinct(ev.column("category")).as_py() >= 20
    assert ev.column("time_on_page_s").null_count < ev.num_rows
    ts = pc.cast(ev.column("ts"), "int64").to_numpy()
    assert (np.diff(ts) >= 0).all()
    # a daily rhythm: the busiest UTC hour has several times the events of the quietest
    hours = np.bincount((ts // 3_600_000) % 24, minlength=24)
    assert hours.max() > 2 * hours.min()


def test_latent_intent_is_an_oracle_between_075_and_09(history: SyntheticHistory) -> None:
    ev = history.events
    ts = pc.cast(ev.column("ts"), "int64").to_numpy()
    types = ev.column("type").to_numpy(zero_copy_only=False)
    label, known = purchase_within(
        ev.column("profile_id").to_numpy(zero_copy_only=False),
        ts,
        types == "purchase",
        horizon_ms=DAY_MS,
        end_ms=int(ts.max()),
    )
    intent = history.intent.column("latent_intent").to_numpy()
    assert history.intent.column("message_id").equals(ev.column("message_id"))
    auc = roc_auc_score(label[known], intent[known])
    assert 0.75 <= auc <= 0.9, auc


def test_write_keeps_ground_truth_beside_events(tmp_path: Path) -> None:
    h = generate(users=20, days=2, seed=1)
    events, users, truth = h.write(tmp_path / "syn.parquet")
    assert (users, truth) == truth_paths(events)
    assert read_table(events).num_rows == pq.read_table(truth).num_rows
    assert pq.read_table(users).num_rows == 20


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 100), st.booleans()), max_size=30), st.integers(1, 50))
def test_labels_match_brute_force(rows: list[tuple[str, int, bool]], horizon: int) -> None:
    users = np.array([u for u, _, _ in rows], dtype=object)
    ts = np.array([t for _, t, _ in rows], dtype=np.int64)
    buy = np.array([b for _, _, b in rows], dtype=bool)
    end = 100
    label, known = purchase_within(users, ts, buy, horizon_ms=horizon, end_ms=end)
    for i, (u, t, _) in enumerate(rows):
        expect = any(u2 == u and t < t2 <= t + horizon and b2 for u2, t2, b2 in rows)
        assert label[i] == expect
        assert known[i] == (t + horizon <= end)  # censored whatever its label: no excess of buyers at the end
