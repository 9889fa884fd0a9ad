"""Time buckets of one stream with running (prefix) totals.

Keys are bucket indices in ascending order; ``cum[j]`` holds the totals of
every aggregate slot over buckets ``0..j``, so any window's total is one
binary search and one subtraction, whatever its length. Events mostly arrive
in time order (an append, or an add to the last bucket); an out-of-order event
within the lateness updates the totals from its bucket on.

>>> b = Buckets(width=2)
>>> b.add(5, (1.0, 10.0)); b.add(7, (1.0, 2.5)); b.add(6, (1.0, 1.0))
>>> b.keys, b.total(6, 0), b.total(6, 1), b.total(8, 0)
([5, 6, 7], 2.0, 3.5, 0.0)
>>> b.drop_before(7); b.keys, b.total(7, 1)
([6, 7], 2.5)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class Buckets:
    """Per-bucket counts or sums of one stream within a window, with their running total."""

    __slots__ = ("cum", "keys", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.keys: list[int] = []
        self.cum: list[list[float]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Buckets) and self.keys == other.keys and self.cum == other.cum

    __hash__ = None  # type: ignore[assignment]

    def add(self, key: int, values: Sequence[float]) -> None:
        """Add ``values`` (one per slot) to bucket ``key``, a new bucket when
        there is none: the running totals from it on move with it."""
        keys, cum = self.keys, self.cum
        if not keys or key > keys[-1]:
            last = cum[-1] if cum else None
            cum.append([v + w for v, w in zip(last, values, strict=True)] if last else list(values))
            keys.append(key)
            return
        if key == keys[-1]:
            row = cum[-1]
            for s in range(self.width):
                row[s] += values[s]
            return
        j = bisect_left(keys, key)
        if keys[j] != key:
            keys.insert(j, key)
            cum.insert(j, list(cum[j - 1]) if j else [0.0] * self.width)
        for row in cum[j:]:
            for s, v in enumerate(values):
                row[s] += v

    def count(self, key: int) -> None:
        """Add one event with no other slot to bucket ``key`` (the hot path of counts)."""
        keys = self.keys
        if keys:
            last = keys[-1]
            if key == last:
                self.cum[-1][0] += 1.0
                return
            if key > last:
                keys.append(key)
                self.cum.append([self.cum[-1][0] + 1.0])
                return
        self.add(key, (1.0,))

    def total(self, kmin: int, slot: int) -> float:
        """The slot's total over buckets with key >= kmin."""
        cum = self.cum
        if not cum:
            return 0.0
        j = bisect_left(self.keys, kmin)
        if j == 0:
            return cum[-1][slot]
        if j == len(cum):
            return 0.0
        return cum[-1][slot] - cum[j - 1][slot]

    def merge(self, other: Buckets) -> None:
        """Add another stream's buckets to these (a profile joining another).

        >>> a, b = Buckets(1), Buckets(1)
        >>> a.count(3); a.count(5); b.count(4); b.count(5)
        >>> a.merge(b); a.keys, a.cum
        ([3, 4, 5], [[1.0], [2.0], [4.0]])
        """
        if not other.keys:
            return
        values: dict[int, list[float]] = {}
        for buckets in (self, other):
            previous = [0.0] * self.width
            for key, row in zip(buckets.keys, buckets.cum, strict=True):
                held = values.setdefault(key, [0.0] * self.width)
                for s in range(self.width):
                    held[s] += row[s] - previous[s]
                previous = row
        self.keys, self.cum = [], []
        for key in sorted(values):
            self.add(key, values[key])

    def drop_before(self, kmin: int) -> None:
        """Forget buckets with key < kmin but the last of them, whose totals
        the rest's are read against: totals are never rebased, so a window's
        total is the same subtraction of the same running sums however often
        buckets were dropped (as the offline computation makes it)."""
        j = bisect_left(self.keys, kmin)
        if j <= 1:
            return
        del self.keys[: j - 1]
        del self.cum[: j - 1]
