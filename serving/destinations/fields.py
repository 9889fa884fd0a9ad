"""The profile fields that travel with a change, read when it is sent.

``cart``: what the user added and has not bought or removed since (within a
week), with its value; ``top_categories_7d``: the categories the user viewed
or carted most in the week before the change; ``intent_band``: the intent
score in words (``high``, ``medium``, ``low``); ``cluster_words``: the
cluster's description; ``description``: the segment's. Each reads the
change's own scores and cluster, and the user's logged events up to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from features.events import ADD_TO_CART, PRODUCT_VIEW, PURCHASE, REMOVE_FROM_CART, Event
from serving.outbox import Entry

WEEK_MS = 7 * 86_400_000
HIGH, MEDIUM = 0.7, 0.35


def intent_band(score: object) -> str | None:
    """The intent score in words.

    >>> intent_band(0.8), intent_band(0.4), intent_band(0.1), intent_band(None)
    ('high', 'medium', 'low', None)
    """
    if not isinstance(score, int | float):
        return None
    return "high" if score >= HIGH else "medium" if score >= MEDIUM else "low"


def cart(events: Sequence[Event], at_ms: int) -> dict[str, Any]:
    """The open cart at ``at_ms`` from a user's events (any order)."""
    items: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e.ts_ms):
        if e.ts_ms > at_ms or e.ts_ms < at_ms - WEEK_MS:
            continue
        if e.type == PURCHASE:
            items.clear()
        key = str(e.properties.get("product_id") or e.properties.get("name") or "")
        if e.type == ADD_TO_CART:
            item = items.setdefault(key, {"product_id": e.properties.get("product_id"), "quantity": 0})
            item["quantity"] += int(e.properties.get("quantity") or 1)
            for name in ("name", "category", "price"):
                if e.properties.get(name) is not None:
                    item[name] = e.properties[name]
        elif e.type == REMOVE_FROM_CART:
            items.pop(key, None)
    listed = list(items.values())
    value = sum(float(i.get("price") or 0.0) * i["quantity"] for i in listed)
    return {"items": listed, "value": round(value, 2)}


def top_categories(events: Sequence[Event], at_ms: int, k: int = 3) -> list[str]:
    counts = Counter(
        str(e.properties["category"])
        for e in events
        if e.type in (PRODUCT_VIEW, ADD_TO_CART)
        and at_ms - WEEK_MS <= e.ts_ms <= at_ms
        and e.properties.get("category")
    )
    return [name for name, _ in counts.most_common(k)]


class Fields:
    """Reads the requested fields of a change: ``recent`` gives a user's
    logged events, ``describe_cluster`` a cluster's words, ``describe_segment``
    a segment's description."""

    def __init__(
        self,
        recent: Callable[[str], list[Event]],
        describe_cluster: Callable[[str | None], str | None],
        describe_segment: Callable[[str], str | None],
    ) -> None:
        self.recent = recent
        self.describe_cluster = describe_cluster
        self.describe_segment = describe_segment

    def of(self, entry: Entry, names: Sequence[str]) -> dict[str, Any]:
        if not names:
            return {}
        out: dict[str, Any] = {}
        events = self.recent(entry.profile_id) if {"cart", "top_categories_7d"} & set(names) else []
        for name in names:
            if name == "cart":
                out[name] = cart(events, entry.at_ms)
            elif name == "top_categories_7d":
                out[name] = top_categories(events, entry.at_ms)
            elif name == "intent_band":
                out[name] = intent_band(entry.body.get("scores", {}).get("intent"))
            elif name == "cluster_words":
                out[name] = self.describe_cluster(entry.body.get("cluster"))
            elif name == "description":
                out[name] = self.describe_segment(entry.segment)
        return out
