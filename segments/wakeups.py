"""When time alone can flip what a rule compares (what ``next_due`` wakes a
profile for), worked out while the rule is compiled.

- ``since(x) OP constant`` flips at the constant (``>=``, ``<``) or a
  millisecond after it (``>``, ``<=``): an *edge* of ``x``'s recency; two
  ``since`` compared with each other never flip with time (both grow alike).
- ``count(...) OP c`` flips only when the count falls to a *level*: at or below
  ``ceil(c) - 1`` for ``>=`` and ``<``, at or below ``floor(c)`` for ``>`` and
  ``<=`` (counts only fall as time passes). A count read anywhere else wakes
  at every edge of its window.
- ``not_followed(a, b, within)`` flips on exactly at the deadline after ``a``.
- A recency read in any other way is *loose*: woken at every duration the rule writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lark import Tree

from features.specs import Recency, Spec, WindowCount, parse_duration

MIRROR = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}  # c OP x is x MIRROR[OP] c


@dataclass
class Wakeups:
    edges: list[tuple[Spec, int]] = field(default_factory=list)  # (recency spec, ms after its last event)
    loose: list[Spec] = field(default_factory=list)
    compared: set[Spec] = field(default_factory=set)  # recency specs some comparison accounted for
    levels: list[tuple[Spec, int]] = field(default_factory=list)  # window counts compared with a constant

    def comparison(self, left: Any, right: Any, op: str, lreads: list[Spec], rreads: list[Spec]) -> None:
        """A comparison's parse trees and the specs each side reads."""
        self._recency(left, right, op, lreads, rreads)
        self._count(left, right, op, lreads, rreads)

    def sequence(self, first: Recency, then: Recency, seconds: float) -> None:
        """``not_followed``: on at the deadline after ``first``."""
        self.compared.update((first, then))
        self.edges.append((first, math.ceil(seconds * 1000)))

    def result(self, read: list[Spec]) -> tuple[list[tuple[Spec, int]], list[Spec], list[tuple[Spec, int]]]:
        """Edges, loose recencies and count levels, given every spec the rule read (in order, repeats kept)."""
        unaccounted = [r for r in read if isinstance(r, Recency) and r not in self.compared]
        loose = list(dict.fromkeys([*self.loose, *unaccounted]))
        counts: list[Spec] = [r for r in read if isinstance(r, WindowCount)]
        leveled = [spec for spec, _ in self.levels]
        levels = [(spec, lv) for spec, lv in self.levels if counts.count(spec) == leveled.count(spec)]
        return list(dict.fromkeys(self.edges)), loose, list(dict.fromkeys(levels))

    def _recency(self, left: Any, right: Any, op: str, lreads: list[Spec], rreads: list[Spec]) -> None:
        self.compared.update(r for r in [*lreads, *rreads] if isinstance(r, Recency))
        lrec = _since_of(left, lreads)
        rrec = _since_of(right, rreads)
        if lrec is not None and rrec is not None:
            return
        const = right if lrec is not None else left
        spec = lrec or rrec
        if spec is None:
            self.loose.extend(r for r in [*lreads, *rreads] if isinstance(r, Recency))
            return
        if not (isinstance(const, Tree) and const.data in ("number", "duration")):
            self.loose.append(spec)
            return
        text = str(const.children[0])
        try:
            seconds = float(text) if const.data == "number" else parse_duration(text).total_seconds()
        except (ValueError, OverflowError):
            seconds = math.inf
        if not math.isfinite(seconds):
            return  # compared with infinity: time never flips it
        at = math.ceil(seconds * 1000)
        if rrec is not None:  # constant OP since(x)
            op = MIRROR.get(op, op)
        offsets = {">=": (at,), "<": (at,), ">": (at + 1,), "<=": (at + 1,)}.get(op, (at, at + 1))
        self.edges.extend((spec, o) for o in offsets)

    def _count(self, left: Any, right: Any, op: str, lreads: list[Spec], rreads: list[Spec]) -> None:
        if len(lreads) == 1 and not rreads and isinstance(lreads[0], WindowCount):
            spec, const = lreads[0], right
        elif len(rreads) == 1 and not lreads and isinstance(rreads[0], WindowCount):
            spec, const = rreads[0], left
            op = MIRROR.get(op, op)
        else:
            return
        if not (isinstance(const, Tree) and const.data == "number") or op not in MIRROR:
            return
        c = float(str(const.children[0]))
        if not math.isfinite(c):
            return  # left to the window's edges: harmless, and nobody compares a count with infinity
        self.levels.append((spec, math.ceil(c) - 1 if op in (">=", "<") else math.floor(c)))


def _since_of(node: Any, reads: list[Spec]) -> Recency | None:
    """The recency spec when ``node`` is exactly a ``since(...)`` call."""
    if isinstance(node, Tree) and node.data == "call" and str(node.children[0]) == "since" and len(reads) == 1:
        spec = reads[0]
        return spec if isinstance(spec, Recency) else None
    return None
