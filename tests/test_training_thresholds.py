"""A threshold chosen for a target meets it, and is the extreme one that does
(checked by brute force over every distinct score)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.thresholds import choose, choose_size, on_grid, parse_target, trade_off

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
    assert parse_target("size=250") == ("size", 250.0)
    for bad, said in (("reach=3", "expected precision=P"), ("precision=x", "not a number"), ("recall=2", "at most 1"),
                      ("size=0", "above 0"), ("size=inf", "above 0"),
                      ("precision", "expected precision=P")):  # fmt: skip
        with pytest.raises(ValueError, match=said):
            parse_target(bad)


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=60),
    op=st.sampled_from([">=", ">"]),
    pick=st.integers(0, 59),
)
def test_a_threshold_chosen_on_the_grid_flags_exactly_what_it_was_chosen_on(scores, op, pick) -> None:  # type: ignore[no-untyped-def]
    p = np.array(scores)
    grid = on_grid(p, op)
    written = float(repr(float(grid[pick % len(grid)])))  # as the config file will hold it
    assert round(written, 4) == written
    flagged = p >= written if op == ">=" else p > written
    assert (flagged == (grid >= written)).all()
    assert (grid <= p).all() and (grid > p - 2e-4).all()


DAY = 86_400_000


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from("abcde"),
            st.integers(0, 4),
            st.sampled_from([0, 1, DAY // 2, DAY - 1]),
            st.sampled_from([i / 10 for i in range(11)]),
        ),
        min_size=1,
        max_size=40,
    ),
    size=st.floats(0.1, 6.0),
)
def test_a_size_target_is_met_by_the_lowest_threshold_that_meets_it(rows, size) -> None:  # type: ignore[no-untyped-def]
    users = np.array([r[0] for r in rows])
    at = np.array([r[1] * DAY + r[2] for r in rows])
    p = np.array([r[3] for r in rows])
    # the whole UTC days between the first moment and the last
    whole = [d for d in range(6) if d * DAY >= at.min() and (d + 1) * DAY - 1 <= at.max()]

    def daily(t: float) -> float:  # the mean over whole days of the distinct users with a flagged moment that day
        return float(np.mean([len(set(users[(at // DAY == d) & (p >= t)])) for d in whole]))

    if not whole:
        with pytest.raises(ValueError, match="no whole day"):
            choose_size(p, users, at, size)
        return
    fitting = [u for u in np.unique(p) if daily(u) <= size]
    if not fitting:
        with pytest.raises(ValueError, match="no threshold keeps"):
            choose_size(p, users, at, size)
        return
    assert choose_size(p, users, at, size) == min(fitting)


def test_choose_refuses_a_target_it_does_not_choose_for() -> None:
    y, p = np.array([0, 1]), np.array([0.2, 0.8])
    with pytest.raises(ValueError, match="use choose_size"):
        choose(y, p, "size", 3)
    with pytest.raises(ValueError, match="above 0"):
        choose_size(p, np.array(["a", "b"]), np.array([0, 2 * DAY]), 0)
