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

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import pyarrow as pa

from features.events import ADD_TO_CART, NUMERIC_PROPERTIES, PURCHASE, REMOVE_FROM_CART, STRING_PROPERTIES
from features.online import CART, FeatureSet, _same, number, zone
from features.specs import (
    ANY,
    DAY_MS,
    DISTINCT_CAP,
    EVENT_FIELDS,
    CartValue,
    Eq,
    HourOfDay,
    LastValue,
    Predicate,
    Ratio,
    Recency,
    Spec,
    Weekend,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
    duration_ms,
)
from features.table import SESSION

DEDUP_MS = DAY_MS
_SHIFT = np.int64(1) << np.int64(42)
_TYPED = {*EVENT_FIELDS, *STRING_PROPERTIES, *NUMERIC_PROPERTIES, SESSION}
Array = npt.NDArray


def _ms(series: pd.Series) -> Array[np.int64]:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.tz_convert("UTC").astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    return series.to_numpy(dtype=np.int64)


def accepted(frame: pd.DataFrame, lateness_ms: int, dedup_ms: int = DEDUP_MS) -> tuple[Array[np.bool_], Array[np.bool_]]:
    """``(duplicate, late)`` masks over a frame in arrival order, as online
    ingestion decides them."""
    n = len(frame)
    ids = frame["message_id"].to_numpy(dtype=object)
    received = _ms(frame["received_at"])
    duplicate = np.zeros(n, dtype=bool)
    repeated = np.flatnonzero(pd.Series(ids).duplicated(keep=False).to_numpy())
    first_seen: dict[str, int] = {}
    for i in repeated:  # only rows whose id occurs more than once
        seen = first_seen.get(ids[i])
        if seen is not None and received[i] - seen < dedup_ms:
            duplicate[i] = True
        else:
            first_seen[ids[i]] = received[i]
    ts = pd.Series(_ms(frame["ts"]), dtype="float64")
    ts[duplicate] = -np.inf  # a dropped duplicate moves no one's newest time
    users = frame["profile_id"].to_numpy(dtype=object)
    prev_max = ts.groupby(users).cummax().groupby(users).shift()
    late = (ts < prev_max - lateness_ms).to_numpy() & ~duplicate
    return duplicate, late


@dataclass(slots=True)
class _Events:
    """Applied events sorted by (user code, time, arrival)."""

    frame: pd.DataFrame
    keys: Array[np.int64]  # code * 2^42 + ts
    ts: Array[np.int64]
    codes: Array[np.int64]


@dataclass(slots=True)
class _Cutoffs:
    keys: Array[np.int64]
    at: Array[np.int64]
    start: Array[np.int64]  # code * 2^42: the lowest key of the user


