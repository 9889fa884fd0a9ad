"""Rules as columns equal rules as closures: on random rules of every
construct and random rows (missing values, NaN, never-happened recencies,
traits that are and are not numbers), the vectorized evaluation of the IR
gives exactly what the per-profile closures give, row by row."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.closures import Context
from segments.columns import Columns, evaluate
from segments.rules import compile_rule

OPS = ["==", "!=", ">=", "<=", ">", "<"]
NUMBERS = ["0", "1", "2", "2.5", "1e999"]
DURATIONS = ["30m", "1h", "48h"]
THRESHOLDS = {"cut": 0.35, "high": 2.0}
SEGMENTS = ["a", "b"]

leaf = st.one_of(
    st.builds(
        lambda e, op, c: f"count({e}, 1h) {op} {c}",
        st.sampled_from(["add_to_cart", "any"]),
        st.sampled_from(OPS),
        st.sampled_from(NUMBERS),
    ),
    st.builds(
        lambda op, c: f'{c} {op} count(product_view, 24h, category == "shoes")',
        st.sampled_from(OPS),
        st.sampled_from(NUMBERS),
    ),
    st.builds(
        lambda e, op, d: f"since({e}) {op} {d}",
        st.sampled_from(["purchase", "add_to_cart"]),
        st.sampled_from(OPS),
        st.sampled_from(DURATIONS + NUMBERS),
    ),
    st.builds(lambda op: f"since(purchase) {op} since(add_to_cart)", st.sampled_from(OPS)),
    st.builds(
        lambda s, op, t: f"{s} {op} {t}",
        st.sampled_from(["intent", "intent_online", "intent_batch"]),
        st.sampled_from(OPS),
        st.sampled_from(["thresholds.cut", "0.5", "intent_online"]),
    ),
    st.builds(lambda op, v: f"sum(price, purchase, 7d) {op} {v}", st.sampled_from(OPS), st.sampled_from(NUMBERS)),
    st.builds(
        lambda op, v: f'trait("plan") {op} {v}',
        st.sampled_from(["==", "!="]),
        st.sampled_from(['"gold"', "true", "false"]),
    ),
    st.builds(lambda op, v: f'trait("age") {op} {v}', st.sampled_from(OPS), st.sampled_from(NUMBERS)),
    st.builds(lambda op, c: f'cluster {op} "{c}"', st.sampled_from(["==", "!="]), st.sampled_from(["c1", "c2"])),
    st.just('cluster in ("c1", "c3")'),
    st.just("count(add_to_cart, 1h) in (1, 2)"),
    st.builds(lambda s: f'in_segment("{s}")', st.sampled_from(SEGMENTS)),
    st.builds(lambda s, b: f'in_segment("{s}") == {b}', st.sampled_from(SEGMENTS), st.sampled_from(["true", "false"])),
    st.builds(lambda d: f"not_followed(add_to_cart, purchase, {d})", st.sampled_from(DURATIONS)),
    st.sampled_from(["true", "false"]),
)


def combine(parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, b: f"({a}) and ({b})", parts, parts),
        st.builds(lambda a, b, c: f"({a}) or ({b}) or ({c})", parts, parts, parts),
        st.builds(lambda a: f"not ({a})", parts),
        st.builds(
            lambda n, xs: f"at_least({min(n, len(xs))}, {', '.join(xs)})",
            st.integers(1, 3),
            st.lists(parts, min_size=1, max_size=3),
        ),
        st.builds(lambda a: f"({a}) == true", parts),
    )


rules = st.recursive(leaf, combine, max_leaves=8)
numbers = st.sampled_from([math.nan, math.inf, 0.0, 1.0, 2.0, 3.0, 1800.0, 3600.0, 3600.5, 172800.0, 5e5])
recencies = st.sampled_from([math.nan, math.inf, 0.0, 1800.0, 3600.0, 3600.5, 172800.0])  # seconds since
traits = st.sampled_from([None, "gold", "silver", "true", "false", "30", "29.5", "nan", "inf", "x"])


@settings(max_examples=500, deadline=None)
@given(text=rules, data=st.data(), n=st.integers(1, 12))
def test_columns_equal_closures_row_by_row(text: str, data: st.DataObject, n: int) -> None:
    rule = compile_rule(text, thresholds=THRESHOLDS)
    assert rule.tree is not None
    numeric = [s.name for s in rule.specs if not s.name.startswith("trait_")]
    texts = [s.name for s in rule.specs if s.name.startswith("trait_")]
    rows = []
    for _ in range(n):
        present = [k for k in numeric if data.draw(st.booleans())]
        features: dict[str, Any] = {k: data.draw(recencies if k.endswith("_s") else numbers) for k in present}
        features |= {k: v for k in texts if (v := data.draw(traits)) is not None}
        scores = {k: data.draw(st.sampled_from([0.1, 0.35, 0.5, 0.9])) for k in ("intent", "intent_online")}
        if data.draw(st.booleans()):
            scores["intent_batch"] = data.draw(st.sampled_from([0.2, 0.5, math.nan]))
        cluster = data.draw(st.sampled_from([None, "c1", "c2", "c3"]))
        segments = {s for s in SEGMENTS if data.draw(st.booleans())}
        rows.append(Context(features, scores, cluster, segments, THRESHOLDS))
    columns = Columns(
        n,
        features={k: np.array([r.features.get(k, math.nan) for r in rows], dtype=np.float64) for k in numeric}
        | {k: np.array([r.features.get(k) for r in rows], dtype=object) for k in texts},
        scores={
            k: np.array([r.scores.get(k, math.nan) for r in rows]) for k in ("intent", "intent_online", "intent_batch")
        },
        cluster=np.array([r.cluster for r in rows], dtype=object),
        segments={s: np.array([s in r.segments for r in rows]) for s in SEGMENTS},
        thresholds=THRESHOLDS,
    )
    got = evaluate(rule.tree, columns)
    assert got.dtype == bool and got.tolist() == [rule.holds(r) for r in rows], text
