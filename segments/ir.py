"""The rule IR: what a checked rule says, as a small tree of frozen dataclasses.

Checking (:mod:`segments.checking`) turns a parse tree into this tree, with
every name resolved and every type known. Each execution is derived from it
by a module of its own: closures for one profile at a time
(:mod:`segments.closures`), columns for many rows at once
(:mod:`segments.columns`), and the instants at which time alone can flip a
comparison (:mod:`segments.wakeups`).

Values are numbers, strings, booleans or traits (text compared with a
constant). A value missing for a user (a feature it has no value of, a score
not computed) compares false, with ``!=`` too; a recency (``since``) that
never happened is infinitely long ago.

>>> from segments.checking import check
>>> tree = check('since(add_to_cart) <= 30m and intent > thresholds.likely', thresholds={"likely": 0.5}).tree
>>> type(tree).__name__, [type(p).__name__ for p in tree.parts]
('All', ['Compare', 'Compare'])
>>> since = tree.parts[0].left
>>> since.name, since.recency, since.spec, since.text
('add_to_cart_recency_s', True, Recency(event='add_to_cart', where=None), 'since(add_to_cart)')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from features.specs import Recency, Spec, Trait

FROM_FEATURES, FROM_SCORES, FROM_THRESHOLDS = range(3)  # where a rule reads a value


@dataclass(frozen=True, slots=True)
class Const:
    """A number (a duration is one, in seconds), a string, or ``true``/``false``."""

    value: float | str | bool
    kind: str  # "number", "string" or "bool"
    text: str = ""
    duration: bool = False  # written as a duration (30m)


@dataclass(frozen=True, slots=True)
class Read:
    """A number read by name: a feature (``spec`` when the rule derives it or
    knows it as a spec), a score, or a threshold."""

    source: int  # FROM_FEATURES, FROM_SCORES or FROM_THRESHOLDS
    name: str
    recency: bool = False  # since(...): never is infinitely long ago
    spec: Spec | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class TraitRead:
    """``trait("plan")``: the trait's latest text (None before any)."""

    spec: Trait
    text: str = ""


@dataclass(frozen=True, slots=True)
class ClusterRead:
    """``cluster``: the user's cluster name (``"c2"``), None without a cluster model."""

    text: str = "cluster"


@dataclass(frozen=True, slots=True)
class Compare:
    """``left OP right`` of two values of one kind."""

    op: str
    left: Node
    right: Node
    text: str = ""


@dataclass(frozen=True, slots=True)
class TraitCompare:
    """``trait("x") OP constant``: text with a string or true/false, or a number with a number."""

    op: str
    trait: TraitRead
    value: Const
    text: str = ""


@dataclass(frozen=True, slots=True)
class OneOf:
    """``value in (a, b, ...)``."""

    value: Node
    options: tuple[Const, ...]
    text: str = ""


@dataclass(frozen=True, slots=True)
class Not:
    part: Node
    text: str = ""


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Node, ...]
    text: str = ""


@dataclass(frozen=True, slots=True)
class Any_:
    parts: tuple[Node, ...]
    text: str = ""


@dataclass(frozen=True, slots=True)
class AtLeast:
    n: int
    parts: tuple[Node, ...]
    text: str = ""


@dataclass(frozen=True, slots=True)
class InSegment:
    name: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class NotFollowed:
    """The last ``first`` is at least ``seconds`` old and no ``then`` came after it."""

    first: Recency
    then: Recency
    seconds: float
    text: str = ""


Node = (
    Const | Read | TraitRead | ClusterRead | Compare | TraitCompare | OneOf | Not | All | Any_ | AtLeast | InSegment
    | NotFollowed
)  # fmt: skip
NAMED = (Read, TraitRead, ClusterRead, InSegment, NotFollowed, AtLeast)  # written as a call or a name


def kind(node: Node) -> str:
    """``number``, ``string``, ``bool`` or ``trait``."""
    if isinstance(node, Const):
        return node.kind
    if isinstance(node, Read):
        return "number"
    if isinstance(node, TraitRead):
        return "trait"
    if isinstance(node, ClusterRead):
        return "string"
    return "bool"


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Compare):
        return (node.left, node.right)
    if isinstance(node, TraitCompare):
        return (node.trait, node.value)
    if isinstance(node, OneOf):
        return (node.value, *node.options)
    if isinstance(node, Not):
        return (node.part,)
    if isinstance(node, All | Any_ | AtLeast):
        return node.parts
    return ()


def reads(node: Node) -> Iterator[Spec]:
    """The feature specs a node reads, left to right, repeats kept."""
    if isinstance(node, Read):
        if node.spec is not None:
            yield node.spec
    elif isinstance(node, TraitRead):
        yield node.spec
    elif isinstance(node, NotFollowed):
        yield node.first
        yield node.then
    else:
        for child in children(node):
            yield from reads(child)


def walk(node: Node) -> Iterator[Node]:
    """Every node, children before their parent, left to right."""
    for child in children(node):
        yield from walk(child)
    yield node
