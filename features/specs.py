"""Feature specs: small frozen dataclasses whose names say what they are.

Every feature is declared once here and computed two ways, online
(:mod:`features.online`, event by event) and offline (:mod:`features.offline`,
point in time over an event table), with identical results.

Time semantics
--------------
Times are integer milliseconds since the epoch, UTC. A read at time ``t``
sees the events stamped at or before ``t``.

- A window of length ``W`` at resolution ``r`` read at ``t`` covers the
  events stamped in ``(⌊t − W⌋_r, t]``: the lower edge rounded down to the
  resolution grid. With ``r`` = 1 ms this is exactly ``(t − W, t]``; at any
  resolution an event is never dropped early and stays at most ``r`` late.
  An event stamped ``ts`` leaves the window at the known instant
  ``⌈ts⌉_r + W``. Resolutions (:func:`resolution_for`): 1 minute for windows
  up to a day, 1 hour up to 8 days, 1 day beyond; a spec may set its own.
- Recency is exact to the millisecond (reported in seconds).
- Events with the same timestamp all count; where one must win (the last
  country seen), the later arrival wins.
- Out-of-order events within the allowed lateness (1 hour by default) are
  applied exactly; an event older than the profile's newest by more than the
  lateness is stored and counted but not applied to live windows, online and
  offline alike (offline reads table order as arrival order).
- Distinct counts are capped at :data:`DISTINCT_CAP` values, so profiles stay
  bounded; below the cap they are exact.

>>> from datetime import timedelta
>>> WindowCount("add_to_cart", timedelta(hours=1)).name
'add_to_cart_count_1h'
>>> WindowDistinct("category", "product_view", timedelta(hours=24)).name
'product_view_distinct_category_24h'
>>> WindowCount("product_view", timedelta(hours=24), where=Eq("category", "shoes")).name
'product_view_count_24h_category_shoes'
>>> Recency("purchase").name
'purchase_recency_s'
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from features.durations import DAY_MS as DAY_MS  # re-exported: the names specs always gave
from features.durations import HOUR_MS as HOUR_MS
from features.durations import MINUTE_MS as MINUTE_MS
from features.durations import duration_ms as duration_ms
from features.durations import format_duration as format_duration
from features.durations import parse_duration as parse_duration
from features.durations import resolution_for as resolution_for
from features.events import CANONICAL_TYPES

ANY = "*"
DISTINCT_CAP = 50
DEFAULT_LATENESS = timedelta(hours=1)
EVENT_FIELDS = ("device", "country", "city", "timezone")


def _slug(value: Any) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", str(value)).strip("_").lower() or "x"


@dataclass(frozen=True, slots=True)
class Eq:
    """An event filter: a property (or ``device``/``country``/``city``) equals a value."""

    field: str
    value: str | float | bool

    @property
    def suffix(self) -> str:
        """The predicate in a feature name: ``field_value``."""
        return f"{_slug(self.field)}_{_slug(self.value)}"


@dataclass(frozen=True, slots=True)
class In:
    """An event filter: a property is one of some values."""

    field: str
    values: tuple[str | float | bool, ...]

    @property
    def suffix(self) -> str:
        """The predicate in a feature name: ``field_in_a_b``."""
        return f"{_slug(self.field)}_in_{'_'.join(_slug(v) for v in self.values)}"


Predicate = Eq | In


@dataclass(frozen=True, slots=True)
class Relative:
    """A derived property: how one event's numeric property compares with the
    usual value for its group, as ``log(value / reference[group])``. A
    product's price against its category's median price says whether a user
    looks at the cheap or the dear end of what they browse, whatever the
    category (a mean price alone mostly says which categories they like).

    The reference (log values by group, learned from history by
    :meth:`features.offline.OfflineFeatures.reference`) is part of the definition:
    ``digest`` names it, so a profile's stream changes when it does. Groups
    not in the table use ``default``.

    >>> r = Relative.of("price", "category", {"shoes": 50.0}, default=20.0)
    >>> r.name, round(r.relate(25.0, "shoes"), 4), r.relate(0.0, "shoes"), r.relate(None, "shoes")
    ('price_vs_category', -0.6931, None, None)
    >>> round(r.relate(20.0, "toys"), 4), round(r.relate(20.0, None), 4)
    (0.0, 0.0)
    """

    prop: str
    by: str
    default: float  # log reference for groups not in the table
    digest: str
    reference: tuple[tuple[str, float], ...] = field(compare=False, repr=False)

    @classmethod
    def of(cls, prop: str, by: str, typical: Mapping[str, float], default: float) -> Relative:
        """From typical values (not logs) by group, and one for other groups."""
        for group, value in [*typical.items(), ("(default)", default)]:
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"a reference {prop} must be a positive number, got {value!r} for {group!r}")
        reference = tuple(sorted((str(g), math.log(v)) for g, v in typical.items()))
        text = repr((prop, by, reference, math.log(default))).encode()
        return cls(prop, by, math.log(default), hashlib.blake2b(text, digest_size=6).hexdigest(), reference)

    @property
    def name(self) -> str:
        """The feature name: ``prop_vs_by``."""
        return f"{_slug(self.prop)}_vs_{_slug(self.by)}"

    @property
    def key(self) -> str:
        """The name with the reference table's digest: a new reference is a new feature."""
        return f"{self.name}@{self.digest}"

    @property
    def table(self) -> dict[str, float]:
        """The reference values by key (the usual value of each ``by``)."""
        return dict(self.reference)

    def relate(self, value: float | None, group: object, table: Mapping[str, float] | None = None) -> float | None:
        """``log(value / reference)`` for one event's value and group; None
        unless the value is a positive finite number."""
        if value is None or not (0 < value < math.inf):
            return None
        key = group_key(group)
        if key is None:
            return math.log(value) - self.default
        return math.log(value) - (table if table is not None else self.table).get(key, self.default)


