"""One user's online feature state, and the shapes it is kept in: streams
of buckets per event type, filter and resolution, and trackers of the last
time each distinct value (or the stream itself) was seen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from features.buckets import Buckets
from features.specs import Predicate, Prop, prop_key

CART = "__cart__"  # the stream of signed cart values (adds minus removals)
CART_VALUE = "__cart_value__"
Value = float | int | str | None


@dataclass(frozen=True, slots=True)
class Stream:
    """Buckets of one event type and filter at one resolution, with the
    properties whose (count, sum) each bucket keeps."""

    event: str
    where: Predicate | None
    resolution_ms: int
    props: tuple[Prop, ...]
    keep_ms: int  # the longest window over this stream

    @property
    def key(self) -> str:
        """The stream's identity: event type, predicate, resolution and properties summed."""
        return f"{self.event}|{self.where!r}|{self.resolution_ms}|{','.join(prop_key(p) for p in self.props)}"


@dataclass(frozen=True, slots=True)
class Tracker:
    """Last-seen time per distinct value (``prop``), or of the stream itself."""

    event: str
    where: Predicate | None
    prop: str | None
    keep_ms: int

    @property
    def key(self) -> str:
        """The tracker's identity: event type, predicate and property."""
        return f"{self.event}|{self.where!r}|{self.prop}"


class Profile:
    """One user's online feature state."""

    __slots__ = ("buckets", "distinct", "last_ts", "last_values", "late", "newest")

    def __init__(self, widths: Sequence[int], n_distinct: int, n_recency: int, n_fields: int) -> None:
        self.newest = -1
        self.late = 0
        self.buckets: list[Buckets] = [Buckets(w) for w in widths]
        self.distinct: list[dict[str, int]] = [{} for _ in range(n_distinct)]
        self.last_ts: list[int] = [-1] * n_recency
        self.last_values: list[tuple[int, str] | None] = [None] * n_fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]
