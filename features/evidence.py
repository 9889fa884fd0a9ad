"""The events behind a feature's value: which of a user's events a spec
counted at a moment (the most recent few), so a segment's reason can name them.

Read from the event log when someone asks why, never kept in the profile, so
profiles stay small.

>>> from datetime import timedelta
>>> from features.specs import Recency, WindowCount
>>> events = [Event(f"m{i}", "add_to_cart", "u", None, i * 60_000, 0) for i in range(5)]
>>> [e.message_id for e in behind(WindowCount("add_to_cart", timedelta(minutes=2)), events[::-1], 4 * 60_000)]
['m4', 'm3']
>>> [e.message_id for e in behind(Recency("add_to_cart"), events[::-1], 4 * 60_000)]
['m4']
"""

from __future__ import annotations

from collections.abc import Sequence

from features.events import ADD_TO_CART, PURCHASE, REMOVE_FROM_CART, Event
from features.fields import field_value, matches
from features.specs import ANY, CartValue, LastValue, Ratio, Recency, Relative, Spec, duration_ms


def behind(spec: Spec, newest_first: Sequence[Event], at_ms: int, k: int = 3) -> list[Event]:
    """Up to ``k`` of the most recent events (given newest first) behind ``spec``'s value at ``at_ms``."""
    if isinstance(spec, Ratio):
        both = behind(spec.numerator, newest_first, at_ms, k) + behind(spec.denominator, newest_first, at_ms, k)
        seen: dict[str, Event] = {}
        for e in sorted(both, key=lambda e: -e.ts_ms):
            seen.setdefault(e.message_id, e)
        return list(seen.values())[:k]
    past = [e for e in newest_first if e.ts_ms <= at_ms]
    if isinstance(spec, Recency):
        return [e for e in past if _kind(spec.event, e) and matches(spec.where, e)][:1]
    if isinstance(spec, CartValue):
        since = at_ms - duration_ms(spec.within)
        out = []
        for e in past:
            if e.type == PURCHASE or e.ts_ms <= since:
                break
            if e.type in (ADD_TO_CART, REMOVE_FROM_CART):
                out.append(e)
        return out[:k]
    if isinstance(spec, LastValue):
        return [e for e in past if field_value(e, spec.field) is not None][:1]
    within = getattr(spec, "within_ms", None)
    event = getattr(spec, "event", None)
    if not isinstance(within, int) or not isinstance(event, str):
        return []  # clock features (hour, weekend) have no events behind them
    where = getattr(spec, "where", None)
    prop = getattr(spec, "prop", None)
    if isinstance(prop, Relative):
        prop = prop.prop
    return [
        e
        for e in past
        if e.ts_ms > at_ms - within
        and _kind(event, e)
        and matches(where, e)
        and (prop is None or field_value(e, prop) is not None)
    ][:k]


def _kind(event: str, e: Event) -> bool:
    return event == ANY or e.type == event
