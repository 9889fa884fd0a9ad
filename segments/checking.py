"""Checking a rule: its parse tree becomes the typed IR (:mod:`segments.ir`),
every name resolved against what is known and every type checked. Errors name
the line and column, the problem and, where one is close, the likely name.

>>> checked = check("count(add_to_cart, 1h) >= 2", ["intent"])
>>> [s.name for s in checked.specs], [text for text, _, _ in checked.clauses]
(['add_to_cart_count_1h'], ['count(add_to_cart, 1h) >= 2'])
"""

from __future__ import annotations

import difflib
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
    LastValue,
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
from segments.grammar import RuleError, parse
from segments.ir import (
    FROM_FEATURES,
    FROM_SCORES,
    FROM_THRESHOLDS,
    NAMED,
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
    kind,
    reads,
)

SCORES = ("intent", "intent_online", "intent_batch")
MAX_RULE_CHARS = 10_000
MAX_WINDOW = timedelta(days=366)
MAX_DEPTH = 64  # nesting of a rule; evaluation recurses as deep
FUNCTIONS = ("count", "sum", "mean", "distinct", "since", "not_followed", "at_least", "in_segment", "trait")


@dataclass
class Checked:
    """A checked rule: its IR, and what it needs and shows."""

    text: str
    tree: Node
    specs: list[Spec] = field(default_factory=list)  # derived or known specs it reads, first use first
    # the leaves that decide it, in order: (text, the node whose value is shown, the specs it reads)
    clauses: list[tuple[str, Node, tuple[Spec, ...]]] = field(default_factory=list)
    segments: set[str] = field(default_factory=set)
    thresholds: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)  # seconds, as written


def close_name(name: str, known: Sequence[str]) -> str:
    guess = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


