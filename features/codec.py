"""The one codec of a profile's online state: versioned and compact.

Streams and trackers are stored under a short hash of their definition, not
their position, so a profile decodes into a feature set that has gained or
lost specs: what it shares comes back, what is new starts empty (and can be
backfilled from the event log). Bucket keys are delta-coded, the whole is
orjson then zlib.

>>> from datetime import timedelta
>>> from features.events import Event
>>> from features.online import FeatureSet
>>> from features.specs import WindowCount, LastValue
>>> fs = FeatureSet([WindowCount("purchase", timedelta(days=7)), LastValue("country")])
>>> p = fs.new_profile()
>>> fs.update(p, Event("m", "purchase", "u", None, 1_700_000_000_000, 0, country="DE"))
True
>>> decode(encode(fs, p), fs) == p
True
"""

from __future__ import annotations

import hashlib
import math
import zlib
from itertools import pairwise
from typing import Any

import orjson

from features.online import FeatureSet, Profile

VERSION = 1
_EXACT = 2.0**53  # floats that are whole below this are exact as ints


def _tag(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=4).hexdigest()


def encode(features: FeatureSet, profile: Profile) -> bytes:
    """A profile as compact bytes (for a store such as Redis)."""
    return bytes([VERSION]) + zlib.compress(body(features, profile), 6)


def body(features: FeatureSet, profile: Profile) -> bytes:
    """A profile as JSON, uncompressed (what :func:`encode` compresses; a
    snapshot embeds it as it is): :func:`from_body` reads it back parsed."""
    streams = {}
    for stream, buckets in zip(features.streams, profile.buckets, strict=True):
        if buckets:
            keys = buckets.keys
            deltas = [keys[0]] + [b - a for a, b in pairwise(keys)]
            streams[_tag(stream.key)] = [deltas, [_compact(row) for row in buckets.cum]]
    distinct = {}
    recency = {}
    di = ri = 0
    for tracker in features.trackers:
        if tracker.prop is not None:
            if profile.distinct[di]:
                distinct[_tag(tracker.key)] = profile.distinct[di]
            di += 1
        else:
            if profile.last_ts[ri] >= 0:
                recency[_tag(tracker.key)] = profile.last_ts[ri]
            ri += 1
    fields = {f: v for f, v in zip(features.fields, profile.last_values, strict=True) if v is not None}
    return orjson.dumps([profile.newest, profile.late, streams, distinct, recency, fields])


def _compact(agg: list[float]) -> list[float | int]:
    """Whole numbers as ints (shorter); a value that is not finite, which the
    features never produce, is neutralized to 0 rather than breaking the encoding."""
    return [(int(v) if -_EXACT < v < _EXACT and v == int(v) else v) if math.isfinite(v) else 0 for v in agg]


def decode(data: bytes, features: FeatureSet) -> Profile:
    """A profile back from :func:`encode`'s bytes."""
    if not data or data[0] != VERSION:
        got = data[0] if data else "nothing"
        raise ValueError(f"profile codec version {got} is not supported (expected {VERSION})")
    return from_body(orjson.loads(zlib.decompress(data[1:])), features)


def from_body(parsed: list[Any], features: FeatureSet) -> Profile:
    """A profile from a body already parsed (as a snapshot embeds it)."""
    newest, late, streams, distinct, recency, fields = parsed
    profile = features.new_profile()
    profile.newest, profile.late = newest, late
    for i, stream in enumerate(features.streams):
        stored = streams.get(_tag(stream.key))
        if stored:
            deltas, aggs = stored
            key = 0
            target = profile.buckets[i]
            for d, row in zip(deltas, aggs, strict=True):
                key += d
                target.keys.append(key)
                target.cum.append([float(v) for v in row])
    di = ri = 0
    for tracker in features.trackers:
        tag = _tag(tracker.key)
        if tracker.prop is not None:
            profile.distinct[di] = dict(distinct.get(tag, {}))
            di += 1
        else:
            profile.last_ts[ri] = recency.get(tag, -1)
            ri += 1
    for j, name in enumerate(features.fields):
        value = fields.get(name)
        profile.last_values[j] = None if value is None else (value[0], value[1])
    return profile
