"""A summary of an event table: counts by type, users, time span, funnel.

>>> from features.events import Event
>>> from features.table import events_to_table
>>> t = events_to_table([Event(f"m{i}", k, "u1", None, i * 1000, i * 1000)
...     for i, k in enumerate(["product_view", "add_to_cart", "purchase"])])
>>> s = summarize(t)
>>> s.events, s.users, s.funnel[-1]
(3, 1, ('purchase', 1, 1.0))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.events import ADD_TO_CART, CHECKOUT_START, PRODUCT_VIEW, PURCHASE, ms_to_datetime

FUNNEL = (PRODUCT_VIEW, ADD_TO_CART, CHECKOUT_START, PURCHASE)


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts by type, users, time span and funnel of an event table."""

    events: int
    users: int
    first: datetime | None
    last: datetime | None
    by_type: tuple[tuple[str, int], ...]
    # (step, users who reached it, share of the users at the first step)
    funnel: tuple[tuple[str, int, float], ...]

    def as_dict(self) -> dict[str, object]:
        """The summary as one JSON-ready object."""
        return {
            "events": self.events,
            "users": self.users,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "by_type": dict(self.by_type),
            "funnel": [{"step": s, "users": n, "of_first_step": round(r, 4)} for s, n, r in self.funnel],
        }


def summarize(table: pa.Table) -> Summary:
    """Summarize an event table (``segflow inspect``)."""
    types = table.column("type")
    counts = pc.value_counts(types).to_pylist()
    by_type = tuple(sorted(((c["values"], c["counts"]) for c in counts), key=lambda kv: -kv[1]))
    profiles = table.column("profile_id")
    ts = pc.cast(table.column("ts"), pa.int64())
    first = last = None
    if table.num_rows:
        mm = pc.min_max(ts).as_py()
        first, last = ms_to_datetime(mm["min"]), ms_to_datetime(mm["max"])
    funnel = []
    base = None
    for step in FUNNEL:
        reached = pc.count_distinct(pc.filter(profiles, pc.equal(types, step))).as_py()
        base = base if base is not None else reached
        funnel.append((step, reached, reached / base if base else 0.0))
    users = pc.count_distinct(profiles).as_py() if table.num_rows else 0
    return Summary(table.num_rows, users, first, last, by_type, tuple(funnel))


def type_counts(table: pa.Table) -> dict[str, int]:
    """Events by type, most frequent first."""
    values, counts = np.unique(table.column("type").to_numpy(zero_copy_only=False), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
