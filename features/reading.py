"""Reading many windowed features of a profile at once.

Counts, sums and means over the same stream and window share one binary
search over the stream's buckets; a ratio reuses its parts when they are read
anyway; every other feature goes through its own reader. The arithmetic is
the buckets' own (:meth:`features.buckets.Buckets.total`), so values are the
same to the bit as reading each feature alone.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from features.specs import Ratio, Spec, WindowCount, WindowMean, WindowSum

COUNT, SUM, MEAN = range(3)
Reader = Callable[[Any, int], Any]


def ratio(num: Any, den: Any) -> float:
    """One feature over another: 0 when the denominator is 0 or either is not a number."""
    if not isinstance(num, int | float) or not isinstance(den, int | float) or not den:
        return 0.0
    return num / den


class Plan:
    """How to read ``specs`` in one pass: ``read(profile, t)`` gives their values in order.

    ``stream_of`` names a windowed spec's stream, ``slot_of`` a sum's or mean's
    property position in it, ``reader_of`` any other spec's own reader.
    """

    def __init__(
        self,
        specs: Sequence[Spec],
        stream_of: Callable[[Spec], int],
        slot_of: Callable[[WindowSum | WindowMean], int],
        reader_of: Callable[[Spec], Reader],
    ) -> None:
        position: dict[Spec, int] = {}
        order: list[Spec] = []

        def place(spec: Spec) -> int:
            if spec not in position:
                if isinstance(spec, Ratio):
                    place(spec.numerator)
                    place(spec.denominator)
                position[spec] = len(order)
                order.append(spec)
            return position[spec]

        outputs = [place(s) for s in specs]
        groups: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
        self.others: list[tuple[int, Reader]] = []
        self.ratios: list[tuple[int, int, int]] = []
        for pos, spec in enumerate(order):
            if isinstance(spec, WindowCount | WindowSum | WindowMean):
                key = (stream_of(spec), spec.within_ms, spec.resolution_ms)
                if isinstance(spec, WindowCount):
                    groups.setdefault(key, []).append((pos, COUNT, 0))
                else:
                    kind = SUM if isinstance(spec, WindowSum) else MEAN
                    groups.setdefault(key, []).append((pos, kind, slot_of(spec)))
            elif isinstance(spec, Ratio):
                self.ratios.append((pos, position[spec.numerator], position[spec.denominator]))
            else:
                self.others.append((pos, reader_of(spec)))
        self.groups = [(i, w, r, tuple(items)) for (i, w, r), items in groups.items()]
        self.size = len(order)
        self.outputs = outputs

    def read(self, profile: Any, t: int) -> list[Any]:
        """The specs' values at ``t``, in the order given."""
        values = self._values(profile, t)
        return [values[o] for o in self.outputs]

    def _values(self, profile: Any, t: int) -> list[Any]:
        values: list[Any] = [None] * self.size
        buckets = profile.buckets
        for i, w, r, items in self.groups:
            b = buckets[i]
            cum = b.cum
            j = bisect_left(b.keys, (t - w) // r + 1)
            if j < len(cum):
                last = cum[-1]
                base = cum[j - 1] if j else None
                for pos, kind, slot in items:
                    if kind == COUNT:
                        values[pos] = int(last[0] - base[0] if base is not None else last[0])
                    elif kind == SUM:
                        s = 2 + 2 * slot
                        values[pos] = last[s] - base[s] if base is not None else last[s]
                    else:
                        s = 1 + 2 * slot
                        n = last[s] - base[s] if base is not None else last[s]
                        total = last[s + 1] - base[s + 1] if base is not None else last[s + 1]
                        values[pos] = total / n if n else math.nan
            else:
                for pos, kind, _ in items:
                    values[pos] = 0 if kind == COUNT else (0.0 if kind == SUM else math.nan)
        for pos, reader in self.others:
            values[pos] = reader(profile, t)
        for pos, num, den in self.ratios:
            values[pos] = ratio(values[num], values[den])
        return values
