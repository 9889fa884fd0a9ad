"""The event table: one columnar (Parquet) format that all of training reads.

One row per canonical event. The properties that features use get typed
columns of their own, so offline computation is vectorized; the full
``properties`` and ``traits`` are kept beside them as JSON text so an event
read back from the table is the event that was written.

>>> from features.events import Event
>>> e = Event("m1", "add_to_cart", "u1", None, 1_700_000_000_000, 1_700_000_000_000,
...     name="Product Added", properties={"category": "shoes", "price": 30.0})
>>> table = events_to_table([e])
>>> table.num_rows, table.column("category").to_pylist(), list(table_to_events(table)) == [e]
(1, ['shoes'], True)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.events import NUMERIC_PROPERTIES, STRING_PROPERTIES, Event
from features.values import number

TIME = pa.timestamp("ms", tz="UTC")
SESSION = "session_id"

SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("type", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("profile_id", pa.string()),
        ("ts", TIME),
        ("received_at", TIME),
        ("kind", pa.string()),
        ("name", pa.string()),
        (SESSION, pa.string()),
        *[(p, pa.string()) for p in STRING_PROPERTIES],
        *[(p, pa.float64()) for p in NUMERIC_PROPERTIES],
        ("device", pa.string()),
        ("country", pa.string()),
        ("city", pa.string()),
        ("timezone", pa.string()),
        ("properties", pa.string()),
        ("traits", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
_REQUIRED = ("message_id", "type", "profile_id", "ts")


def _json(value: Mapping[str, Any]) -> str | None:
    return orjson.dumps(value).decode() if value else None


def events_to_table(events: Iterable[Event]) -> pa.Table:
    """Canonical events as an event table."""
    cols: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for e in events:
        props = e.properties
        cols["message_id"].append(e.message_id)
        cols["type"].append(e.type)
        cols["user_id"].append(e.user_id)
        cols["anonymous_id"].append(e.anonymous_id)
        cols["profile_id"].append(e.profile_id)
        cols["ts"].append(e.ts_ms)
        cols["received_at"].append(e.received_ms)
        cols["kind"].append(e.kind)
        cols["name"].append(e.name)
        sid = props.get(SESSION)
        cols[SESSION].append(None if sid is None else str(sid))
        for p in STRING_PROPERTIES:
            cols[p].append(props.get(p))
        for p in NUMERIC_PROPERTIES:
            cols[p].append(number(props.get(p)))
        cols["device"].append(e.device)
        cols["country"].append(e.country)
        cols["city"].append(e.city)
        cols["timezone"].append(e.timezone)
        cols["properties"].append(_json(props))
        cols["traits"].append(_json(e.traits))
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def table_from_columns(columns: Mapping[str, Any]) -> pa.Table:
    """An event table from whatever columns a generator or importer has;
    missing optional columns are null, ``profile_id`` defaults to
    ``user_id`` then ``anonymous_id``, ``received_at`` to ``ts``."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown event table columns {sorted(unknown)} (expected some of {list(COLUMNS)})")
    n = len(next(iter(columns.values())))
    arrays: dict[str, pa.Array] = {}
    for f in SCHEMA:
        value = columns.get(f.name)
        if value is None:
            arrays[f.name] = pa.nulls(n, type=f.type)
        else:
            arrays[f.name] = (
                pa.array(value, type=f.type)
                if not isinstance(value, pa.Array | pa.ChunkedArray)
                else value.cast(f.type)
            )
    if "profile_id" not in columns:
        arrays["profile_id"] = pc.coalesce(arrays["user_id"], arrays["anonymous_id"])
    if "received_at" not in columns:
        arrays["received_at"] = arrays["ts"]
    table = pa.table(arrays, schema=SCHEMA)
    check_table(table)
    return table


def check_table(table: pa.Table) -> None:
    """Refuse a table that is not an event table, naming the column."""
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"not an event table: missing columns {missing}")
    for name in _REQUIRED:
        nulls = table.column(name).null_count
        if nulls:
            raise ValueError(f"event table column {name!r} has {nulls} empty values; every event needs one")


def table_to_events(table: pa.Table) -> Iterator[Event]:
    """The events of a table, in table order."""
    data = {name: table.column(name).to_pylist() for name in COLUMNS if name not in ("ts", "received_at")}
    ts = pc.cast(table.column("ts"), pa.int64()).to_pylist()
    received = pc.cast(table.column("received_at"), pa.int64()).to_pylist()
    loads = orjson.loads
    for i in range(table.num_rows):
        props = data["properties"][i]
        traits = data["traits"][i]
        yield Event(
            data["message_id"][i],
            data["type"][i],
            data["user_id"][i],
            data["anonymous_id"][i],
            ts[i],
            received[i],
            data["kind"][i] or "track",
            data["name"][i],
            loads(props) if props else {},
            loads(traits) if traits else {},
            data["device"][i],
            data["country"][i],
            data["city"][i],
            data["timezone"][i],
        )


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write an event table as Parquet, cast to the schema."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.cast(SCHEMA), path, compression="zstd")
    return path


def read_table(path: str | Path) -> pa.Table:
    """An event table from Parquet, checked."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such event table")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: not a Parquet event table ({str(exc).splitlines()[0]})") from None
    check_table(table)
    return table.select(list(COLUMNS)).cast(SCHEMA)


def read_frame(path: str | Path) -> pd.DataFrame:
    """An event table as a pandas frame (times as UTC datetimes)."""
    return read_table(path).to_pandas()