class OfflineFeatures:
    """Point-in-time features of one event table."""

    def __init__(self, features: FeatureSet, events: pa.Table | pd.DataFrame) -> None:
        self.features = features
        frame = events.to_pandas() if isinstance(events, pa.Table) else events.reset_index(drop=True)
        duplicate, late = accepted(frame, features.lateness_ms)
        self.duplicates = int(duplicate.sum())
        self.late = int(late.sum())
        frame = frame.loc[~duplicate & ~late]
        self._user_codes: dict[str, int] = {u: i for i, u in enumerate(pd.unique(frame["profile_id"]))}
        codes = frame["profile_id"].map(self._user_codes).to_numpy(dtype=np.int64)
        ts = _ms(frame["ts"])
        if len(ts) and (ts.min() < 0 or ts.max() >= _SHIFT - 1):
            raise ValueError("event times must lie between 1970 and 2109")
        order = np.lexsort((np.arange(len(ts)), ts, codes))
        frame = frame.iloc[order].reset_index(drop=True)
        self._events = _Events(frame, codes[order] * _SHIFT + ts[order], ts[order], codes[order])
        self._json_cache: list[dict] | None = None
        self._streams: dict[tuple[str, Predicate | None], Array[np.bool_]] = {}

    # -- columns -------------------------------------------------------------

    def _raw_properties(self) -> list[dict]:
        if self._json_cache is None:
            self._json_cache = [orjson.loads(p) if p else {} for p in self._events.frame["properties"]]
        return self._json_cache

    def _field(self, name: str) -> Array:
        """Raw values (object) of a filterable field."""
        frame = self._events.frame
        if name in _TYPED and name in frame:
            col = frame[name]
            return col.astype(object).where(col.notna(), None).to_numpy(dtype=object)
        return np.array([p.get(name) for p in self._raw_properties()], dtype=object)

    def _numbers(self, name: str) -> Array[np.float64]:
        frame = self._events.frame
        if name in NUMERIC_PROPERTIES and name in frame:
            return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.array([np.nan if (v := number(p.get(name))) is None else v for p in self._raw_properties()])

    def _mask(self, event: str, where: Predicate | None) -> Array[np.bool_]:
        key = (event, where)
        mask = self._streams.get(key)
        if mask is None:
            types = self._events.frame["type"].to_numpy(dtype=object)
            if event == CART:
                mask = (types == ADD_TO_CART) | (types == REMOVE_FROM_CART)
            elif event == ANY:
                mask = np.ones(len(types), dtype=bool)
            else:
                mask = types == event
            if where is not None:
                mask = mask & self._where(where)
            self._streams[key] = mask
        return mask

    def _where(self, where: Predicate) -> Array[np.bool_]:
        values = self._field(where.field)
        wanted = (where.value,) if isinstance(where, Eq) else where.values
        if all(isinstance(w, str) for w in wanted):
            return np.isin(values, np.array(wanted, dtype=object))
        return np.array([v is not None and any(_same(v, w) for w in wanted) for v in values], dtype=bool)

    # -- computation ----------------------------------------------------------

    def at(self, cutoffs: pd.DataFrame) -> pd.DataFrame:
        """Features at each cutoff (columns ``profile_id`` and ``at``, a UTC
        datetime or epoch milliseconds), aligned with the cutoffs' rows."""
        for col in ("profile_id", "at"):
            if col not in cutoffs:
                raise ValueError(f"cutoffs need a {col!r} column (have {list(cutoffs.columns)})")
        at = _ms(cutoffs["at"].reset_index(drop=True))
        unknown = len(self._user_codes)
        codes = cutoffs["profile_id"].map(self._user_codes).fillna(unknown).to_numpy(dtype=np.int64)
        order = np.lexsort((at, codes))
        q = _Cutoffs(codes[order] * _SHIFT + at[order], at[order], codes[order] * _SHIFT)
        cache: dict[Spec, Array] = {}
        columns = {s.name: self._compute(s, q, cache) for s in self.features.specs}
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        out = pd.DataFrame({name: values[back] for name, values in columns.items()}, index=cutoffs.index)
        return out

    def _compute(self, spec: Spec, q: _Cutoffs, cache: dict[Spec, Array]) -> Array:
        if spec in cache:
            return cache[spec]
        value = self._compute_uncached(spec, q, cache)
        cache[spec] = value
        return value

    def _range(self, mask: Array[np.bool_], q: _Cutoffs, thr: Array[np.int64] | None) -> tuple[Array, Array, Array]:
        """Indices into the masked events: ``lo``, ``hi`` of events with
        ``thr < ts <= at`` (``thr`` None: from the user's first), and the
        masked keys."""
        keys = self._events.keys[mask]
        hi = np.searchsorted(keys, q.keys, side="right")
        if thr is None:
            lo = np.searchsorted(keys, q.start, side="left")
        else:
            lo = np.searchsorted(keys, q.start + np.maximum(thr, -1), side="right")
        return lo, hi, keys

    def _compute_uncached(self, spec: Spec, q: _Cutoffs, cache: dict[Spec, Array]) -> Array:
        if isinstance(spec, WindowCount | WindowSum | WindowMean):
            mask = self._mask(spec.event, spec.where)
            r = spec.resolution_ms
            lo, hi, _ = self._range(mask, q, (q.at - spec.within_ms) // r * r)
            if isinstance(spec, WindowCount):
                return hi - lo
            values = self._numbers(spec.prop)[mask]
            present = ~np.isnan(values)
            sums = np.concatenate(([0.0], np.cumsum(np.where(present, values, 0.0))))
            total = sums[hi] - sums[lo]
            if isinstance(spec, WindowSum):
                return total
            counts = np.concatenate(([0], np.cumsum(present)))
            n = counts[hi] - counts[lo]
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, total / np.maximum(n, 1), np.nan)
        if isinstance(spec, WindowDistinct):
            return self._distinct(spec, q)
        if isinstance(spec, Recency):
            mask = self._mask(spec.event, spec.where)
            lo, hi, _ = self._range(mask, q, None)
            ts = self._events.ts[mask]
            seen = hi > lo
            last = np.where(seen, ts[np.maximum(hi - 1, 0)] if len(ts) else 0, 0)
            return np.where(seen, (q.at - last) / 1000.0, np.nan)
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
            return self._clock(spec, q)
        raise TypeError(f"not a feature spec: {spec!r}")

    def _distinct(self, spec: WindowDistinct, q: _Cutoffs) -> Array[np.int64]:
        """Distinct values among events in each cutoff's window.

        An event i (sorted by user, time) is the latest of its value at or
        before a cutoff when the next event with that value comes at or after
        the cutoff's ``hi``; it is in the window when ``i >= lo``. As ``lo``
        and ``hi`` only grow over sorted cutoffs, the cutoffs that count event
        i form one contiguous run, added with a difference array.
        """
        mask = self._mask(spec.event, spec.where)
        raw = self._field(spec.prop)[mask]
        has = np.array([v is not None for v in raw], dtype=bool)
        keys_all = self._events.keys[mask]
        lo, hi, _ = self._range(mask, q, q.at - spec.within_ms)
        n = len(keys_all)
        # positions of events with a value, and the next event of the same (user, value)
        idx = np.flatnonzero(has)
        values = np.array([v if isinstance(v, str) else str(v) for v in raw[idx]], dtype=object)
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
        stop_hi = np.searchsorted(hi, next_same[idx], side="right")
        stop_lo = np.searchsorted(lo, idx, side="right")
        stop = np.minimum(stop_hi, stop_lo)
        ok = stop > first
        diff = np.zeros(len(hi) + 1, dtype=np.int64)
        np.add.at(diff, first[ok], 1)
        np.add.at(diff, stop[ok], -1)
        return np.minimum(np.cumsum(diff[:-1]), DISTINCT_CAP)

    def _cart_value(self, spec: CartValue, q: _Cutoffs) -> Array[np.float64]:
        r = spec.resolution_ms
        buy = self._mask(PURCHASE, None)
        blo, bhi, _ = self._range(buy, q, None)
        bts = self._events.ts[buy]
        bought = bhi > blo
        last_buy = np.where(bought, bts[np.maximum(bhi - 1, 0)] if len(bts) else 0, -1)
        thr = (q.at - duration_ms(spec.within)) // r * r
        thr = np.where(bought, np.maximum(thr, -(-last_buy // r) * r), thr)
        mask = self._mask(CART, None)
        lo, hi, _ = self._range(mask, q, thr)
        types = self._events.frame["type"].to_numpy(dtype=object)[mask]
        price = np.nan_to_num(self._numbers("price")[mask], nan=0.0)
        qty = self._numbers("quantity")[mask]
        value = price * np.where(np.isnan(qty), 1.0, qty)
        signed = np.where(types == ADD_TO_CART, value, -value)
        sums = np.concatenate(([0.0], np.cumsum(signed)))
        return np.maximum(0.0, sums[hi] - sums[lo])

    def _last_value(self, field: str, q: _Cutoffs) -> Array:
        raw = self._field(field)
        has = np.array([v is not None for v in raw], dtype=bool)
        lo, hi, _ = self._range(has, q, None)
        values = np.array([v if isinstance(v, str) else str(v) for v in raw[has]], dtype=object)
        out = np.full(len(hi), None, dtype=object)
        seen = hi > lo
        out[seen] = values[hi[seen] - 1]
        return out

    def _clock(self, spec: HourOfDay | Weekend, q: _Cutoffs) -> Array[np.float64]:
        tz = self._last_value("timezone", q)
        out = np.empty(len(q.at), dtype=np.float64)
        when = pd.to_datetime(q.at, unit="ms", utc=True)
        for name in pd.unique(tz):
            rows = tz == name if name is not None else np.array([v is None for v in tz], dtype=bool)
            local = when[rows].tz_convert(zone(name))
            if isinstance(spec, Weekend):
                out[rows] = (local.weekday >= 5).astype(np.float64)
            else:
                hour = local.hour.to_numpy() + local.minute.to_numpy() / 60.0
                trig = np.sin if spec.part == "sin" else np.cos
                out[rows] = trig(2 * np.pi * hour / 24.0)
        return out


def point_in_time(features: FeatureSet, events: pa.Table | pd.DataFrame, cutoffs: pd.DataFrame) -> pd.DataFrame:
    """Features at each cutoff: the one-call form of :class:`OfflineFeatures`."""
    return OfflineFeatures(features, events).at(cutoffs)
