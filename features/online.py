"""Online features: a small per-user state updated event by event.

A :class:`FeatureSet` compiles a list of specs into a plan: *streams* of time
buckets per (event type, filter, resolution) shared by every window over
them, distinct-value trackers, last-seen times and last values. A
:class:`Profile` holds one user's state; :meth:`FeatureSet.update` applies an
event in place and :meth:`FeatureSet.read` gives the vector at any time,
windows sliding with no new event. Old buckets are dropped as they leave the
longest window, so a profile's size is bounded whatever the number of events.
Time semantics are in :mod:`features.specs`.

>>> from datetime import timedelta
>>> from features.events import Event
>>> from features.specs import MINUTE_MS
>>> fs = FeatureSet([WindowCount("add_to_cart", timedelta(hours=1)), Recency("add_to_cart")])
>>> p = fs.new_profile()
>>> fs.update(p, Event("m1", "add_to_cart", "u1", None, ts_ms=10 * MINUTE_MS, received_ms=0))
True
>>> fs.read(p, 10 * MINUTE_MS)
{'add_to_cart_count_1h': 1, 'add_to_cart_recency_s': 0.0}
>>> fs.read(p, 70 * MINUTE_MS)  # the hour has passed: the window is empty, with no new event
{'add_to_cart_count_1h': 0, 'add_to_cart_recency_s': 3600.0}
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from features.buckets import Buckets
from features.events import ADD_TO_CART, PURCHASE, REMOVE_FROM_CART, Event
from features.fields import cart_delta, field_reader, field_value, matches
from features.local_time import local, local_hour
from features.profile import CART as CART
from features.profile import CART_VALUE as CART_VALUE
from features.profile import Profile as Profile
from features.profile import Stream, Tracker, Value
from features.reading import Plan, ratio
from features.specs import (
    ANY,
    DEFAULT_LATENESS,
    DISTINCT_CAP,
    CartValue,
    HourOfDay,
    LastValue,
    Predicate,
    Prop,
    Ratio,
    Recency,
    Relative,
    Spec,
    Weekend,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
    duration_ms,
    prop_key,
)
from features.values import number


def _flatten(specs: Iterable[Spec]) -> list[Spec]:
    out: list[Spec] = []
    for spec in specs:
        if isinstance(spec, Ratio):
            out.extend(_flatten([spec.numerator, spec.denominator]))
        out.append(spec)
    return out


class FeatureSet:
    """A list of specs compiled for online updates and reads."""

    def __init__(self, specs: Sequence[Spec], lateness: timedelta = DEFAULT_LATENESS) -> None:
        self.specs: tuple[Spec, ...] = tuple(specs)
        self.names: tuple[str, ...] = tuple(s.name for s in self.specs)
        dupes = {n for n in self.names if self.names.count(n) > 1}
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {sorted(dupes)}")
        self.lateness_ms = duration_ms(lateness)
        self.categorical: tuple[str, ...] = tuple(s.name for s in self.specs if isinstance(s, LastValue))
        props: dict[tuple[str, Predicate | None, int], set[Prop]] = {}
        keep: dict[tuple[str, Predicate | None, int], int] = {}
        trackers: dict[tuple[str, Predicate | None, str | None], int] = {}
        fields: list[str] = []
        for spec in _flatten(self.specs):
            if isinstance(spec, WindowCount | WindowSum | WindowMean):
                k = (spec.event, spec.where, spec.resolution_ms)
                props.setdefault(k, set())
                if isinstance(spec, WindowSum | WindowMean):
                    props[k].add(spec.prop)
                keep[k] = max(keep.get(k, 0), spec.within_ms)
            elif isinstance(spec, WindowDistinct):
                if not isinstance(spec.prop, str):
                    raise ValueError(f"{spec.name}: distinct counts take a property name, not a derived value")
                t = (spec.event, spec.where, spec.prop)
                trackers[t] = max(trackers.get(t, 0), spec.within_ms)
            elif isinstance(spec, Recency):
                trackers.setdefault((spec.event, spec.where, None), 0)
            elif isinstance(spec, CartValue):
                k = (CART, None, spec.resolution_ms)
                props.setdefault(k, {CART_VALUE})
                keep[k] = max(keep.get(k, 0), duration_ms(spec.within))
                trackers.setdefault((PURCHASE, None, None), 0)
            elif isinstance(spec, LastValue):
                if spec.field not in fields:
                    fields.append(spec.field)
            elif isinstance(spec, HourOfDay | Weekend) and "timezone" not in fields:
                fields.append("timezone")
        self.streams: tuple[Stream, ...] = tuple(
            Stream(e, w, r, tuple(sorted(props[(e, w, r)], key=prop_key)), keep[(e, w, r)]) for (e, w, r) in props
        )
        self.trackers: tuple[Tracker, ...] = tuple(Tracker(e, w, p, ms) for (e, w, p), ms in trackers.items())
        self.fields: tuple[str, ...] = tuple(fields)
        self._field_readers = tuple(field_reader(f) for f in fields)
        self._widths = [1 + 2 * len(s.props) for s in self.streams]
        self._distinct_ix = [i for i, t in enumerate(self.trackers) if t.prop is not None]
        self._recency_ix = [i for i, t in enumerate(self.trackers) if t.prop is None]
        self._slots = {ti: n for pool in (self._distinct_ix, self._recency_ix) for n, ti in enumerate(pool)}
        self._stream_ix = {(s.event, s.where, s.resolution_ms): i for i, s in enumerate(self.streams)}
        self._tracker_ix = {(t.event, t.where, t.prop): i for i, t in enumerate(self.trackers)}
        self._dispatch = self._compile_dispatch()
        self._plan = self._plan_of(self.specs)
        self._changes: dict[Spec, Callable[[Profile, int], int | None]] = {}
        self._drops: dict[Spec, Callable[[Profile, int, int], int | None]] = {}

    @property
    def numeric_properties(self) -> frozenset[str]:
        """The event properties these features read as numbers (the edge checks them)."""
        names = {p.prop if isinstance(p, Relative) else p for s in self.streams for p in s.props}
        return frozenset(names - {CART})

    @property
    def digest(self) -> str:
        """Names this set's definition: its features and what their state keeps
        (a derived property's reference included), for checking that saved
        state belongs to it."""
        text = "\n".join([*self.names, *(s.key for s in self.streams), *(t.key for t in self.trackers)])
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    # -- state ---------------------------------------------------------------

    def new_profile(self) -> Profile:
        """An empty profile for these features."""
        return Profile(self._widths, len(self._distinct_ix), len(self._recency_ix), len(self.fields))

    def _slot(self, tracker_index: int) -> int:
        """A tracker's position among the profile's distinct or recency slots."""
        return self._slots[tracker_index]

    def _compile_dispatch(self) -> dict[str, list[Callable[[Profile, Event], None]]]:
        ops: list[tuple[str, Callable[[Profile, Event], None]]] = []
        for i, s in enumerate(self.streams):
            ops.append((s.event, self._stream_op(i, s)))
        for i, t in enumerate(self.trackers):
            ops.append((t.event, self._tracker_op(self._slot(i), t)))
        dispatch: dict[str, list[Callable[[Profile, Event], None]]] = {ANY: []}
        for event, op in ops:
            targets = (ADD_TO_CART, REMOVE_FROM_CART) if event == CART else (event,)
            for target in targets:
                dispatch.setdefault(target, []).append(op)
        return dispatch

    def _stream_op(self, i: int, s: Stream) -> Callable[[Profile, Event], None]:
        r, keep, where = s.resolution_ms, s.keep_ms, s.where
        props = s.props
        width = 1 + 2 * len(props)
        is_cart = s.event == CART
        prune_after = 2 * keep  # buckets are dropped in batches, at most a window's worth at a time

        getters = [_getter(prop) for prop in props]

        def op(profile: Profile, event: Event) -> None:
            if where is not None and not matches(where, event):
                return
            ts = event.ts_ms
            k = -(-ts // r)  # right-closed buckets: ((k-1)r, kr]
            newest = profile.newest
            if k * r + keep <= newest:
                return  # already out of every window over this stream
            buckets = profile.buckets[i]
            if width == 1:
                buckets.count(k)
            else:
                values = [1.0] + [0.0] * (width - 1)
                for j, get in enumerate(getters):
                    v = cart_delta(event) if is_cart else get(event.properties)
                    if v is not None:
                        values[1 + 2 * j] = 1.0
                        values[2 + 2 * j] = v
                buckets.add(k, values)
            keys = buckets.keys
            if len(keys) > 1 and keys[1] * r + prune_after <= newest:  # prune now and then, not on every event
                buckets.drop_before((newest - keep) // r + 1)

        return op

    def _tracker_op(self, slot: int, t: Tracker) -> Callable[[Profile, Event], None]:
        where, prop, keep = t.where, t.prop, t.keep_ms
        if prop is None:

            def recency(profile: Profile, event: Event) -> None:
                if (where is None or matches(where, event)) and event.ts_ms > profile.last_ts[slot]:
                    profile.last_ts[slot] = event.ts_ms

            return recency

        def distinct(profile: Profile, event: Event) -> None:
            if where is not None and not matches(where, event):
                return
            raw = field_value(event, prop)
            if raw is None:
                return
            value = raw if isinstance(raw, str) else str(raw)
            seen = profile.distinct[slot]
            ts = event.ts_ms
            old = seen.get(value)
            if old is None:
                seen[value] = ts
                if len(seen) > DISTINCT_CAP // 2:
                    cutoff = profile.newest - keep
                    for v in [v for v, when in seen.items() if when <= cutoff]:
                        del seen[v]
                    if len(seen) > DISTINCT_CAP:
                        del seen[min(seen, key=seen.__getitem__)]
            elif ts > old:
                seen[value] = ts

        return distinct

    def update(self, profile: Profile, event: Event) -> bool:
        """Apply one event; False (and counted in ``profile.late``) when it is
        older than the profile's newest by more than the allowed lateness."""
        ts = event.ts_ms
        if ts < profile.newest - self.lateness_ms:
            profile.late += 1
            return False
        if ts > profile.newest:
            profile.newest = ts
        dispatch = self._dispatch
        for op in dispatch[ANY]:
            op(profile, event)
        ops = dispatch.get(event.type)
        if ops is not None:
            for op in ops:
                op(profile, event)
        if self.fields:
            last = profile.last_values
            for j, read in enumerate(self._field_readers):
                value = read(event)
                if value is not None:
                    current = last[j]
                    if current is None or ts >= current[0]:
                        last[j] = (ts, str(value))
        return True

    def merge(self, into: Profile, other: Profile) -> None:
        """Join ``other``'s state into ``into``, as if ``into`` had seen both
        profiles' events (an identity merge): window buckets add up, distinct
        values and last-seen times keep the latest, a field's last value is
        the later one (``into``'s at a tie)."""
        for mine, theirs in zip(into.buckets, other.buckets, strict=True):
            mine.merge(theirs)
        into.newest = max(into.newest, other.newest)
        into.late += other.late
        for slot, ti in enumerate(self._distinct_ix):
            seen, keep = into.distinct[slot], self.trackers[ti].keep_ms
            for value, ts in other.distinct[slot].items():
                if ts > seen.get(value, -1):
                    seen[value] = ts
            if len(seen) > DISTINCT_CAP // 2:
                for v in [v for v, when in seen.items() if when <= into.newest - keep]:
                    del seen[v]
                for v in sorted(seen, key=seen.__getitem__)[: max(len(seen) - DISTINCT_CAP, 0)]:
                    del seen[v]
        into.last_ts = [max(a, b) for a, b in zip(into.last_ts, other.last_ts, strict=True)]
        into.last_values = [
            b if b is not None and (a is None or b[0] > a[0]) else a
            for a, b in zip(into.last_values, other.last_values, strict=True)
        ]

    # -- reads ---------------------------------------------------------------

    def read(self, profile: Profile, at_ms: int) -> dict[str, Value]:
        """The feature vector at ``at_ms`` (read no earlier than the newest event)."""
        return dict(zip(self.names, self._plan.read(profile, max(at_ms, profile.newest)), strict=True))

    def subset_reader(self, names: Iterable[str]) -> Callable[[Profile, int], dict[str, Value]]:
        """A read of only some features, by name, for callers that need few.

        >>> fs = FeatureSet([WindowCount("purchase", timedelta(days=7)), LastValue("country")])
        >>> fs.subset_reader(["last_country"])(fs.new_profile(), 0)
        {'last_country': None}
        """
        names = list(dict.fromkeys(names))
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"not in this feature set: {missing}")
        plan = self._plan_of([self.specs[index[n]] for n in names])

        def read(profile: Profile, at_ms: int) -> dict[str, Value]:
            return dict(zip(names, plan.read(profile, max(at_ms, profile.newest)), strict=True))

        return read

    def read_vector(self, profile: Profile, at_ms: int) -> list[Value]:
        """The values of ``profile``'s features at ``at_ms`` (or its newest event, if later), in :attr:`names` order."""
        return self._plan.read(profile, max(at_ms, profile.newest))

    def _plan_of(self, specs: Sequence[Spec]) -> Plan:
        def stream_of(spec: Spec) -> int:
            return self._stream_ix[(spec.event, spec.where, spec.resolution_ms)]  # type: ignore[union-attr]

        def slot_of(spec: WindowSum | WindowMean) -> int:
            return self.streams[stream_of(spec)].props.index(spec.prop)

        return Plan(specs, stream_of, slot_of, self._reader)

    def _reader(self, spec: Spec) -> Callable[[Profile, int], Value]:
        if isinstance(spec, WindowCount | WindowSum | WindowMean):
            i = self._stream_ix[(spec.event, spec.where, spec.resolution_ms)]
            w, r = spec.within_ms, spec.resolution_ms
            if isinstance(spec, WindowCount):
                return lambda p, t: int(p.buckets[i].total((t - w) // r + 1, 0))
            j = self.streams[i].props.index(spec.prop)
            if isinstance(spec, WindowSum):
                return lambda p, t: p.buckets[i].total((t - w) // r + 1, 2 + 2 * j)
            return lambda p, t: _window_mean(p.buckets[i], (t - w) // r + 1, j)
        if isinstance(spec, WindowDistinct):
            slot = self._slot(self._tracker_ix[(spec.event, spec.where, cast(str, spec.prop))])
            w = spec.within_ms
            return lambda p, t: min(DISTINCT_CAP, sum(1 for when in p.distinct[slot].values() if when > t - w))
        if isinstance(spec, Recency):
            slot = self._slot(self._tracker_ix[(spec.event, spec.where, None)])
            return lambda p, t: (t - p.last_ts[slot]) / 1000.0 if p.last_ts[slot] >= 0 else math.nan
        if isinstance(spec, Ratio):
            num, den = self._reader(spec.numerator), self._reader(spec.denominator)
            return lambda p, t: ratio(num(p, t), den(p, t))
        if isinstance(spec, CartValue):
            i = self._stream_ix[(CART, None, spec.resolution_ms)]
            slot = self._slot(self._tracker_ix[(PURCHASE, None, None)])
            w, r = duration_ms(spec.within), spec.resolution_ms
            return lambda p, t: _cart_value(p.buckets[i], (t - w) // r + 1, p.last_ts[slot], r)
        if isinstance(spec, LastValue):
            j = self.fields.index(spec.field)
            return lambda p, t: None if p.last_values[j] is None else p.last_values[j][1]  # type: ignore[index]
        if isinstance(spec, HourOfDay | Weekend):
            j = self.fields.index("timezone")
            if isinstance(spec, Weekend):
                return lambda p, t: 1.0 if local(t, p.last_values[j]).weekday() >= 5 else 0.0
            trig = math.sin if spec.part == "sin" else math.cos
            return lambda p, t: trig(2 * math.pi * local_hour(local(t, p.last_values[j])) / 24.0)
        raise TypeError(f"not a feature spec: {spec!r}")

    def next_change(self, profile: Profile, spec: Spec, at_ms: int) -> int | None:
        """The next instant after ``at_ms`` at which a windowed feature changes
        with no new event (an event leaves its window), or None. For recency
        the last event's time is returned: the rule layer adds its thresholds."""
        return self.change_function(spec)(profile, at_ms)

    def change_function(self, spec: Spec) -> Callable[[Profile, int], int | None]:
        """``next_change`` for one spec, looked up once (for callers that ask often)."""
        fn = self._changes.get(spec)
        if fn is None:
            fn = self._changes[spec] = self._change_of(spec)
        return fn

    def next_drop(self, profile: Profile, spec: Spec, at_ms: int, level: int) -> int | None:
        """When, with no new event, a window count first falls to ``level`` or
        below (None if it already is): the moment the bucket holding the
        count's excess above ``level`` leaves the window."""
        return self.drop_function(spec)(profile, at_ms, level)

    def drop_function(self, spec: Spec) -> Callable[[Profile, int, int], int | None]:
        """``next_drop`` for one spec, looked up once."""
        fn = self._drops.get(spec)
        if fn is None:
            fn = self._drops[spec] = self._drop_of(spec)
        return fn

    def _drop_of(self, spec: Spec) -> Callable[[Profile, int, int], int | None]:
        if not isinstance(spec, WindowCount):
            raise TypeError(f"next_drop reads window counts, not {spec!r}")
        i = self._stream_ix[(spec.event, spec.where, spec.resolution_ms)]
        w, r = spec.within_ms, spec.resolution_ms

        def drop(profile: Profile, at_ms: int, level: int) -> int | None:
            buckets = profile.buckets[i]
            cum = buckets.cum
            if not cum:
                return None
            j = bisect_left(buckets.keys, (at_ms - w) // r + 1)
            need = cum[-1][0] - level  # the prefix count that, once out of the window, leaves at most level
            if need <= (cum[j - 1][0] if j else 0.0) or level < 0:  # at most level already; or never (below 0)
                return None
            return buckets.keys[bisect_left(cum, need, key=_first)] * r + w

        return drop

    def _change_of(self, spec: Spec) -> Callable[[Profile, int], int | None]:
        if isinstance(spec, Ratio):
            num, den = self._change_of(spec.numerator), self._change_of(spec.denominator)

            def ratio(profile: Profile, at_ms: int) -> int | None:
                a, b = num(profile, at_ms), den(profile, at_ms)
                return b if a is None else a if b is None else min(a, b)

            return ratio
        if isinstance(spec, WindowCount | WindowSum | WindowMean | CartValue):
            if isinstance(spec, CartValue):
                i = self._stream_ix[(CART, None, spec.resolution_ms)]
                w, r = duration_ms(spec.within), spec.resolution_ms
            else:
                i = self._stream_ix[(spec.event, spec.where, spec.resolution_ms)]
                w, r = spec.within_ms, spec.resolution_ms

            def window(profile: Profile, at_ms: int) -> int | None:
                keys = profile.buckets[i].keys
                j = bisect_left(keys, (at_ms - w) // r + 1)
                return keys[j] * r + w if j < len(keys) else None

            return window
        if isinstance(spec, WindowDistinct):
            slot = self._slot(self._tracker_ix[(spec.event, spec.where, cast(str, spec.prop))])
            wd = spec.within_ms

            def distinct(profile: Profile, at_ms: int) -> int | None:
                live = [when + wd for when in profile.distinct[slot].values() if when + wd > at_ms]
                return min(live) if live else None

            return distinct
        if isinstance(spec, Recency):
            rslot = self._slot(self._tracker_ix[(spec.event, spec.where, None)])

            def recency(profile: Profile, at_ms: int) -> int | None:
                last = profile.last_ts[rslot]
                return last if last >= 0 else None

            return recency
        return lambda profile, at_ms: None


def _getter(prop: Prop) -> Callable[[Mapping[str, Any]], float | None]:
    """How a stream reads one of its properties from an event's properties."""
    if isinstance(prop, Relative):
        table, name, by = prop.table, prop.prop, prop.by
        return lambda properties: prop.relate(number(properties.get(name)), properties.get(by), table)
    return lambda properties: number(properties.get(prop))


def _first(row: list[float]) -> float:
    return row[0]


def _window_mean(buckets: Buckets, kmin: int, j: int) -> float:
    n = buckets.total(kmin, 1 + 2 * j)
    return buckets.total(kmin, 2 + 2 * j) / n if n else math.nan


def _cart_value(buckets: Buckets, kmin: int, purchase_ms: int, r: int) -> float:
    if purchase_ms >= 0:
        kmin = max(kmin, -(-purchase_ms // r) + 1)
    return max(0.0, buckets.total(kmin, 2))
