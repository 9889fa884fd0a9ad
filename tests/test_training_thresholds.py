"""A threshold chosen for a target meets it, and is the extreme one that does
(checked by brute force over every distinct score)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.thresholds import choose, parse_target, trade_off

rows = st.lists(st.tuples(st.integers(0, 1), st.sampled_from([i / 20 for i in range(21)])), min_size=1, max_size=80)


def brute(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    flagged = p >= t
    precision = y[flagged].mean() if flagged.any() else 0.0
    recall = y[flagged].sum() / max(y.sum(), 1)
    return float(precision), float(recall)


@settings(max_examples=300, deadline=None)
@given(rows=rows, target=st.sampled_from(["precision", "recall"]), value=st.floats(0.05, 1.0))
def test_the_chosen_threshold_meets_the_target_and_is_the_extreme_one(rows, target, value) -> None:  # type: ignore[no-untyped-def]
    y = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    which = 0 if target == "precision" else 1
    reachable = [u for u in np.unique(p) if brute(y, p, u)[which] >= value]
    if not reachable:
        with pytest.raises(ValueError, match=f"no threshold reaches {target}"):
            choose(y, p, target, value)
        return
    t = choose(y, p, target, value)
    assert brute(y, p, t)[which] >= value
    # precision: the lowest threshold that reaches it; recall: the highest
    assert t == (min(reachable) if target == "precision" else max(reachable))
    table = trade_off(y, p)
    for row in table.itertuples():
        assert (row.precision, row.recall) == pytest.approx(brute(y, p, row.threshold))


def test_targets_are_read_with_clear_errors() -> None:
    assert parse_target("precision=0.8") == ("precision", 0.8)
    for bad, said in (("size=3", "expected precision=P"), ("precision=x", "not a number"), ("recall=2", "at most 1")):
        with pytest.raises(ValueError, match=said):
            parse_target(bad)
