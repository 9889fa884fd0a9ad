"""When time alone can flip what a rule compares (what ``next_due`` wakes a
profile for), derived from the rule's IR.

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

from features.specs import Recency, Spec, WindowCount
from segments.ir import Compare, Const, Node, NotFollowed, Read, reads, walk

MIRROR = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}  # c OP x is x MIRROR[OP] c


def wakeups(tree: Node) -> tuple[list[tuple[Spec, int]], list[Spec], list[tuple[Spec, int]]]:
    """A rule's edges (recency spec, ms after its last event), loose recencies,
    and count levels (window count, the level at or below which a comparison flips)."""
    found = _Wakeups()
    for node in walk(tree):
        if isinstance(node, Compare):
            found.comparison(node)
        elif isinstance(node, NotFollowed):
            found.compared.update((node.first, node.then))
            found.edges.append((node.first, math.ceil(node.seconds * 1000)))
    return found.result(list(reads(tree)))


class _Wakeups:
    def __init__(self) -> None:
        self.edges: list[tuple[Spec, int]] = []
        self.loose: list[Spec] = []
        self.compared: set[Spec] = set()  # recency specs some comparison accounted for
        self.levels: list[tuple[Spec, int]] = []

    def comparison(self, node: Compare) -> None:
        lreads, rreads = list(reads(node.left)), list(reads(node.right))
        self._recency(node.left, node.right, node.op, lreads, rreads)
        self._count(node.left, node.right, node.op, lreads, rreads)

    def result(self, read: list[Spec]) -> tuple[list[tuple[Spec, int]], list[Spec], list[tuple[Spec, int]]]:
        unaccounted = [r for r in read if isinstance(r, Recency) and r not in self.compared]
        loose = list(dict.fromkeys([*self.loose, *unaccounted]))
        counts: list[Spec] = [r for r in read if isinstance(r, WindowCount)]
        leveled = [spec for spec, _ in self.levels]
        levels = [(spec, lv) for spec, lv in self.levels if counts.count(spec) == leveled.count(spec)]
        return list(dict.fromkeys(self.edges)), loose, list(dict.fromkeys(levels))

    def _recency(self, left: Node, right: Node, op: str, lreads: list[Spec], rreads: list[Spec]) -> None:
        self.compared.update(r for r in [*lreads, *rreads] if isinstance(r, Recency))
        lrec, rrec = _since_of(left), _since_of(right)
        if lrec is not None and rrec is not None:
            return
        const = right if lrec is not None else left
        spec = lrec or rrec
        if spec is None:
            self.loose.extend(r for r in [*lreads, *rreads] if isinstance(r, Recency))
            return
        if not (isinstance(const, Const) and const.kind == "number"):
            self.loose.append(spec)
            return
        seconds = float(const.value)
        if not math.isfinite(seconds):
            return  # compared with infinity: time never flips it
        at = math.ceil(seconds * 1000)
        if rrec is not None:  # constant OP since(x)
            op = MIRROR.get(op, op)
        offsets = {">=": (at,), "<": (at,), ">": (at + 1,), "<=": (at + 1,)}.get(op, (at, at + 1))
        self.edges.extend((spec, o) for o in offsets)

    def _count(self, left: Node, right: Node, op: str, lreads: list[Spec], rreads: list[Spec]) -> None:
        if len(lreads) == 1 and not rreads and isinstance(lreads[0], WindowCount):
            spec, const = lreads[0], right
        elif len(rreads) == 1 and not lreads and isinstance(rreads[0], WindowCount):
            spec, const = rreads[0], left
            op = MIRROR.get(op, op)
        else:
            return
        if not (isinstance(const, Const) and const.kind == "number" and not const.duration) or op not in MIRROR:
            return
        c = float(const.value)
        if not math.isfinite(c):
            return  # left to the window's edges: harmless, and nobody compares a count with infinity
        self.levels.append((spec, math.ceil(c) - 1 if op in (">=", "<") else math.floor(c)))


def _since_of(node: Node) -> Recency | None:
    """The recency spec when ``node`` is exactly a ``since(...)`` call."""
    if isinstance(node, Read) and node.recency and isinstance(node.spec, Recency):
        return node.spec
    return None
