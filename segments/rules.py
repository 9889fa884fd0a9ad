"""The rule language: parsed with a real grammar, checked into a typed IR, run as
closures or as columns, never ``eval``.

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

The modules behind it: :mod:`segments.grammar` (parsing),
:mod:`segments.checking` (the IR of :mod:`segments.ir`, names and types),
:mod:`segments.closures` (per profile), :mod:`segments.columns` (over many
rows), :mod:`segments.wakeups` (when time alone can flip it).

>>> rule = compile_rule('count(add_to_cart, 1h) >= 2 and intent > 0.5')
>>> [s.name for s in rule.specs]
['add_to_cart_count_1h']
>>> rule.holds(Context({"add_to_cart_count_1h": 2}, {"intent": 0.7}))
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from features.specs import Spec
from segments.checking import MAX_DEPTH, MAX_RULE_CHARS, MAX_WINDOW, SCORES, check
from segments.closures import Context, Fn, lower
from segments.ir import Node
from segments.wakeups import wakeups

__all__ = ["MAX_DEPTH", "MAX_RULE_CHARS", "MAX_WINDOW", "SCORES", "Clause", "Rule", "compile_rule"]


@dataclass(frozen=True, slots=True)
class Clause:
    """A leaf of a rule that decides it: its text, how to read its value, and
    the feature specs it reads (whose events are the evidence behind it)."""

    text: str
    fn: Fn
    reads: tuple[Spec, ...] = ()


@dataclass(slots=True)
class Rule:
    """A compiled rule: ``holds(ctx)``, its IR, the specs it needs, its clauses."""

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
    tree: Node | None = None  # the IR

    def holds(self, ctx: Context) -> bool:
        return bool(self.fn(ctx))

    def explain(self, ctx: Context) -> list[tuple[str, Any]]:
        """Each clause with its value now (what decided the rule)."""
        return [(c.text, _plain(c.fn(ctx))) for c in self.clauses]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def compile_rule(
    text: str,
    known_features: Sequence[str | Spec] = (),
    known_events: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Rule:
    """Parse, check and compile one rule; names are checked against what is
    known. Known features given as specs (not just names) join the rule's
    specs, so ``next_due`` wakes at their window edges too."""
    checked = check(text, known_features, known_events, thresholds)
    fn = lower(checked.tree)
    clauses = [Clause(t, fn if shown is checked.tree else lower(shown), r) for t, shown, r in checked.clauses]
    edges, loose, levels = wakeups(checked.tree)
    return Rule(
        text, fn, checked.specs, clauses, checked.segments, checked.thresholds, checked.durations,
        edges, loose, levels, checked.tree,
    )  # fmt: skip
