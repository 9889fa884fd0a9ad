"""Offline features: point-in-time computation over an event table.

For a table of cutoffs ``(profile_id, at)`` every feature is computed from
the events at or before each cutoff only, vectorized with NumPy: events are
sorted by (user, time, arrival) once, each cutoff's window becomes an index
range found by binary search, and sums come from prefix sums. No Python loop
runs per cutoff. Results equal the online computation (:mod:`features.online`)
for the same events at the same moment; the time semantics are in
:mod:`features.specs`.

The table's row order is its arrival order: duplicates of a ``messageId``
received within 24 hours of the first are dropped (first arrival wins), and
events later than the allowed lateness are left out of windows, as online.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray as Array

from features.acceptance import accepted as accepted
from features.acceptance import accepted_with_users, column_ms, string_codes
from features.events import ADD_TO_CART, NUMERIC_PROPERTIES, PURCHASE, REMOVE_FROM_CART, STRING_PROPERTIES
from features.fields import same
from features.local_time import utc_offsets_ms
from features.online import CART, FeatureSet
from features.specs import (
    ANY,
    DISTINCT_CAP,
    EVENT_FIELDS,
    TRAIT,
    TRAIT_KINDS,
    CartValue,
    Eq,
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
    group_key,
    trait_text,
)
from features.stitching import Stitching
from features.table import SESSION
from features.values import number

USER_SHIFT = np.int64(1) << np.int64(42)  # an event's key: its user's code * USER_SHIFT + its time (ms)
_SHIFT = USER_SHIFT
_TYPED = {*EVENT_FIELDS, *STRING_PROPERTIES, *NUMERIC_PROPERTIES, SESSION}


def _ms(series: pd.Series) -> Array[np.int64]:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.tz_convert("UTC").astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    return series.to_numpy(dtype=np.int64)


class OfflineFeatures:
    """Point-in-time features of one event table."""

    def __init__(self, features: FeatureSet, events: pa.Table | pd.DataFrame) -> None:
        self.features = features
        table = events if isinstance(events, pa.Table) else pa.Table.from_pandas(events, preserve_index=False)
        duplicate, late, (user_codes, user_names) = accepted_with_users(table, features.lateness_ms)
        self.stitching = Stitching.of(table, duplicate)
        if self.stitching is not None:  # linked ids: late as the engine decides it, one profile per version
            profiles = table.column("profile_id").to_numpy(zero_copy_only=False)
            times = column_ms(table.column("ts"))
            late = self.stitching.late(profiles, times, duplicate, late, features.lateness_ms)
            keep, virtual = self.stitching.expand(np.flatnonzero(~duplicate & ~late), profiles)
            codes, user_names = string_codes(pa.chunked_array([pa.array(virtual, pa.string())]))
        else:
            keep = np.flatnonzero(~duplicate & ~late)
            codes = user_codes[keep]
        self.applied = ~duplicate & ~late  # by table row: what the engine applies
        self.duplicate = duplicate  # by table row: a repeated messageId the engine drops
        self.duplicates = int(duplicate.sum())
        self.late = int(late.sum())
        self._user_codes = {u: i for i, u in enumerate(user_names)}
        self._user_names = np.array(user_names, dtype=object)
        ts = column_ms(table.column("ts"))[keep]
        if len(ts) and (ts.min() < 0 or ts.max() >= _SHIFT - 1):
            raise ValueError("event times must lie between 1970 and 2109")
        if len(user_names) >= 1 << 21:  # a (user, time) key is user * 2^42 + time, in 64 bits
            raise ValueError(f"a table holds at most {(1 << 21) - 1:,} profiles, this one {len(user_names):,}")
        order = np.lexsort((keep, ts, codes))
        self._table = table
        self._rows = keep[order]  # table rows of the applied events, sorted by (user, time, arrival)
        self._keys = codes[order] * _SHIFT + ts[order]
        self._ts = ts[order]
        self._columns: dict[str, Array] = {}
        self._json_cache: list[dict] | None = None
        self._traits_cache: list[dict] | None = None
        self._masks: dict[tuple[str, Predicate | None], Array[np.bool_]] = {}

    # -- columns -------------------------------------------------------------

    def _column(self, name: str) -> Array:
        """A table column over the applied events in sorted order (strings as objects)."""
        col = self._columns.get(name)
        if col is None:
            arrow = self._table.column(name).take(pa.array(self._rows))
            if pa.types.is_floating(arrow.type):
                col = arrow.to_numpy(zero_copy_only=False)
            else:
                col = np.asarray(arrow.to_numpy(zero_copy_only=False), dtype=object)
            self._columns[name] = col
        return col

    def _raw_traits(self) -> list[dict]:
        if self._traits_cache is None:
            self._traits_cache = [orjson.loads(t) if t else {} for t in self._column("traits")]
        return self._traits_cache

    def _raw_properties(self) -> list[dict]:
        if self._json_cache is None:
            self._json_cache = [orjson.loads(p) if p else {} for p in self._column("properties")]
        return self._json_cache

    def _field(self, name: str) -> Array:
        """Raw values (object) of a filterable field (a trait's as text, on identify and group calls only)."""
        if name in _TYPED and name in self._table.column_names and name not in NUMERIC_PROPERTIES:
            return self._column(name)
        if name.startswith(TRAIT):
            trait, kinds = name[len(TRAIT) :], self._column("kind")
            pairs = zip(self._raw_traits(), kinds, strict=True)
            return np.array([trait_text(t.get(trait)) if k in TRAIT_KINDS else None for t, k in pairs], dtype=object)
        return np.array([p.get(name) for p in self._raw_properties()], dtype=object)

    def _numbers(self, name: str) -> Array[np.float64]:
        if name in NUMERIC_PROPERTIES and name in self._table.column_names:
            return self._column(name).astype(np.float64)
        return np.array([np.nan if (v := number(p.get(name))) is None else v for p in self._raw_properties()])

    def _values(self, prop: Prop) -> Array[np.float64]:
        """A numeric property, or a derived one (:class:`Relative`), of every event."""
        if isinstance(prop, str):
            return self._numbers(prop)
        value = self._numbers(prop.prop)
        codes, groups = pd.factorize(self._field(prop.by), use_na_sentinel=True)
        table = prop.table
        known = [group_key(g) for g in groups]
        refs = np.array([prop.default if k is None else table.get(k, prop.default) for k in known] + [prop.default])
        with np.errstate(invalid="ignore", divide="ignore"):
            usable = (value > 0) & np.isfinite(value)
            return np.where(usable, np.log(np.where(usable, value, 1.0)) - refs[codes], np.nan)

    def reference(self, prop: str, by: str, event: str, min_events: int = 20, max_groups: int = 10_000) -> Relative:
        """The typical (median) ``prop`` of each ``by`` group over ``event``
        events, as a :class:`Relative` property. Groups with fewer than
        ``min_events`` values, or past the ``max_groups`` largest, take the
        median of all."""
        mask = self._mask(event, None)
        value = self._numbers(prop)[mask]
        group = self._field(by)[mask]
        usable = (value > 0) & np.isfinite(value)
        frame = pd.DataFrame({"group": [group_key(g) for g in group[usable]], "value": value[usable]})
        default = float(frame["value"].median()) if len(frame) else 1.0
        stats = frame.dropna().groupby("group")["value"].agg(["median", "size"])
        stats = stats[stats["size"] >= min_events].nlargest(max_groups, "size")
        return Relative.of(prop, by, stats["median"].astype(float).to_dict(), default)

    def _mask(self, event: str, where: Predicate | None) -> Array[np.bool_]:
        key = (event, where)
        mask = self._masks.get(key)
        if mask is None:
            types = self._column("type")
            if event == CART:
                mask = (types == ADD_TO_CART) | (types == REMOVE_FROM_CART)
            elif event == ANY:
                mask = np.ones(len(types), dtype=bool)
            else:
                mask = types == event
            if where is not None:
                mask = mask & self._where(where)
            self._masks[key] = mask
        return mask

    @property
    def users(self) -> Array:
        """The profile ids, by the codes :meth:`times` and :meth:`recurrences` give."""
        return self._user_names

    def times(self, event: str, where: Predicate | None = None) -> tuple[Array[np.int64], Array[np.int64]]:
        """When each applied event of a stream happened (``event`` a type,
        ``any``, or the cart's adds and removes): user codes (see
        :attr:`users`) and times, in (user, time) order."""
        mask = self._mask(event, where)
        return self._keys[mask] // _SHIFT, self._ts[mask]

    def recurrences(self, spec: WindowDistinct) -> tuple[Array, Array[np.int64], Array[np.int64]]:
        """For each applied event of a distinct count's stream with a value:
        its user's code, its time, and when the user's same value comes next
        (the largest int64 if never), in (user, time) order."""
        mask = self._mask(spec.event, spec.where)
        raw = self._field(cast(str, spec.prop))[mask]
        keep = np.flatnonzero(pd.notna(raw))
        users = (self._keys[mask] // _SHIFT)[keep]
        ts = self._ts[mask][keep]
        codes = pd.factorize(_as_text(raw[keep]))[0]
        order = np.lexsort((np.arange(len(keep)), codes, users))  # by user, value, then time
        nxt = np.full(len(keep), np.iinfo(np.int64).max, dtype=np.int64)
        if len(keep) > 1:
            a, b = order[:-1], order[1:]
            same = (users[a] == users[b]) & (codes[a] == codes[b])
            nxt[a[same]] = ts[b[same]]
        return users, ts, nxt

    def _where(self, where: Predicate) -> Array[np.bool_]:
        values = self._field(where.field)
        wanted = (where.value,) if isinstance(where, Eq) else where.values
        if all(isinstance(w, str) for w in wanted):
            return np.isin(values, np.array(wanted, dtype=object))
        return np.array([v is not None and any(same(v, w) for w in wanted) for v in values], dtype=bool)

    # -- computation ----------------------------------------------------------

    def at(self, cutoffs: pd.DataFrame, features: FeatureSet | None = None) -> pd.DataFrame:
        """Features at each cutoff (columns ``profile_id`` and ``at``, a UTC
        datetime or epoch milliseconds), aligned with the cutoffs' rows: this
        table's feature set, or another with the same lateness."""
        features = features or self.features
        if features.lateness_ms != self.features.lateness_ms:
            raise ValueError("another feature set must have the same lateness (it decides which events apply)")
        for col in ("profile_id", "at"):
            if col not in cutoffs:
                raise ValueError(f"cutoffs need a {col!r} column (have {list(cutoffs.columns)})")
        at = _ms(cutoffs["at"].reset_index(drop=True))
        unknown = len(self._user_codes)
        profiles = cutoffs["profile_id"].reset_index(drop=True)
        if self.stitching is not None:  # a linked id reads the version of its group in force then
            linked = np.flatnonzero(profiles.isin(self.stitching.ids).to_numpy())
            if len(linked):
                profiles = profiles.astype(object)
                key_at = self.stitching.key_at
                profiles.iloc[linked] = [key_at(profiles.iat[i], int(at[i])) for i in linked.tolist()]
        codes = profiles.map(self._user_codes).fillna(unknown).to_numpy(dtype=np.int64)
        order = np.lexsort((at, codes))
        q = _Cutoffs(codes[order] * _SHIFT + at[order], at[order], codes[order] * _SHIFT)
        cache: dict[Spec, Array] = {}
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        names = features.names
        categorical = set(features.categorical)
        numeric = [n for n in names if n not in categorical]
        position = {n: j for j, n in enumerate(numeric)}
        matrix = np.empty((len(order), len(numeric)), dtype=np.float64, order="F")
        objects: dict[str, Array] = {}
        for spec in features.specs:
            values = self._compute(spec, q, cache)
            if spec.name in categorical:
                objects[spec.name] = values[back]
            else:
                matrix[:, position[spec.name]] = values[back]
        out = pd.DataFrame(matrix, columns=numeric, index=cutoffs.index, copy=False)
        for name in names:
            if name in objects:
                out.insert(names.index(name), name, objects[name])
        return out

    def _compute(self, spec: Spec, q: _Cutoffs, cache: dict[Spec, Array]) -> Array:
        if spec in cache:
            return cache[spec]
        value = self._compute_uncached(spec, q, cache)
        cache[spec] = value
        return value

    def _range(
        self, mask: Array[np.bool_], q: _Cutoffs, thr: Array[np.int64] | None, tag: object = None
    ) -> tuple[Array, Array]:
        """Indices into the masked events: ``lo``, ``hi`` of events with
        ``thr < ts <= at`` (``thr`` None: from the user's first event).

        Positions are searched once among all events (``tag`` names ``thr``
        for reuse across specs) and mapped to each mask by its prefix count.
        """
        mask_key = id(mask)  # masks are cached per stream, so one mask, one prefix count
        held = q.prefix_of.get(mask_key)
        if held is None:  # holding the mask keeps its id from being reused
            held = q.prefix_of[mask_key] = (mask, np.concatenate(([0], np.cumsum(mask))))
        prefix = held[1]
        if q.hi_all is None:
            q.hi_all = np.searchsorted(self._keys, q.keys, side="right")
        lo_key = "start" if thr is None else tag
        lo_all = q.lo_of.get(lo_key) if lo_key is not None else None
        if lo_all is None:
            if thr is None:
                lo_all = np.searchsorted(self._keys, q.start, side="left")
            else:
                lo_all = np.searchsorted(self._keys, q.start + np.maximum(thr, -1), side="right")
            if lo_key is not None:
                q.lo_of[lo_key] = lo_all
        return prefix[lo_all], prefix[q.hi_all]

    def _window(
        self, spec: WindowCount | WindowSum | WindowMean, q: _Cutoffs
    ) -> tuple[tuple[Array, Array], Array[np.bool_]]:
        mask = self._mask(spec.event, spec.where)
        r = spec.resolution_ms
        w = spec.within_ms
        lo, hi = self._range(mask, q, (q.at - w) // r * r, tag=("window", w, r))
        return (lo, hi), mask

    def _compute_uncached(self, spec: Spec, q: _Cutoffs, cache: dict[Spec, Array]) -> Array:
        if isinstance(spec, WindowCount | WindowSum | WindowMean):
            (lo, hi), mask = self._window(spec, q)
            if isinstance(spec, WindowCount):
                return hi - lo
            values = self._values(spec.prop)[mask]
            present = ~np.isnan(values)
            total = self._total(mask, q, np.where(present, values, 0.0), lo, hi)
            if isinstance(spec, WindowSum):
                return total
            counts = np.concatenate(([0], np.cumsum(present)))
            n = counts[hi] - counts[lo]
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, total / np.maximum(n, 1), np.nan)
        if isinstance(spec, WindowDistinct):
            return self._distinct(spec, q)
        if isinstance(spec, Recency):
            return self._since(self._mask(spec.event, spec.where), q)[0]
        if isinstance(spec, Ratio):
            num = self._compute(spec.numerator, q, cache).astype(np.float64)
            den = self._compute(spec.denominator, q, cache).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den == 0, 0.0, num / np.where(den == 0, 1.0, den))
        if isinstance(spec, CartValue):
            return self._cart_value(spec, q)
        if isinstance(spec, LastValue):
            return self._last_value(spec.field, q)
        if isinstance(spec, HourOfDay | Weekend):
            hour, weekday = self._clock(q)
            if isinstance(spec, Weekend):
                return (weekday >= 5).astype(np.float64)
            trig = np.sin if spec.part == "sin" else np.cos
            return trig(2 * np.pi * hour / 24.0)
        raise TypeError(f"not a feature spec: {spec!r}")

    def _total(
        self, mask: Array[np.bool_], q: _Cutoffs, values: Array[np.float64], lo: Array, hi: Array
    ) -> Array[np.float64]:
        """The sum of the masked events' values in ``[lo, hi)``, as the online
        buckets make it: running sums of each user's values, added one by one
        in order, the one before the window subtracted from the last in it."""
        first, _ = self._range(mask, q, None)  # each cutoff's user's first event of the stream
        run = _running_sums(values, self._keys[mask] // _SHIFT)
        if not len(run):
            return np.zeros(len(hi))
        last = np.where(hi > first, run[np.maximum(hi - 1, 0)], 0.0)
        return np.where(lo > first, last - run[np.maximum(lo - 1, 0)], last)

    def _since(self, mask: Array[np.bool_], q: _Cutoffs) -> tuple[Array[np.float64], Array[np.int64]]:
        """Seconds since the last masked event at or before each cutoff (NaN
        if none), and that event's time (-1 if none)."""
        lo, hi = self._range(mask, q, None)
        ts = self._ts[mask]
        seen = hi > lo
        last = np.where(seen, ts[np.maximum(hi - 1, 0)] if len(ts) else 0, -1)
        return np.where(seen, (q.at - last) / 1000.0, np.nan), last

    def _distinct(self, spec: WindowDistinct, q: _Cutoffs) -> Array[np.int64]:
        """Distinct values among events in each cutoff's window.

        An event i (sorted by user, time) is the latest of its value at or
        before a cutoff when the next event with that value comes at or after
        the cutoff's ``hi``; it is in the window when ``i >= lo``. As ``lo``
        and ``hi`` only grow over sorted cutoffs, the cutoffs that count event
        i form one contiguous run, added with a difference array.
        """
        mask = self._mask(spec.event, spec.where)
        raw = self._field(cast(str, spec.prop))[mask]
        keys_all = self._keys[mask]
        lo, hi = self._range(mask, q, q.at - spec.within_ms, tag=("distinct", spec.within_ms))
        n = len(keys_all)
        idx = np.flatnonzero(pd.notna(raw))
        values = _as_text(raw[idx])
        users = keys_all[idx] // _SHIFT
        next_same = np.full(n, n, dtype=np.int64)
        if len(idx):
            value_codes = pd.factorize(values)[0]
            order = np.lexsort((idx, value_codes, users))
            a, b = order[:-1], order[1:]
            same = (users[a] == users[b]) & (value_codes[a] == value_codes[b])
            next_same[idx[a[same]]] = idx[b[same]]
        # event i counts for cutoffs with i < hi <= next_same[i] and lo <= i
        first = np.searchsorted(hi, idx, side="right")
        stop = np.minimum(np.searchsorted(hi, next_same[idx], side="right"), np.searchsorted(lo, idx, side="right"))
        ok = stop > first
        diff = np.bincount(first[ok], minlength=len(hi) + 1) - np.bincount(stop[ok], minlength=len(hi) + 1)
        return np.minimum(np.cumsum(diff[:-1]), DISTINCT_CAP)

    def _cart_value(self, spec: CartValue, q: _Cutoffs) -> Array[np.float64]:
        r = spec.resolution_ms
        _, last_buy = self._since(self._mask(PURCHASE, None), q)
        thr = (q.at - duration_ms(spec.within)) // r * r
        thr = np.where(last_buy >= 0, np.maximum(thr, -(-last_buy // r) * r), thr)
        mask = self._mask(CART, None)
        lo, hi = self._range(mask, q, thr)
        lo = np.minimum(lo, hi)  # a purchase in the cutoff's own bucket empties the cart: nothing after it counts
        types = self._column("type")[mask]
        price = np.nan_to_num(self._numbers("price")[mask], nan=0.0)
        qty = self._numbers("quantity")[mask]
        value = price * np.where(np.isnan(qty), 1.0, qty)
        signed = np.where(types == ADD_TO_CART, value, -value)
        return np.maximum(0.0, self._total(mask, q, signed, lo, hi))

    def _last_value(self, field: str, q: _Cutoffs) -> Array:
        cached = q.last_of.get(field)
        if cached is not None:
            return cached
        raw = self._field(field)
        has = pd.notna(raw)
        lo, hi = self._range(has, q, None)
        values = _as_text(raw[has])
        out = np.full(len(hi), None, dtype=object)
        seen = hi > lo
        out[seen] = values[hi[seen] - 1]
        q.last_of[field] = out
        return out

    def _clock(self, q: _Cutoffs) -> tuple[Array[np.float64], Array[np.int64]]:
        """Local fractional hour and weekday of each cutoff in the user's last timezone."""
        if q.clock is not None:
            return q.clock
        tz = self._last_value("timezone", q)
        hour = np.empty(len(q.at), dtype=np.float64)
        weekday = np.empty(len(q.at), dtype=np.int64)
        inverse, names = pd.factorize(tz, use_na_sentinel=False)
        for k, name in enumerate(names):
            rows = inverse == k
            offset = utc_offsets_ms(q.at[rows], name if isinstance(name, str) else None)
            local = q.at[rows] + offset
            minutes = (local // 60_000) % (24 * 60)
            hour[rows] = (minutes // 60) + (minutes % 60) / 60.0
            weekday[rows] = ((local // 86_400_000) + 3) % 7  # 1970-01-01 was a Thursday
        q.clock = (hour, weekday)
        return q.clock


def _running_sums(values: Array[np.float64], users: Array[np.int64]) -> Array[np.float64]:
    """Each user's running sum at each of its values (sorted by user), added
    one at a time in order, bit for bit as a loop would: one vector step per
    position within a user, so the work is the values' count."""
    out = np.array(values, dtype=np.float64)
    n = len(out)
    if n < 2:
        return out
    start = np.ones(n, dtype=bool)
    start[1:] = users[1:] != users[:-1]
    rank = np.arange(n) - np.maximum.accumulate(np.where(start, np.arange(n), 0))
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(int(rank.max()) + 2))
    for r in range(1, len(bounds) - 1):
        at = order[bounds[r] : bounds[r + 1]]
        out[at] = out[at - 1] + out[at]
    return out


def _as_text(values: Array) -> Array:
    """Values as strings, as online trackers keep them."""
    if all(type(v) is str for v in values[:64]) and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return np.array([v if isinstance(v, str) else str(v) for v in values], dtype=object)


@dataclass(slots=True)
class _Cutoffs:
    """Cutoffs sorted by (user, time), and the index ranges found for them."""

    keys: Array[np.int64]
    at: Array[np.int64]
    start: Array[np.int64]  # code * 2^42: the lowest key of the user
    prefix_of: dict = field(default_factory=dict)
    hi_all: Array[np.int64] | None = None
    lo_of: dict = field(default_factory=dict)
    last_of: dict = field(default_factory=dict)
    clock: tuple | None = None


def point_in_time(features: FeatureSet, events: pa.Table | pd.DataFrame, cutoffs: pd.DataFrame) -> pd.DataFrame:
    """Features at each cutoff: the one-call form of :class:`OfflineFeatures`."""
    return OfflineFeatures(features, events).at(cutoffs)
