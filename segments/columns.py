"""A rule's execution over many rows at once: the IR evaluated with NumPy over
columns (one row per user and moment), with exactly the closures' rules: a
missing value (NaN, or None in a column of objects) compares false, with
``!=`` too; a recency that never happened is infinitely long ago; a trait
compares as text, or as a number where its text is one.

>>> import numpy as np
>>> from segments.checking import check
>>> rows = Columns(3, {"add_to_cart_recency_s": np.array([60.0, 7200.0, np.nan])})
>>> evaluate(check("since(add_to_cart) >= 1h").tree, rows).tolist()
[False, True, True]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray as Array

from segments.closures import OPS, trait_number
from segments.ir import (
    FROM_FEATURES,
    FROM_SCORES,
    All,
    Any_,
    AtLeast,
    ClusterRead,
    Compare,
    Const,
    InSegment,
    Node,
    Not,
    NotFollowed,
    OneOf,
    Read,
    TraitCompare,
    TraitRead,
)

_NUMPY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">=": np.greater_equal,
    "<=": np.less_equal,
    ">": np.greater,
    "<": np.less,
}


@dataclass
class Columns:
    """What rules read, a row per user and moment: features by name (floats,
    NaN where missing; objects for text), scores, the cluster, memberships of
    the segments rules refer to, and the thresholds."""

    n: int
    features: Mapping[str, Array] = field(default_factory=dict)
    scores: Mapping[str, Array[np.float64]] = field(default_factory=dict)
    cluster: Array | None = None
    segments: Mapping[str, Array[np.bool_]] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)


def evaluate(node: Node, rows: Columns) -> Array:
    """``node``'s value on every row: booleans for a condition."""
    if isinstance(node, Const):
        return np.full(rows.n, node.value, dtype=object if node.kind == "string" else None)
    if isinstance(node, Read):
        return _read(node, rows)
    if isinstance(node, TraitRead):
        return _objects(rows.features.get(node.spec.name), rows.n)
    if isinstance(node, ClusterRead):
        return _objects(rows.cluster, rows.n)
    if isinstance(node, Compare):
        return _compare(node, rows)
    if isinstance(node, TraitCompare):
        return _trait_compare(node, rows)
    if isinstance(node, OneOf):
        values, wanted = evaluate(node.value, rows), {o.value for o in node.options}
        if values.dtype == object:
            return _each(lambda v: v in wanted, values)
        return np.isin(values, list(wanted))  # NaN is in no set
    if isinstance(node, Not):
        return ~evaluate(node.part, rows)
    if isinstance(node, All):
        return np.logical_and.reduce([evaluate(p, rows) for p in node.parts])
    if isinstance(node, Any_):
        return np.logical_or.reduce([evaluate(p, rows) for p in node.parts])
    if isinstance(node, AtLeast):
        held = np.sum([evaluate(p, rows) for p in node.parts], axis=0)
        return np.asarray(held >= node.n)
    if isinstance(node, InSegment):
        member = rows.segments.get(node.name)
        return np.zeros(rows.n, dtype=bool) if member is None else member
    return _not_followed(node, rows)


def _objects(values: Array | None, n: int) -> Array:
    return np.full(n, None, dtype=object) if values is None else values


def _each(fn: Callable[[Any], bool], values: Any) -> Array[np.bool_]:
    return np.fromiter((fn(v) for v in values), dtype=bool)


def _read(node: Read, rows: Columns) -> Array:
    if node.source == FROM_FEATURES:
        values = rows.features.get(node.name)
    elif node.source == FROM_SCORES:
        values = rows.scores.get(node.name)
    else:
        return np.full(rows.n, rows.thresholds[node.name], dtype=np.float64)
    if values is None:
        values = np.full(rows.n, np.nan)
    if node.recency:
        return _never_is_infinite(values)
    return values


def _never_is_infinite(values: Array) -> Array[np.float64]:
    if values.dtype == object:
        values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.where(np.isnan(values), np.inf, values)


def _known(values: Array) -> Array[np.bool_]:
    """Rows whose value compares at all (not None, not NaN)."""
    if values.dtype == object:
        return _each(lambda v: v is not None and v == v, values)
    if values.dtype.kind == "f":
        return ~np.isnan(values)
    return np.ones(len(values), dtype=bool)


def _compare(node: Compare, rows: Columns) -> Array[np.bool_]:
    left, right = evaluate(node.left, rows), evaluate(node.right, rows)
    if left.dtype == object or right.dtype == object:
        compare = OPS[node.op]
        return _each(lambda pair: pair[0] is not None and pair[1] is not None and pair[0] == pair[0]
                     and bool(compare(*pair)), zip(left, right, strict=True))  # fmt: skip
    return _known(left) & _NUMPY_OPS[node.op](left, right)


def _trait_compare(node: TraitCompare, rows: Columns) -> Array[np.bool_]:
    values = evaluate(node.trait, rows)
    if node.value.kind == "number":
        c, compare = node.value.value, OPS[node.op]
        return _each(lambda v: (x := trait_number(v)) is not None and compare(x, c), values)
    text = str(node.value.value) if node.value.kind == "string" else ("true" if node.value.value else "false")
    if node.op == "==":
        return _each(lambda v: v == text, values)
    return _each(lambda v: isinstance(v, str) and v != text, values)


def _not_followed(node: NotFollowed, rows: Columns) -> Array[np.bool_]:
    nan = np.full(rows.n, np.nan)
    first = np.asarray(rows.features.get(node.first.name, nan), dtype=np.float64)
    then = np.asarray(rows.features.get(node.then.name, nan), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        due = ~np.isnan(first) & (first != np.inf) & (first >= node.seconds)
        return due & (np.isnan(then) | (then > first))
