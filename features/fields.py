"""An event's fields as features and filters read them: the context's
device, country, city and timezone, a trait, or a property; and whether an
event meets a feature's ``where`` predicate."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from features.events import ADD_TO_CART, Event
from features.specs import EVENT_FIELDS, TRAIT, TRAIT_KINDS, Eq, Predicate, trait_text
from features.values import number


def field_value(event: Event, name: str) -> Any:
    """A filterable field of an event: device/country/city/timezone, a trait
    (``trait:NAME``, of identify and group calls, as text), else a property."""
    if name in EVENT_FIELDS:
        return getattr(event, name)
    if name.startswith(TRAIT):
        return trait_text(event.traits.get(name[len(TRAIT) :])) if event.kind in TRAIT_KINDS else None
    return event.properties.get(name)


def field_reader(name: str) -> Callable[[Event], Any]:
    """How to read one field of an event, decided once (the update loop reads fields of every event)."""
    if name in EVENT_FIELDS:
        return operator.attrgetter(name)
    if name.startswith(TRAIT):
        trait = name[len(TRAIT) :]
        return lambda e: trait_text(e.traits.get(trait)) if e.kind in TRAIT_KINDS else None
    return lambda e: e.properties.get(name)


def matches(where: Predicate | None, event: Event) -> bool:
    """Whether an event meets a feature's ``where`` predicate (None: every event does)."""
    if where is None:
        return True
    value = field_value(event, where.field)
    if isinstance(where, Eq):
        return value is not None and same(value, where.value)
    return value is not None and any(same(value, v) for v in where.values)


def same(value: Any, wanted: Any) -> bool:
    """Whether a field's value is a filter's: booleans by identity, numbers by value, text exactly."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, int | float):
        return isinstance(value, int | float) and float(value) == float(wanted)
    return isinstance(value, str) and value == wanted


def cart_delta(event: Event) -> float:
    """Signed value of a cart change: +price × quantity for an add, − for a removal."""
    price = number(event.properties.get("price")) or 0.0
    qty = number(event.properties.get("quantity"))
    value = price * (1.0 if qty is None else qty)
    return value if event.type == ADD_TO_CART else -value
