"""What a compiled rule runs: the context it reads and the closures it is
built from (comparisons with their missing-value rules, ``and``/``or`` that
stop at the first part that decides, ``at_least``)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

FROM_FEATURES, FROM_SCORES, FROM_THRESHOLDS = range(3)  # where a rule reads a value


@dataclass(slots=True)
class Context:
    """What a rule reads: features, scores, cluster, current memberships,
    thresholds."""

    features: Mapping[str, Any]
    scores: Mapping[str, float] = field(default_factory=dict)
    cluster: str | None = None
    segments: frozenset[str] | set[str] = frozenset()
    thresholds: Mapping[str, float] = field(default_factory=dict)


Fn = Callable[[Context], Any]


def never_is_infinite(value: Any) -> float:
    return math.inf if value is None or value != value else value


def compare_known(op: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, float) and math.isnan(a):
        return False
    return op(a, b)


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def trait_number(value: object) -> float | None:
    """A trait's text as a number, if it is a finite one."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def feature_vs_constant(name: str, recency: bool, op: str, c: Any) -> Fn:
    """``feature OP c`` as one closure: missing or NaN compares false, a
    recency that never happened is infinitely long ago."""
    nan = math.nan
    if recency:  # a value is never None or NaN here: those are infinite
        if op == ">=":
            return lambda ctx: (a := ctx.features.get(name, nan)) is None or a != a or a >= c
        if op == ">":
            return lambda ctx: (a := ctx.features.get(name, nan)) is None or a != a or a > c
        if op == "<=":
            return lambda ctx: (a := ctx.features.get(name, nan)) is not None and a == a and a <= c
        if op == "<":
            return lambda ctx: (a := ctx.features.get(name, nan)) is not None and a == a and a < c
        compare = OPS[op]
        return lambda ctx: compare(never_is_infinite(ctx.features.get(name, nan)), c)
    if op == ">=":
        return lambda ctx: (a := ctx.features.get(name, nan)) is not None and a >= c
    if op == ">":
        return lambda ctx: (a := ctx.features.get(name, nan)) is not None and a > c
    if op == "<=":
        return lambda ctx: (a := ctx.features.get(name, nan)) is not None and a <= c
    if op == "<":
        return lambda ctx: (a := ctx.features.get(name, nan)) is not None and a < c
    compare = OPS[op]
    return lambda ctx: (a := ctx.features.get(name, nan)) is not None and compare(a, c)


def pair(left: tuple[int, str, bool], right: tuple[int, str, bool], compare: Callable[[Any, Any], bool]) -> Fn:
    """``a OP b`` of two read values (features, scores, thresholds) as one
    closure, with :func:`compare`'s rules: missing or NaN compares false; a
    recency that never happened is infinitely long ago."""
    (a_from, a, a_recency), (b_from, b, b_recency) = left, right
    nan = math.nan
    if a_from == FROM_FEATURES and b_from == FROM_FEATURES:  # the common case, as since(purchase) > since(add_to_cart)

        def features(ctx: Context) -> bool:
            values = ctx.features
            return _compared(values.get(a, nan), a_recency, values.get(b, nan), b_recency, compare)

        return features
    return lambda ctx: _compared(_read(ctx, a_from, a), a_recency, _read(ctx, b_from, b), b_recency, compare)


def _read(ctx: Context, where: int, name: str) -> Any:
    if where == FROM_FEATURES:
        return ctx.features.get(name, math.nan)
    if where == FROM_SCORES:
        return ctx.scores.get(name, math.nan)
    return ctx.thresholds[name]


def _compared(x: Any, x_recency: bool, y: Any, y_recency: bool, compare: Callable[[Any, Any], bool]) -> bool:
    if x_recency and (x is None or x != x):
        x = math.inf
    if y_recency and (y is None or y != y):
        y = math.inf
    if x is None or y is None or (isinstance(x, float) and x != x):
        return False
    return compare(x, y)


def at_least(n: int, conds: list[Fn]) -> Fn:
    """At least ``n`` of the conditions hold (stops counting once it knows)."""
    total = len(conds)

    def fn(ctx: Context) -> bool:
        held = 0
        for i, cond in enumerate(conds):
            if cond(ctx):
                held += 1
                if held >= n:
                    return True
            elif held + total - i - 1 < n:
                return False
        return False

    return fn


def all_of(parts: list[Fn]) -> Fn:
    return _decided_by(parts, every=True)


def any_of(parts: list[Fn]) -> Fn:
    return _decided_by(parts, every=False)


def _decided_by(parts: list[Fn], every: bool) -> Fn:
    """``and`` (``every``) or ``or`` over parts, stopping at the first that decides."""
    if len(parts) == 2:
        a, b = parts
        if every:
            return lambda ctx: bool(a(ctx) and b(ctx))
        return lambda ctx: bool(a(ctx) or b(ctx))
    decided = not every

    def fn(ctx: Context) -> bool:
        for part in parts:  # a plain loop: all()/any() over a generator cost more per rule
            if (not part(ctx)) is every:  # and: a part that fails; or: a part that holds
                return decided
        return every

    return fn