def group_key(group: object) -> str | None:
    """A group's name in a reference table: text as is, whole numbers as text."""
    if isinstance(group, str):
        return group
    if isinstance(group, int) and not isinstance(group, bool):
        return str(group)
    return None


Prop = str | Relative


def prop_name(prop: Prop) -> str:
    """A property as it appears in a feature name."""
    return prop.name if isinstance(prop, Relative) else _slug(prop)


def prop_key(prop: Prop) -> str:
    """A property's identity in a stream's key (a relative one names its reference)."""
    return prop.key if isinstance(prop, Relative) else prop


def _where(name: str, where: Predicate | None) -> str:
    return name if where is None else f"{name}_{where.suffix}"


@dataclass(frozen=True, slots=True)
class _Windowed:
    event: str
    within: timedelta
    where: Predicate | None
    resolution: timedelta | None

    @property
    def within_ms(self) -> int:
        return duration_ms(self.within)

    @property
    def resolution_ms(self) -> int:
        if self.resolution is None:
            return resolution_for(self.within_ms)
        r = duration_ms(self.resolution)
        if self.within_ms % r:
            raise ValueError(f"window {self.within} is not a whole number of {self.resolution} buckets")
        return r

    @property
    def stream(self) -> tuple[str, Predicate | None]:
        return (self.event, self.where)


def _event_slug(event: str) -> str:
    """An event type in a feature name: a canonical type as it is, a custom
    event's name (``Coupon Applied``, ``any`` in quotes) with a short hash, so
    no two events, and no event and other feature, share a name.

    >>> _event_slug("add_to_cart"), _event_slug("Coupon Applied"), _event_slug("coupon applied")
    ('add_to_cart', 'coupon_applied_a4044d', 'coupon_applied_95fabb')
    """
    if event == ANY:
        return "any"
    if event in CANONICAL_TYPES:
        return event
    return f"{_slug(event)}_{hashlib.sha256(event.encode()).hexdigest()[:6]}"


