"""A rule's per-profile execution: the context it reads, and the closures
:func:`lower` builds from the IR (comparisons with their missing-value rules,
``and``/``or`` that stop at the first part that decides, ``at_least``),
specialised where a shape is common (a feature against a constant, two
values read by name)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
    if recency and not (isinstance(c, float) and math.isfinite(c)):
        compare = OPS[op]  # against infinity: never (infinitely long ago) compares as infinity does
        return lambda ctx: compare(never_is_infinite(ctx.features.get(name, nan)), c)
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


def lower(node: Node) -> Fn:
    """The closure that evaluates ``node`` on one context."""
    if isinstance(node, Const):
        value = node.value
        return lambda ctx: value
    if isinstance(node, Read):
        return _reader(node)
    if isinstance(node, TraitRead):
        name, nan = node.spec.name, math.nan
        return lambda ctx: ctx.features.get(name, nan)
    if isinstance(node, ClusterRead):
        return lambda ctx: ctx.cluster
    if isinstance(node, Compare):
        return _comparison(node)
    if isinstance(node, TraitCompare):
        return _trait_comparison(node)
    if isinstance(node, OneOf):
        of, wanted = lower(node.value), {o.value for o in node.options}
        return lambda ctx: of(ctx) in wanted
    if isinstance(node, Not):
        inner = lower(node.part)
        return lambda ctx: not inner(ctx)
    if isinstance(node, All):
        return all_of([lower(p) for p in node.parts])
    if isinstance(node, Any_):
        return any_of([lower(p) for p in node.parts])
    if isinstance(node, AtLeast):
        return at_least(node.n, [lower(p) for p in node.parts])
    if isinstance(node, InSegment):
        segment = node.name
        return lambda ctx: segment in ctx.segments
    return _not_followed(node)


def _reader(node: Read) -> Fn:
    name, nan = node.name, math.nan
    if node.source == FROM_FEATURES:
        if node.recency:
            return lambda ctx: never_is_infinite(ctx.features.get(name, nan))
        return lambda ctx: ctx.features.get(name, nan)
    if node.source == FROM_SCORES:
        return lambda ctx: ctx.scores.get(name, nan)
    return lambda ctx: ctx.thresholds[name]


def _comparison(node: Compare) -> Fn:
    left, op, right = node.left, node.op, node.right
    compare = OPS[op]
    if op != "!=" and isinstance(right, Const) and right.kind != "bool":
        c = right.value  # against a constant: NaN compares False by itself, None is checked here
        if isinstance(left, Read) and left.source == FROM_FEATURES:  # a feature against a constant: one closure
            return feature_vs_constant(left.name, left.recency, op, c)
        lf = lower(left)
        return lambda ctx: (a := lf(ctx)) is not None and compare(a, c)
    if isinstance(left, Read) and isinstance(right, Read):  # as since(purchase) > since(add_to_cart)
        return pair((left.source, left.name, left.recency), (right.source, right.name, right.recency), compare)
    lf, rf = lower(left), lower(right)
    return lambda ctx: compare_known(compare, lf(ctx), rf(ctx))


def _trait_comparison(node: TraitCompare) -> Fn:
    """Text with a string or ``true``/``false``; a number with a number (a
    trait that is not one compares false); a missing trait compares false."""
    lf = lower(node.trait)
    if node.value.kind == "number":
        c, compare = node.value.value, OPS[node.op]
        return lambda ctx: (v := trait_number(lf(ctx))) is not None and compare(v, c)
    text = str(node.value.value) if node.value.kind == "string" else ("true" if node.value.value else "false")
    if node.op == "==":
        return lambda ctx: lf(ctx) == text
    return lambda ctx: isinstance(v := lf(ctx), str) and v != text


def _not_followed(node: NotFollowed) -> Fn:
    """On exactly at the deadline after the last ``first``; only a new event turns it off."""
    name_a, name_b, seconds, nan, inf = node.first.name, node.then.name, node.seconds, math.nan, math.inf

    def holds(ctx: Context) -> bool:
        features = ctx.features
        sa = features.get(name_a, nan)
        if sa is None or sa != sa or sa == inf or sa < seconds:  # never (infinitely long ago), or too recent
            return False
        sb = features.get(name_b, nan)
        return sb is None or sb != sb or sb > sa

    return holds