def check(
    text: str,
    known_features: Sequence[str | Spec] = (),
    known_events: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Checked:
    """Parse and check one rule; names are checked against what is known.
    Known features given as specs (not just names) are read as those specs."""
    if not text or not text.strip():
        raise RuleError("the rule is empty", 1, 1)
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(f"the rule is {len(text)} characters long; at most {MAX_RULE_CHARS} are allowed", 1, 1)
    try:
        checker = _Checker(text, known_features, known_events, thresholds)
        tree = checker.boolean(parse(text))
    except RecursionError:
        raise RuleError("the rule is nested too deeply", 1, 1) from None
    out = checker.out
    out.tree = tree
    out.specs = list(dict.fromkeys(reads(tree)))
    if not out.clauses:
        out.clauses.append((text.strip(), tree, ()))
    return out


class _Checker:
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
        self.out = Checked(text, Const(True, "bool"))
        self.depth = 0

    def fail(self, node: Tree | Token, message: str) -> RuleError:
        meta = node if isinstance(node, Token) else node.meta
        return RuleError(message, getattr(meta, "line", None), getattr(meta, "column", None))

    def source(self, node: Tree | Token) -> str:
        if isinstance(node, Token):
            return str(node)
        meta = node.meta
        return self.text[meta.start_pos : meta.end_pos] if not meta.empty else ""

    def clause(self, text: str, shown: Node, of: Node) -> None:
        self.out.clauses.append((text, shown, tuple(reads(of))))

    # -- values --------------------------------------------------------------------

    def value(self, node: Tree | Token) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.fail(node, f"the rule is nested more than {MAX_DEPTH} levels deep")
            return self._value(node)
        finally:
            self.depth -= 1

    def _value(self, node: Tree | Token) -> Node:
        if isinstance(node, Token):
            raise self.fail(node, f"unexpected {node!s}")
        what, text = node.data, self.source(node)
        if what == "or_expr":
            return Any_(tuple(self.boolean(c) for c in node.children), text)
        if what == "and_expr":
            return All(tuple(self.boolean(c) for c in node.children), text)
        if what == "not_":
            return Not(self.boolean(node.children[0]), text)
        if what == "comparison":
            return self.comparison(node)
        if what == "in_":
            return self.one_of(node)
        if what == "number":
            return Const(float(str(node.children[0])), "number", text)
        if what == "duration":
            try:
                seconds = parse_duration(str(node.children[0])).total_seconds()
            except OverflowError:
                raise self.fail(node, f"the duration {text!r} is too long") from None
            self.out.durations.append(seconds)
            return Const(seconds, "number", text, duration=True)
        if what == "string":
            return Const(str(node.children[0])[1:-1], "string", text)
        if what in ("true", "false"):
            return Const(what == "true", "bool", text)
        if what == "dotted":
            return self.name(node)
        if what == "call":
            return self.call(node)
        raise self.fail(node, f"unsupported expression {what}")

    def boolean(self, node: Tree | Token) -> Node:
        checked = self.value(node)
        if kind(checked) != "bool":
            raise self.fail(
                node,
                f"expected a condition, got a {kind(checked)}: {self.source(node)!r} (compare it, as in "
                f"{self.source(node)} >= 1)",
            )
        if isinstance(node, Tree) and node.data in ("call", "dotted"):
            self.clause(self.source(node), checked, checked)
        return checked

    def name(self, node: Tree) -> Node:
        parts, text = [str(t) for t in node.children], self.source(node)
        if parts[0] == "thresholds":
            if len(parts) != 2:
                raise self.fail(node, "a threshold is named thresholds.NAME")
            key = parts[1]
            if self.threshold_names is not None and key not in self.threshold_names:
                raise self.fail(node, f"unknown threshold {key!r}{close_name(key, sorted(self.threshold_names))}")
            self.out.thresholds.add(key)
            return Read(FROM_THRESHOLDS, key, text=text)
        if len(parts) != 1:
            raise self.fail(node, f"unknown name {'.'.join(parts)!r}")
        name = parts[0]
        if name in SCORES:
            return Read(FROM_SCORES, name, text=text)
        if name == "cluster":
            return ClusterRead(text)
        if name in self.known_features:
            spec = self.known_specs.get(name)
            if isinstance(spec, LastValue):
                example = f'count(any, 24h, {spec.field} == "...") >= 1'
                raise self.fail(node, f"{name} is a category, which rules do not compare: filter a window by the "
                                      f"event's field instead, as in {example}")  # fmt: skip
            return Read(FROM_FEATURES, name, spec=spec, text=text)
        known = [*self.known_features, *SCORES, "cluster", "thresholds"]
        raise self.fail(node, f"unknown name {name!r}{close_name(name, known)}")

    def comparison(self, node: Tree) -> Node:
        left, op_token, right = node.children
        op, text = str(op_token), self.source(node)
        lhs, rhs = self.value(left), self.value(right)
        lk, rk = kind(lhs), kind(rhs)
        if lk == "trait" or rk == "trait":
            traits = self.trait_comparison(node, lhs, op, rhs)
            self.clause(text, lhs, traits)
            return traits
        if lk != rk:
            raise self.fail(node, f"cannot compare a {lk} with a {rk}: {text!r}")
        if lk in ("bool", "string") and op not in ("==", "!="):
            raise self.fail(node, f"{op} needs numbers: {text!r}")
        compared = Compare(op, lhs, rhs, text)
        self.clause(text, lhs if isinstance(lhs, NAMED) else compared, compared)
        return compared

    def trait_comparison(self, node: Tree, lhs: Node, op: str, rhs: Node) -> TraitCompare:
        """``trait("x") OP constant``: text against a string or ``true``/``false``,
        a number against a number (a trait that is not one compares false)."""
        text = self.source(node)
        if not isinstance(lhs, TraitRead):
            raise self.fail(node, f'put the trait on the left, as in trait("plan") == "gold": {text!r}')
        if not isinstance(rhs, Const) or rhs.duration:
            raise self.fail(node, f'compare a trait with a constant, as in trait("plan") == "gold": {text!r}')
        if rhs.kind != "number" and op not in ("==", "!="):
            raise self.fail(node, f"{op} needs numbers: {text!r}")
        return TraitCompare(op, lhs, rhs, text)

    def one_of(self, node: Tree) -> Node:
        left, *options = node.children
        value = self.value(left)
        consts = [self.value(o) for o in options]
        if any(kind(c) != kind(value) for c in consts):
            raise self.fail(node, f"every option of 'in' must be a {kind(value)}")
        checked = OneOf(value, tuple(c for c in consts if isinstance(c, Const)), self.source(node))
        self.clause(self.source(node), value, value)
        return checked

    # -- calls ---------------------------------------------------------------------

    def call(self, node: Tree) -> Node:
        name_token, *args = node.children
        args = [a for a in args if a is not None]
        name, text = str(name_token), self.source(node)
        if name in ("count", "sum", "mean", "distinct"):
            return self.feature(self.window(node, name, args), text)
        if name == "since":
            if not args:
                raise self.fail(node, "since(event[, filters]) needs an event")
            spec = Recency(self.event(args[0]), self.filters(args[1:]))
            # never is longer ago than any duration: since(purchase) > 48h holds for a user who never bought
            return Read(FROM_FEATURES, spec.name, recency=True, spec=spec, text=text)
        if name == "not_followed":
            return self.not_followed(node, args)
        if name == "at_least":
            if len(args) < 2:
                raise self.fail(node, "at_least(n, condition, ...) needs a count and conditions")
            count = self.value(args[0])
            if not isinstance(args[0], Tree) or args[0].data != "number" or not isinstance(count, Const):
                raise self.fail(args[0], "at_least's first argument is a whole number")
            n = int(count.value)
            conds = tuple(self.boolean(a) for a in args[1:])
            if not 0 < n <= len(conds):
                raise self.fail(node, f"at_least({n}, ...) with {len(conds)} conditions can never hold")
            return AtLeast(n, conds, text)
        if name == "in_segment":
            if len(args) != 1 or not isinstance(args[0], Tree) or args[0].data != "string":
                raise self.fail(node, 'in_segment takes one segment name in quotes: in_segment("buyers")')
            segment = str(args[0].children[0])[1:-1]
            self.out.segments.add(segment)
            return InSegment(segment, text)
        if name == "trait":
            if len(args) != 1 or not isinstance(args[0], Tree) or args[0].data != "string":
                raise self.fail(node, 'trait takes one trait name in quotes: trait("plan")')
            return TraitRead(Trait.of(str(self.literal(args[0]))), text)
        raise self.fail(node, f"unknown function {name!r}{close_name(name, FUNCTIONS)}")

    def feature(self, spec: Spec, text: str) -> Read:
        return Read(FROM_FEATURES, spec.name, spec=spec, text=text)

    def not_followed(self, node: Tree, args: list[Any]) -> NotFollowed:
        """``not_followed(first, then, within[, filters on first])``: a sequence with a deadline."""
        if len(args) < 3:
            raise self.fail(node, "not_followed(first, then, within) needs two events and a deadline, as in "
                            "not_followed(add_to_cart, purchase, 48h)")  # fmt: skip
        first, then = self.event(args[0]), self.event(args[1])
        seconds = self.within(args[2]).total_seconds()
        self.out.durations.append(seconds)
        return NotFollowed(Recency(first, self.filters(args[3:])), Recency(then), seconds, self.source(node))

    def window(self, node: Tree, fn_name: str, args: list[Any]) -> Spec:
        if fn_name == "count":
            if len(args) < 2:
                raise self.fail(node, "count(event, window[, filters]) needs an event and a window")
            return WindowCount(self.event(args[0]), self.within(args[1]), self.filters(args[2:]))
        if len(args) < 3:
            raise self.fail(
                node, f"{fn_name}(property, event, window[, filters]) needs a property, an event and a window"
            )
        prop = self.bare(args[0], "a property name")
        event, within, where = self.event(args[1]), self.within(args[2]), self.filters(args[3:])
        if fn_name == "sum":
            return WindowSum(prop, event, within, where)
        if fn_name == "mean":
            return WindowMean(prop, event, within, where)
        return WindowDistinct(prop, event, within, where)

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
            raise self.fail(node, f"unknown event type {name!r}{close_name(name, list(self.known_events))}")
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