@dataclass(frozen=True, slots=True)
class WindowCount(_Windowed):
    """Events of one type (``*``: any type) in a sliding window.

    >>> WindowCount("*", timedelta(days=7)).name
    'any_count_7d'
    """

    def __init__(
        self, event: str, within: timedelta, where: Predicate | None = None, resolution: timedelta | None = None
    ) -> None:
        _init(self, event=event, within=within, where=where, resolution=resolution)

    @property
    def name(self) -> str:
        """The feature name: ``event_count_window``, with its predicate."""
        return _where(f"{_event_slug(self.event)}_count_{format_duration(self.within_ms)}", self.where)


@dataclass(frozen=True, slots=True)
class _PropertyWindowed(_Windowed):
    """A window over one property of the events: ``(prop, event, within, where, resolution)``.
    ``prop`` names a property, or derives one (:class:`Relative`)."""

    prop: Prop = ""

    def __init__(
        self,
        prop: Prop,
        event: str,
        within: timedelta,
        where: Predicate | None = None,
        resolution: timedelta | None = None,
    ) -> None:
        _init(self, prop=prop, event=event, within=within, where=where, resolution=resolution)


@dataclass(frozen=True, slots=True, init=False)
class WindowSum(_PropertyWindowed):
    """The sum of a numeric property over events in a window.

    >>> WindowSum("revenue", "purchase", timedelta(days=30)).name
    'purchase_revenue_sum_30d'
    """

    @property
    def name(self) -> str:
        """The feature name: ``event_prop_sum_window``, with its predicate."""
        base = f"{_event_slug(self.event)}_{prop_name(self.prop)}_sum_{format_duration(self.within_ms)}"
        return _where(base, self.where)


@dataclass(frozen=True, slots=True, init=False)
class WindowMean(_PropertyWindowed):
    """The mean of a numeric property over the events in a window that carry
    it (NaN when none do).

    >>> WindowMean("time_on_page_s", "product_view", timedelta(hours=24)).name
    'product_view_time_on_page_s_mean_24h'
    """

    @property
    def name(self) -> str:
        """The feature name: ``event_prop_mean_window``, with its predicate."""
        base = f"{_event_slug(self.event)}_{prop_name(self.prop)}_mean_{format_duration(self.within_ms)}"
        return _where(base, self.where)


@dataclass(frozen=True, slots=True, init=False)
class WindowDistinct(_PropertyWindowed):
    """Distinct values of a property over events in a window (capped at
    :data:`DISTINCT_CAP`)."""

    @property
    def name(self) -> str:
        """The feature name: ``event_distinct_prop_window``, with its predicate."""
        base = f"{_event_slug(self.event)}_distinct_{_slug(self.prop)}_{format_duration(self.within_ms)}"
        return _where(base, self.where)

    @property
    def resolution_ms(self) -> int:  # distinct values keep their exact last time
        """Distinct values keep their exact last time: a resolution of 1 ms."""
        return 1


def _init(obj: object, **values: Any) -> None:
    for key, value in values.items():
        object.__setattr__(obj, key, value)
    if not isinstance(values["within"], timedelta):
        raise TypeError(f"within must be a timedelta, got {type(values['within']).__name__}")
    duration_ms(values["within"])


@dataclass(frozen=True, slots=True)
class Recency:
    """Seconds since the last event of a type (NaN if there was none), exact
    to the millisecond."""

    event: str
    where: Predicate | None = None

    @property
    def name(self) -> str:
        """The feature name: ``event_recency_s``, with its predicate."""
        return _where(f"{_event_slug(self.event)}_recency_s", self.where)

    @property
    def stream(self) -> tuple[str, Predicate | None]:
        """The stream the recency follows: the event type and its predicate."""
        return (self.event, self.where)


