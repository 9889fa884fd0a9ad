"""A threshold chosen for a comparison flags exactly what the rule flags and
meets the target as the extreme written value that does (brute force over
every written candidate), for >=, >, <= and <, with missing values and
recencies (never: infinitely long ago) as the rule reads them."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.defaults import RULE_SPECS
from segments.config import loads, rule_thresholds, threshold_reads
from training.tuning import choose_threshold

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
values = st.sampled_from([np.nan, 0.0, 0.5, 1.25, 3.0, 3.00004, 7.5])


def rule_flags(v: np.ndarray, op: str, t: float, recency: bool) -> np.ndarray:
    """As the rule reads a value: a recency never seen is infinitely long ago, another missing one compares false."""
    v = np.where(np.isnan(v), np.inf, v) if recency else v
    with np.errstate(invalid="ignore"):
        return np.array([not np.isnan(x) and OPS[op](x, t) for x in v])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(values, st.integers(0, 1)), min_size=2, max_size=30),
    op=st.sampled_from([">=", ">", "<=", "<"]),
    target=st.sampled_from(["precision", "recall"]),
    goal=st.sampled_from([0.3, 0.5, 0.8, 1.0]),
    recency=st.booleans(),
)
def test_the_choice_flags_what_the_rule_flags_and_is_the_extreme_one(rows, op, target, goal, recency) -> None:  # type: ignore[no-untyped-def]
    v = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    users, at = np.array([str(i) for i in range(len(rows))]), np.zeros(len(rows))

    def figure(t: float) -> float:
        flagged = rule_flags(v, op, t, recency)
        if target == "precision":
            return float(y[flagged].mean()) if flagged.any() else 0.0
        return float(y[flagged].sum() / max(y.sum(), 1))

    finite = v[np.isfinite(v)]
    candidates = sorted({np.floor(x * 1e4) / 1e4 for x in finite} | {np.ceil(x * 1e4) / 1e4 for x in finite})
    reaching = [t for t in candidates if figure(t) >= goal]
    try:
        choice = choose_threshold(v, op, y, target, goal, users, at, recency)
    except ValueError:
        assert not [t for t in reaching if rule_flags(v, op, t, recency).any()]  # no written value reaches it
        return
    t = choice.written
    assert round(t, 4) == t
    assert (choice.flagged == rule_flags(v, op, t, recency)).all()
    assert figure(t) >= goal
    # the most members at the precision, the fewest at the recall: lower for >=, higher for <=
    wider = [u for u in reaching if rule_flags(v, op, u, recency).sum() > choice.flagged.sum()]
    if target == "precision":
        assert not wider
    else:
        narrower = [u for u in reaching if 0 < rule_flags(v, op, u, recency).sum() < choice.flagged.sum()]
        assert not narrower


def test_only_uses_tune_can_follow_are_found_and_every_read_is_counted() -> None:
    config = loads(
        """
thresholds: {likely: 0.4, cart: 100, recent: 3600, deep: 2}
segments:
  - name: buyers
    rule: intent >= thresholds.likely and cart_value_7d >= thresholds.cart
  - name: lapsed
    rule: since(purchase) >= thresholds.recent and not (count(product_view, 1h) >= thresholds.deep)
  - name: small_carts
    rule: count(add_to_cart, 1h) >= 1
    exit: cart_value_7d < thresholds.cart
""",
        known_features=RULE_SPECS,
    )
    found = {(t.name, t.segment, t.role, t.op, t.recency) for t in rule_thresholds(config)}
    assert found == {("likely", "buyers", "entry", ">=", False), ("cart", "buyers", "entry", ">=", False),
                     ("recent", "lapsed", "entry", ">=", True)}  # fmt: skip
    # deep sits under a not, cart in another segment's exit: reads tune does not follow, so it refuses them
    assert threshold_reads(config) == {"likely": 1, "cart": 2, "recent": 1, "deep": 1}


def test_a_never_seen_recency_counts_as_long_ago() -> None:
    v = np.array([np.nan, 10.0, 7200.0, np.nan])
    y = np.array([1, 0, 1, 1])
    choice = choose_threshold(v, ">=", y, "precision", 1.0, np.array(list("abcd")), np.zeros(4), recency=True)
    assert choice.written == 7200.0 and choice.flagged.tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="no threshold reaches"):  # only the never-seen moments could, at infinity
        choose_threshold(np.array([np.nan, 1.0]), "<=", np.array([1, 0]), "precision", 1.0,
                         np.array(["a", "b"]), np.zeros(2), recency=True)  # fmt: skip
