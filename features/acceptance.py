"""Which events of a table online ingestion would apply, decided as it
decides them in arrival order: a duplicate ``messageId`` within the dedup
window is dropped, and an event older than its profile's newest by more than
the lateness is late (stored, not applied to live windows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray as Array

from features.specs import DAY_MS

DEDUP_MS = DAY_MS


def column_ms(column: pa.ChunkedArray) -> Array[np.int64]:
    """A time column as milliseconds since the epoch."""
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()


def string_codes(column: pa.ChunkedArray) -> tuple[Array[np.int64], list[str]]:
    """Integer codes of a string column, in order of first appearance, and the values."""
    encoded = column.dictionary_encode().combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def accepted(
    events: pa.Table | pd.DataFrame, lateness_ms: int, dedup_ms: int = DEDUP_MS
) -> tuple[Array[np.bool_], Array[np.bool_]]:
    """``(duplicate, late)`` masks over events in arrival order, as online
    ingestion decides them."""
    duplicate, late, _ = accepted_with_users(events, lateness_ms, dedup_ms)
    return duplicate, late


def accepted_with_users(
    events: pa.Table | pd.DataFrame, lateness_ms: int, dedup_ms: int = DEDUP_MS
) -> tuple[Array[np.bool_], Array[np.bool_], tuple[Array[np.int64], list[str]]]:
    """As :func:`accepted`, with each event's user code and the users' ids (the codes' values)."""
    table = events if isinstance(events, pa.Table) else pa.Table.from_pandas(events, preserve_index=False)
    n = table.num_rows
    ids = table.column("message_id")
    received = column_ms(table.column("received_at"))
    duplicate = np.zeros(n, dtype=bool)
    id_codes, _ = string_codes(ids)
    counts = np.bincount(id_codes, minlength=1)
    repeated = np.flatnonzero(counts[id_codes] > 1)
    first_seen: dict[int, int] = {}
    for i in repeated.tolist():  # only rows whose id occurs more than once
        code = int(id_codes[i])
        seen = first_seen.get(code)
        if seen is not None and received[i] - seen < dedup_ms:
            duplicate[i] = True
        else:
            first_seen[code] = int(received[i])
    ts = column_ms(table.column("ts")).astype(np.float64)
    ts[duplicate] = -np.inf  # a dropped duplicate moves no one's newest time
    users, names = string_codes(table.column("profile_id"))
    prev_max = pd.Series(ts).groupby(users).cummax().groupby(users).shift().to_numpy()
    with np.errstate(invalid="ignore"):
        late = (ts < prev_max - lateness_ms) & ~duplicate
    return duplicate, late, (users, names)