@dataclass(frozen=True, slots=True)
class Ratio:
    """One feature over another (0 when the denominator is 0).

    >>> d7 = timedelta(days=7)
    >>> Ratio(WindowCount("email_click", d7), WindowCount("email_open", d7)).name
    'email_click_count_7d_per_email_open_count_7d'
    """

    numerator: Spec
    denominator: Spec

    @property
    def name(self) -> str:
        """The feature name: ``numerator_per_denominator``."""
        return f"{self.numerator.name}_per_{self.denominator.name}"


@dataclass(frozen=True, slots=True)
class CartValue:
    """The open cart's value: price × quantity of cart adds minus removals
    since the last purchase, over the last ``within`` (never below 0). Adds
    in the same minute as a purchase count as bought."""

    within: timedelta = timedelta(days=7)

    @property
    def name(self) -> str:
        """The feature name: ``cart_value_window``."""
        return f"cart_value_{format_duration(duration_ms(self.within))}"

    @property
    def resolution_ms(self) -> int:
        """Cart contents are bucketed by the minute."""
        return MINUTE_MS


@dataclass(frozen=True, slots=True)
class LastValue:
    """The last value seen of an event field (``device``, ``country``, ...):
    a categorical feature (None before any)."""

    field: str

    @property
    def name(self) -> str:
        """The feature name: ``last_field``."""
        return f"last_{_slug(self.field)}"


TRAIT = "trait:"  # the field of a trait, beside the event fields and properties
TRAIT_KINDS = ("identify", "group")  # the calls whose traits are kept


def trait_text(value: object) -> str | None:
    """A trait's value as profiles keep it: text, booleans as ``true``/``false``
    (None for a missing or nested one).

    >>> trait_text("gold"), trait_text(True), trait_text(3), trait_text(2.5), trait_text({"a": 1})
    ('gold', 'true', '3', '2.5', None)
    """
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class Trait(LastValue):
    """The latest value of an ``identify`` or ``group`` trait, after scrubbing
    (a personal one is a pseudonym), as text; None before any. Rules compare
    it with strings, numbers (when the text is one) and ``true``/``false``.

    >>> t = Trait.of("plan")
    >>> t.name, t.field, t.trait
    ('trait_plan', 'trait:plan', 'plan')
    """

    @classmethod
    def of(cls, trait: str) -> Trait:
        """The feature of a trait by its name: ``Trait.of("plan")``."""
        return cls(TRAIT + trait)

    @property
    def trait(self) -> str:
        """The trait's name (the field without its prefix)."""
        return self.field[len(TRAIT) :]

    @property
    def name(self) -> str:
        """The feature name: ``trait_<slug>``."""
        slug = _slug(self.trait)  # custom events' names carry a hash: no event feature starts trait_<slug>
        return (
            f"trait_{slug if slug == self.trait else slug + '_' + hashlib.sha256(self.trait.encode()).hexdigest()[:6]}"
        )


@dataclass(frozen=True, slots=True)
class HourOfDay:
    """The read time's local hour of day (in the user's last seen timezone,
    UTC before any) on the unit circle: ``hour_sin``/``hour_cos``."""

    part: str = "sin"

    @property
    def name(self) -> str:
        """The feature name: ``hour_sin`` or ``hour_cos``."""
        if self.part not in ("sin", "cos"):
            raise ValueError(f"HourOfDay part must be 'sin' or 'cos', got {self.part!r}")
        return f"hour_{self.part}"


@dataclass(frozen=True, slots=True)
class Weekend:
    """1.0 when the read time falls on a Saturday or Sunday, local time."""

    @property
    def name(self) -> str:
        """The feature name: ``weekend``."""
        return "weekend"


Spec = (
    WindowCount
    | WindowSum
    | WindowMean
    | WindowDistinct
    | Recency
    | Ratio
    | CartValue
    | LastValue
    | HourOfDay
    | Weekend
)
CATEGORICAL = (LastValue,)
