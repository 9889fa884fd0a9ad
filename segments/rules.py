"""The rule language: parsed with a real grammar, compiled to closures, never ``eval``.

A rule is a boolean expression over a user's features, scores, cluster and
other segments::

    count(product_view, 24h, category == "shoes") >= 1 and not in_segment("buyers")
    at_least(2, count(product_view, 1h) >= 1, distinct(category, add_to_cart, 24h) >= 2)
    since(add_to_cart) <= 30m or intent >= thresholds.likely_buyer

It has ``and``, ``or``, ``not``, parentheses, comparisons, numbers, strings,
durations (``30m``, ``24h``, ``7d``, compared as seconds), windowed functions
with optional property filters (``count(event, window[, filters])``; an
event is a canonical type, or any event's name quoted: ``"Coupon Applied"``),
``sum(property, event, window[, filters])``, ``mean(...)``,
``distinct(property, event, window[, filters])``; ``any`` is every event type),
recency (``since(event[, filters])``, seconds; infinite when there was none),
sequences with a deadline (``not_followed(add_to_cart, purchase, 48h)``: the
last cart add is 48 hours old and no purchase came after it), ``at_least(n,
cond, ...)``, scores (``intent``, ``intent_online``, ``intent_batch``),
``cluster == "..."``, ``in_segment("...")``, named thresholds
(``thresholds.name``) and any feature of the feature set by name. Features the
rules name are derived as feature specs (:attr:`Rule.specs`). Errors name the
line and column, the problem and, where one is close, the likely name.

>>> rule = compile_rule('count(add_to_cart, 1h) >= 2 and intent > 0.5')
>>> [s.name for s in rule.specs]
['add_to_cart_count_1h']
>>> rule.holds(Context({"add_to_cart_count_1h": 2}, {"intent": 0.7}))
True
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lark import Token, Tree

from features.events import SEGMENT_NAMES
from features.specs import (
    ANY,
    Eq,
    In,
    Predicate,
    Recency,
    Spec,
    Trait,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
    parse_duration,
)
from segments.closures import (
    FROM_FEATURES,
    FROM_SCORES,
    FROM_THRESHOLDS,
    OPS,
    Context,
    Fn,
    all_of,
    any_of,
    at_least,
    compare_known,
    feature_vs_constant,
    never_is_infinite,
    pair,
    trait_number,
)
from segments.grammar import RuleError, parse
from segments.wakeups import Wakeups

SCORES = ("intent", "intent_online", "intent_batch")


MAX_RULE_CHARS = 10_000
MAX_WINDOW = timedelta(days=366)
MAX_DEPTH = 64  # nesting of a rule; evaluation recurses as deep


@dataclass(frozen=True, slots=True)
class Clause:
    """A leaf of a rule that decides it: its text, how to read its value, and
    the feature specs it reads (whose events are the evidence behind it)."""

    text: str
    fn: Fn
    reads: tuple[Spec, ...] = ()


@dataclass(slots=True)
class Rule:
    """A compiled rule: ``holds(ctx)``, the specs it needs, its clauses."""

    text: str
    fn: Fn
    specs: list[Spec]
    clauses: list[Clause]
    segments: set[str]
    thresholds: set[str]
    durations: list[float] = field(default_factory=list)  # seconds, as written in comparisons
    # when time alone flips a recency comparison: (spec, ms after its last event)
    edges: list[tuple[Spec, int]] = field(default_factory=list)
    # recency specs compared in ways whose flips are not worked out: woken at every duration
    loose: list[Spec] = field(default_factory=list)
    # window counts read only as ``count >= c`` and the like: (spec, the level at or below which a comparison flips)
    count_levels: list[tuple[Spec, int]] = field(default_factory=list)

    def holds(self, ctx: Context) -> bool:
        return bool(self.fn(ctx))

    def explain(self, ctx: Context) -> list[tuple[str, Any]]:
        """Each clause with its value now (what decided the rule)."""
        return [(c.text, _plain(c.fn(ctx))) for c in self.clauses]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _close(name: str, known: Sequence[str]) -> str:
    guess = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


class _Compiler:
    def __init__(
        self,
        text: str,
        known_features: Sequence[str | Spec],
        known_events: Sequence[str] | None,
        thresholds: Mapping[str, float] | None,
    ) -> None:
        self.text = text
        self.known_features = [k if isinstance(k, str) else k.name for k in known_features]
        self.known_specs = {k.name: k for k in known_features if not isinstance(k, str)}
        self.known_events = known_events
        self.threshold_names = None if thresholds is None else set(thresholds)
        self.specs: list[Spec] = []
        self.read: list[Spec] = []  # every spec read, in order, repeats kept
        self.clauses: list[Clause] = []
        self.segments: set[str] = set()
        self.thresholds: set[str] = set()
        self.durations: list[float] = []
        self.wakeups = Wakeups()  # when time alone can flip what this rule compares
        self.depth = 0
        # closures that only read one value: fn -> (features, scores or thresholds; its name; a recency,
        # where never is infinitely long ago)
        self.readers: dict[Fn, tuple[int, str, bool]] = {}

    def fail(self, node: Tree | Token, message: str) -> RuleError:
        meta = node if isinstance(node, Token) else node.meta
        line = getattr(meta, "line", None)
        column = getattr(meta, "column", None)
        return RuleError(message, line, column)

    def source(self, node: Tree | Token) -> str:
        if isinstance(node, Token):
            return str(node)
        meta = node.meta
        return self.text[meta.start_pos : meta.end_pos] if not meta.empty else ""

    # -- values: (kind, fn), kind in bool/number/string ---------------------------

    def value(self, node: Tree | Token) -> tuple[str, Fn]:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.fail(node, f"the rule is nested more than {MAX_DEPTH} levels deep")
            return self._value(node)
        finally:
            self.depth -= 1

    def _value(self, node: Tree | Token) -> tuple[str, Fn]:
        if isinstance(node, Token):
            raise self.fail(node, f"unexpected {node!s}")
        kind = node.data
        if kind == "or_expr":
            return "bool", any_of([self.boolean(c) for c in node.children])
        if kind == "and_expr":
            return "bool", all_of([self.boolean(c) for c in node.children])
        if kind == "not_":
            inner = self.boolean(node.children[0])
            return "bool", lambda ctx: not inner(ctx)
        if kind == "comparison":
            return "bool", self.comparison(node)
        if kind == "in_":
            return "bool", self.membership(node)
        if kind == "number":
            v = float(str(node.children[0]))
            return "number", lambda ctx: v
        if kind == "duration":
            try:
                seconds = parse_duration(str(node.children[0])).total_seconds()
            except OverflowError:
                raise self.fail(node, f"the duration {self.source(node)!r} is too long") from None
            self.durations.append(seconds)
            return "number", lambda ctx: seconds
        if kind == "string":
            s = str(node.children[0])[1:-1]
            return "string", lambda ctx: s
        if kind == "true":
            return "bool", lambda ctx: True
        if kind == "false":
            return "bool", lambda ctx: False
        if kind == "dotted":
            return self.name(node)
        if kind == "call":
            return self.call(node)
        raise self.fail(node, f"unsupported expression {kind}")

    def boolean(self, node: Tree | Token) -> Fn:
        mark = len(self.read)
        kind, fn = self.value(node)
        if kind != "bool":
            raise self.fail(
                node,
                f"expected a condition, got a {kind}: {self.source(node)!r} (compare it, as in "
                f"{self.source(node)} >= 1)",
            )
        if isinstance(node, Tree) and node.data in ("call", "dotted"):
            self.clauses.append(Clause(self.source(node), fn, tuple(self.read[mark:])))
        return fn

    def name(self, node: Tree) -> tuple[str, Fn]:
        parts = [str(t) for t in node.children]
        if parts[0] == "thresholds":
            if len(parts) != 2:
                raise self.fail(node, "a threshold is named thresholds.NAME")
            key = parts[1]
            if self.threshold_names is not None and key not in self.threshold_names:
                raise self.fail(node, f"unknown threshold {key!r}{_close(key, sorted(self.threshold_names))}")
            self.thresholds.add(key)
            fn: Fn = lambda ctx: ctx.thresholds[key]  # noqa: E731
            self.readers[fn] = (FROM_THRESHOLDS, key, False)
            return "number", fn
        if len(parts) != 1:
            raise self.fail(node, f"unknown name {'.'.join(parts)!r}")
        name = parts[0]
        if name in SCORES:
            fn = lambda ctx: ctx.scores.get(name, math.nan)  # noqa: E731
            self.readers[fn] = (FROM_SCORES, name, False)
            return "number", fn
        if name == "cluster":
            return "string", lambda ctx: ctx.cluster
        if name in self.known_features:
            spec = self.known_specs.get(name)
            if spec is not None:
                self.read.append(spec)
                if spec not in self.specs:
                    self.specs.append(spec)  # so next_due sees its window edges
            fn = lambda ctx: ctx.features.get(name, math.nan)  # noqa: E731
            self.readers[fn] = (FROM_FEATURES, name, False)
            return "number", fn
        known = [*self.known_features, *SCORES, "cluster", "thresholds"]
        raise self.fail(node, f"unknown name {name!r}{_close(name, known)}")

    def comparison(self, node: Tree) -> Fn:
        left, op, right = node.children
        mark = len(self.read)
        lk, lf = self.value(left)
        mid = len(self.read)
        rk, rf = self.value(right)
        reads = tuple(self.read[mark:])
        self.wakeups.comparison(left, right, str(op), self.read[mark:mid], self.read[mid:])
        op = str(op)
        if lk == "trait" or rk == "trait":
            holds = self.trait_comparison(node, lk, lf, op, right)
            self.clauses.append(Clause(self.source(node), lf, reads))
            return holds
        if lk != rk:
            raise self.fail(node, f"cannot compare a {lk} with a {rk}: {self.source(node)!r}")
        if lk in ("bool", "string") and op not in ("==", "!="):
            raise self.fail(node, f"{op} needs numbers: {self.source(node)!r}")
        compare = OPS[op]
        fn: Fn
        if op != "!=" and isinstance(right, Tree) and right.data in ("number", "duration", "string"):
            # against a constant: NaN compares False by itself, None is checked here
            c = rf(None)  # type: ignore[arg-type]
            read = self.readers.get(lf)
            if read is not None and read[0] == FROM_FEATURES:  # a feature against a constant: one closure
                fn = feature_vs_constant(read[1], read[2], op, c)
            else:
                fn = lambda ctx: (a := lf(ctx)) is not None and compare(a, c)  # noqa: E731
        elif (left_read := self.readers.get(lf)) is not None and (right_read := self.readers.get(rf)) is not None:
            fn = pair(left_read, right_read, compare)  # as since(purchase) > since(add_to_cart)
        else:
            fn = lambda ctx: compare_known(compare, lf(ctx), rf(ctx))  # noqa: E731
        shows_left = isinstance(left, Tree) and left.data in ("call", "dotted")
        self.clauses.append(Clause(self.source(node), lf if shows_left else fn, reads))
        return fn

    def trait_comparison(self, node: Tree, lk: str, lf: Fn, op: str, right: Any) -> Fn:
        """``trait("x") OP constant``: text against a string or ``true``/``false``,
        a number against a number (a trait that is not one compares false)."""
        if lk != "trait":
            raise self.fail(node, f'put the trait on the left, as in trait("plan") == "gold": {self.source(node)!r}')
        if not (isinstance(right, Tree) and right.data in ("string", "number", "true", "false")):
            raise self.fail(
                node, f'compare a trait with a constant, as in trait("plan") == "gold": {self.source(node)!r}'
            )
        if right.data == "number":
            c, compare = float(str(right.children[0])), OPS[op]
            return lambda ctx: (v := trait_number(lf(ctx))) is not None and compare(v, c)
        if op not in ("==", "!="):
            raise self.fail(node, f"{op} needs numbers: {self.source(node)!r}")
        text = str(self.literal(right)) if right.data == "string" else right.data  # true, false
        if op == "==":
            return lambda ctx: lf(ctx) == text
        return lambda ctx: isinstance(v := lf(ctx), str) and v != text  # a missing trait compares false

    def not_followed(self, node: Tree, args: list[Any]) -> Fn:
        """``not_followed(first, then, within[, filters on first])``: the user's
        last ``first`` is at least ``within`` old and no ``then`` came after
        it (a sequence with a deadline). It flips on by time exactly at the
        deadline, and only a new event turns it off."""
        if len(args) < 3:
            raise self.fail(node, "not_followed(first, then, within) needs two events and a deadline, as in "
                            "not_followed(add_to_cart, purchase, 48h)")  # fmt: skip
        first, then = self.event(args[0]), self.event(args[1])
        within = self.within(args[2])
        a, b = Recency(first, self.filters(args[3:])), Recency(then)
        self.feature(a)  # read, so next_due and the evidence know them
        self.feature(b)
        seconds = within.total_seconds()
        self.durations.append(seconds)
        self.wakeups.sequence(a, b, seconds)

        name_a, name_b, nan, inf = a.name, b.name, math.nan, math.inf

        def holds(ctx: Context) -> bool:
            features = ctx.features
            sa = features.get(name_a, nan)
            if sa is None or sa != sa or sa == inf or sa < seconds:  # never (infinitely long ago), or too recent
                return False
            sb = features.get(name_b, nan)
            return sb is None or sb != sb or sb > sa

        return holds

    def membership(self, node: Tree) -> Fn:
        left, *options = node.children
        mark = len(self.read)
        kind, lf = self.value(left)
        values = [self.value(o) for o in options]
        if any(k != kind for k, _ in values):
            raise self.fail(node, f"every option of 'in' must be a {kind}")
        wanted = {f(None) for _, f in values}  # type: ignore[arg-type]
        self.clauses.append(Clause(self.source(node), lf, tuple(self.read[mark:])))
        return lambda ctx: lf(ctx) in wanted

    # -- calls ---------------------------------------------------------------------

    def call(self, node: Tree) -> tuple[str, Fn]:
        name_token, *args = node.children
        args = [a for a in args if a is not None]
        name = str(name_token)
        if name in ("count", "sum", "mean", "distinct"):
            return "number", self.window(node, name, args)
        if name == "since":
            if not args:
                raise self.fail(node, "since(event[, filters]) needs an event")
            event = self.event(args[0])
            where = self.filters(args[1:])
            spec = Recency(event, where)
            seconds = self.feature(spec)
            # never is longer ago than any duration: since(purchase) > 48h holds for a user who never bought
            fn: Fn = lambda ctx: never_is_infinite(seconds(ctx))  # noqa: E731
            self.readers[fn] = (FROM_FEATURES, spec.name, True)
            return "number", fn
        if name == "not_followed":
            return "bool", self.not_followed(node, args)
        if name == "at_least":
            if len(args) < 2:
                raise self.fail(node, "at_least(n, condition, ...) needs a count and conditions")
            kind, nf = self.value(args[0])
            if kind != "number" or not isinstance(args[0], Tree) or args[0].data != "number":
                raise self.fail(args[0], "at_least's first argument is a whole number")
            n = int(nf(None))  # type: ignore[arg-type]
            conds = [self.boolean(a) for a in args[1:]]
            if not 0 < n <= len(conds):
                raise self.fail(node, f"at_least({n}, ...) with {len(conds)} conditions can never hold")
            return "bool", at_least(n, conds)
        if name == "in_segment":
            if len(args) != 1 or not isinstance(args[0], Tree) or args[0].data != "string":
                raise self.fail(node, 'in_segment takes one segment name in quotes: in_segment("buyers")')
            segment = str(args[0].children[0])[1:-1]
            self.segments.add(segment)
            return "bool", lambda ctx: segment in ctx.segments
        if name == "trait":
            if len(args) != 1 or not isinstance(args[0], Tree) or args[0].data != "string":
                raise self.fail(node, 'trait takes one trait name in quotes: trait("plan")')
            return "trait", self.feature(Trait.of(str(self.literal(args[0]))))
        functions = ["count", "sum", "mean", "distinct", "since", "not_followed", "at_least", "in_segment", "trait"]
        raise self.fail(node, f"unknown function {name!r}{_close(name, functions)}")

    def window(self, node: Tree, fn_name: str, args: list[Any]) -> Fn:
        if fn_name == "count":
            if len(args) < 2:
                raise self.fail(node, "count(event, window[, filters]) needs an event and a window")
            event, within, rest = self.event(args[0]), self.within(args[1]), args[2:]
            spec: Spec = WindowCount(event, within, self.filters(rest))
        else:
            if len(args) < 3:
                raise self.fail(
                    node, f"{fn_name}(property, event, window[, filters]) needs a property, an event and a window"
                )
            prop = self.bare(args[0], "a property name")
            event, within, rest = self.event(args[1]), self.within(args[2]), args[3:]
            where = self.filters(rest)
            if fn_name == "sum":
                spec = WindowSum(prop, event, within, where)
            elif fn_name == "mean":
                spec = WindowMean(prop, event, within, where)
            else:
                spec = WindowDistinct(prop, event, within, where)
        return self.feature(spec)

    def feature(self, spec: Spec) -> Fn:
        self.read.append(spec)
        if spec not in self.specs:
            self.specs.append(spec)
        name = spec.name
        fn: Fn = lambda ctx: ctx.features.get(name, math.nan)  # noqa: E731
        self.readers[fn] = (FROM_FEATURES, name, False)
        return fn

    def bare(self, node: Any, what: str) -> str:
        if isinstance(node, Tree) and node.data == "dotted" and len(node.children) == 1:
            return str(node.children[0])
        raise self.fail(node, f"expected {what}, got {self.source(node)!r}")

    def event(self, node: Any) -> str:
        if isinstance(node, Tree) and node.data == "string":  # an event by its name: a custom one, or Segment's
            given = str(self.literal(node))
            if not given.strip():
                raise self.fail(node, "an event name is not empty")
            return SEGMENT_NAMES.get(given, given)
        name = self.bare(node, "an event type (or a quoted event name)")
        if name == "any":
            return ANY
        if self.known_events is not None and name not in self.known_events:
            raise self.fail(node, f"unknown event type {name!r}{_close(name, list(self.known_events))}")
        return name

    def within(self, node: Any) -> timedelta:
        if isinstance(node, Tree) and node.data == "duration":
            try:
                within = parse_duration(str(node.children[0]))
            except (ValueError, OverflowError):
                within = timedelta(days=-1)
            if not timedelta(0) < within <= MAX_WINDOW:
                raise self.fail(node, f"a window is longer than zero and at most 366d, got {self.source(node)!r}")
            return within
        raise self.fail(node, f"expected a window such as 24h, got {self.source(node)!r}")

    def filters(self, nodes: list[Any]) -> Predicate | None:
        if not nodes:
            return None
        if len(nodes) > 1:
            raise self.fail(nodes[1], "one property filter per function (field == value or field in (...))")
        node = nodes[0]
        if isinstance(node, Tree) and node.data == "comparison":
            left, op, right = node.children
            if str(op) != "==":
                raise self.fail(node, f"a filter compares with ==, got {op}")
            return Eq(self.bare(left, "a property name"), self.literal(right))
        if isinstance(node, Tree) and node.data == "in_":
            left, *options = node.children
            return In(self.bare(left, "a property name"), tuple(self.literal(o) for o in options))
        raise self.fail(node, f'expected a filter such as category == "shoes", got {self.source(node)!r}')

    def literal(self, node: Any) -> str | float | bool:
        if isinstance(node, Tree):
            if node.data == "string":
                return str(node.children[0])[1:-1]
            if node.data == "number":
                return float(str(node.children[0]))
            if node.data in ("true", "false"):
                return node.data == "true"
        raise self.fail(node, f"expected a literal value, got {self.source(node)!r}")


def compile_rule(
    text: str,
    known_features: Sequence[str | Spec] = (),
    known_events: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Rule:
    """Parse and compile one rule; names are checked against what is known.
    Known features given as specs (not just names) join the rule's specs, so
    ``next_due`` wakes at their window edges too."""
    if not text or not text.strip():
        raise RuleError("the rule is empty", 1, 1)
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(f"the rule is {len(text)} characters long; at most {MAX_RULE_CHARS} are allowed", 1, 1)
    try:
        tree = parse(text)
        compiler = _Compiler(text, known_features, known_events, thresholds)
        fn = compiler.boolean(tree)
    except RecursionError:
        raise RuleError("the rule is nested too deeply", 1, 1) from None
    clauses = compiler.clauses or [Clause(text.strip(), fn)]
    edges, loose, levels = compiler.wakeups.result(compiler.read)
    return Rule(
        text, fn, compiler.specs, clauses, compiler.segments, compiler.thresholds, compiler.durations,
        edges, loose, levels,
    )  # fmt: skip
