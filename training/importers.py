"""Importers: real event data into the event table.

- ``taobao``: the Taobao UserBehavior CSV (``user_id, item_id, category_id,
  behavior_type, timestamp``; pv/cart/fav/buy);
- ``segment-jsonl``: Segment Spec payloads (or batch envelopes), one a line;
- ``table``: any CSV or Parquet with a column mapping in a small YAML file
  (``config/mappings/`` ships REES46 and RetailRocket).

Every row is accounted for: imported, or reported with its line and reason.
Sessions, where a source has none, are cut at a 30-minute inactivity gap.
Message ids, where a source has none, are derived from the row's content, with
the occurrence number appended to exact repeats, so importing the same file
twice gives the same ids (and an event present in two files is one event).
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import yaml

from features.events import ADD_TO_CART, CANONICAL_TYPES, PRODUCT_VIEW, PURCHASE, WISHLIST_ADD, datetime_to_ms
from features.limits import EventError
from features.pseudonyms import redact
from features.segment_spec import SegmentParser
from features.table import COLUMNS, events_to_table, table_from_columns

SESSION_GAP_MS = 30 * 60_000
TAOBAO_TYPES = {"pv": PRODUCT_VIEW, "cart": ADD_TO_CART, "fav": WISHLIST_ADD, "buy": PURCHASE}
MAX_ERRORS_KEPT = 10_000


@dataclass(slots=True)
class ImportReport:
    """What an import read, kept and refused (with line numbers and reasons)."""

    rows: int = 0
    imported: int = 0
    errors: list[tuple[str, int, str]] = field(default_factory=list)
    rejected: int = 0
    by_type: Counter[str] = field(default_factory=Counter)

    def reject(self, source: str, line: int, reason: str) -> None:
        """Count a rejected row and keep its reason (the first ones, for the report)."""
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append((source, line, redact(reason)))

    @property
    def accounted(self) -> bool:
        """Whether every row read was imported or rejected."""
        return self.imported + self.rejected == self.rows


def sessionize(profiles: np.ndarray, ts_ms: np.ndarray, gap_ms: int = SESSION_GAP_MS) -> np.ndarray:
    """Session ids cut at an inactivity gap, per profile (``profile-start``).

    >>> sessionize(np.array(["a", "a", "a", "b"]), np.array([0, 60_000, 4_000_000, 0])).tolist()
    ['a-0', 'a-0', 'a-4000000', 'b-0']
    """
    order = np.lexsort((ts_ms, profiles))
    p = profiles[order]
    t = ts_ms[order]
    new = np.ones(len(p), dtype=bool)
    if len(p) > 1:
        new[1:] = (p[1:] != p[:-1]) | (t[1:] - t[:-1] > gap_ms)
    start_idx = np.maximum.accumulate(np.where(new, np.arange(len(p)), 0))
    ids = np.empty(len(p), dtype=object)
    ids[order] = [f"{a}-{b}" for a, b in zip(p[start_idx], t[start_idx], strict=True)]
    return ids


def unique_ids(keys: pd.Series) -> pd.Series:
    """Content keys made unique by appending the occurrence number to repeats.

    >>> unique_ids(pd.Series(["x", "y", "x"])).tolist()
    ['x', 'y', 'x~1']
    """
    occurrence = keys.groupby(keys, sort=False).cumcount()
    return keys.where(occurrence == 0, keys + "~" + occurrence.astype(str))


def _with_sessions_and_properties(frame: pd.DataFrame) -> pa.Table:
    if "session_id" not in frame or frame["session_id"].isna().all():
        frame["session_id"] = sessionize(frame["user_id"].to_numpy(dtype=object), frame["ts"].to_numpy(dtype=np.int64))
    prop_cols = [
        c for c in ("product_id", "category", "price", "quantity", "revenue", "url", "session_id") if c in frame
    ]
    records = frame[prop_cols].to_dict("records")
    frame["properties"] = [
        orjson.dumps({k: v for k, v in r.items() if v is not None and v == v}).decode() for r in records
    ]
    columns = {
        c: frame[c].to_numpy(dtype=object if frame[c].dtype == object else None) for c in frame.columns if c in COLUMNS
    }
    return table_from_columns(columns)


def import_taobao(paths: Iterable[str | Path], report: ImportReport | None = None) -> tuple[pa.Table, ImportReport]:
    """Taobao UserBehavior CSV files as an event table (no prices, no sessions
    in the source: sessions are cut at 30 minutes of inactivity)."""
    report = report or ImportReport()
    rows: list[tuple[str, str, str, str, int]] = []
    for path in paths:
        source = str(path)
        with open(path, newline="", encoding="utf-8") as f:
            for line, rec in enumerate(csv.reader(f), start=1):
                report.rows += 1
                if len(rec) != 5:
                    report.reject(source, line, f"expected 5 columns, found {len(rec)}")
                    continue
                user, item, category, behavior, stamp = (v.strip() for v in rec)
                etype = TAOBAO_TYPES.get(behavior)
                if etype is None:
                    report.reject(source, line, f"unknown behavior_type {behavior!r} (expected pv, cart, fav or buy)")
                    continue
                if not user or not item:
                    report.reject(source, line, "empty user_id or item_id")
                    continue
                try:
                    seconds = int(stamp)
                except ValueError:
                    report.reject(source, line, f"timestamp {stamp!r} is not whole Unix seconds")
                    continue
                if seconds < 0:
                    report.reject(source, line, f"timestamp {seconds} is before 1970")
                    continue
                rows.append((user, item, category or None, etype, seconds * 1000))  # type: ignore[arg-type]
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "category", "type", "ts"])
    keys = "tb-" + frame["user_id"] + "-" + frame["product_id"] + "-" + frame["type"] + "-" + frame["ts"].astype(str)
    frame["message_id"] = unique_ids(keys)
    frame["kind"] = "track"
    table = _with_sessions_and_properties(frame)
    report.imported += table.num_rows
    report.by_type.update(frame["type"].tolist())
    return table, report


def import_segment_jsonl(
    paths: Iterable[str | Path], parser: SegmentParser, report: ImportReport | None = None
) -> tuple[pa.Table, ImportReport]:
    """Segment Spec payloads, one JSON object (event or batch) a line. The
    receive time is ``receivedAt``, else ``sentAt``, else ``timestamp``."""
    report = report or ImportReport()
    events = []
    for path in paths:
        source = str(path)
        with open(path, "rb") as f:
            for line, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    payload = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    report.rows += 1
                    report.reject(source, line, f"invalid JSON: {exc}")
                    continue
                items = payload.get("batch") if isinstance(payload, dict) and "batch" in payload else [payload]
                if not isinstance(items, list):
                    report.rows += 1
                    report.reject(source, line, "batch: expected a list of events")
                    continue
                for i, item in enumerate(items):
                    report.rows += 1
                    where = f"batch[{i}]." if len(items) > 1 or item is not payload else ""
                    try:
                        received = _received_ms(item, payload)
                        events.append(parser.event(item, received_ms=received, where=where))
                    except EventError as exc:
                        report.reject(source, line, str(exc))
    table = events_to_table(events)
    report.imported += table.num_rows
    report.by_type.update(e.type for e in events)
    return table, report


def _received_ms(item: object, envelope: object) -> int:
    for source in (item, envelope):
        if isinstance(source, dict):
            for key in ("receivedAt", "sentAt", "timestamp"):
                value = source.get(key)
                if value is not None:
                    try:
                        return datetime_to_ms(pd.Timestamp(value).to_pydatetime())
                    except (ValueError, TypeError):
                        raise EventError([(key, f"malformed timestamp {str(value)[:64]!r}")]) from None
    raise EventError([("receivedAt", "no receivedAt, sentAt or timestamp to date the event by")])


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """How a CSV or Parquet file's columns map onto the event table.

    ``columns`` maps event-table fields (``user_id``, ``ts``, ``type``,
    ``product_id``, ``category``, ``price``, ...) to source column names;
    ``time`` says how ``ts`` is written (``unit: s|ms|iso`` or a strptime
    ``format``); ``types`` maps source event values to canonical types (other
    values are kept as custom events).
    """

    name: str
    columns: dict[str, str]
    time_unit: str = "iso"
    time_format: str | None = None
    types: dict[str, str] = field(default_factory=dict)
    format: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> ColumnMapping:
        """A column mapping from its YAML file (see ``config/mappings/``)."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping with 'columns', 'time' and 'types'")
        columns = raw.get("columns")
        if not isinstance(columns, dict):
            raise ValueError(f"{path}: 'columns' must map event fields to source columns")
        allowed = set(COLUMNS) - {"profile_id", "properties", "traits", "received_at"}
        for target in columns:
            if target not in allowed:
                raise ValueError(f"{path}: columns.{target}: not an event field (expected one of {sorted(allowed)})")
        for needed in ("user_id", "ts"):
            if needed not in columns:
                raise ValueError(f"{path}: columns.{needed} is required")
        if "type" not in columns:
            raise ValueError(f"{path}: columns.type is required (the column holding the event name)")
        time = raw.get("time") or {}
        unit = time.get("unit", "iso")
        if unit not in ("s", "ms", "iso"):
            raise ValueError(f"{path}: time.unit: {unit!r} (expected s, ms or iso)")
        types = {str(k): str(v) for k, v in (raw.get("types") or {}).items()}
        for src, dst in types.items():
            if dst not in CANONICAL_TYPES:
                raise ValueError(f"{path}: types.{src}: {dst!r} is not a canonical type ({sorted(CANONICAL_TYPES)})")
        return cls(
            str(raw.get("name") or path.stem),
            {str(k): str(v) for k, v in columns.items()},
            unit,
            time.get("format"),
            types,
            raw.get("format"),
        )


def import_table(
    paths: Iterable[str | Path], mapping: ColumnMapping, report: ImportReport | None = None
) -> tuple[pa.Table, ImportReport]:
    """Any CSV or Parquet file through a column mapping."""
    report = report or ImportReport()
    frames = []
    for path in paths:
        path = Path(path)
        fmt = mapping.format or ("parquet" if path.suffix in (".parquet", ".pq") else "csv")
        src = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in mapping.columns.values() if c not in src.columns]
        if missing:
            raise ValueError(f"{path}: mapping {mapping.name!r} names columns not in the file: {missing}")
        report.rows += len(src)
        frame = pd.DataFrame({dst: src[col] for dst, col in mapping.columns.items()})
        frame["line"] = np.arange(len(src)) + (2 if fmt == "csv" else 1)
        frame = _clean(frame, mapping, str(path), report)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user_id", "ts", "type"])
    if "message_id" not in frame or frame["message_id"].isna().any():
        content = frame[[c for c in frame.columns if c not in ("line", "message_id")]].astype(str).agg("|".join, axis=1)
        derived = mapping.name + "-" + content.map(lambda s: hashlib.blake2b(s.encode(), digest_size=12).hexdigest())
        frame["message_id"] = unique_ids(derived) if "message_id" not in frame else frame["message_id"].fillna(derived)
    frame = frame.drop(columns=["line"])
    frame["kind"] = "track"
    table = _with_sessions_and_properties(frame)
    report.imported += table.num_rows
    report.by_type.update(frame["type"].tolist())
    return table, report


def _clean(frame: pd.DataFrame, mapping: ColumnMapping, source: str, report: ImportReport) -> pd.DataFrame:
    def drop(mask: pd.Series, reason: Any) -> None:
        nonlocal frame
        mask = mask.reindex(frame.index, fill_value=False).astype(bool)
        for line, value in zip(frame.loc[mask, "line"], frame.loc[mask].index, strict=True):
            report.reject(source, int(line), reason(value) if callable(reason) else reason)
        frame = frame.loc[~mask]

    user = frame["user_id"].astype(str).str.strip()
    drop(user.isin(["", "nan", "None"]), "empty user id")
    raw_ts = frame["ts"]
    if mapping.time_unit == "iso":
        ts = pd.to_datetime(raw_ts, format=mapping.time_format, utc=True, errors="coerce")
        ts_ms = ts.astype("int64") // 1_000_000
    else:
        num = pd.to_numeric(raw_ts, errors="coerce")
        ts = num
        ts_ms = num * (1000 if mapping.time_unit == "s" else 1)
    bad = ts.isna()
    drop(
        bad,
        lambda i: f"timestamp {str(raw_ts.loc[i])[:40]!r} does not parse as {mapping.time_format or mapping.time_unit}",
    )
    frame = frame.assign(ts=ts_ms.loc[frame.index].astype("int64"), user_id=user.loc[frame.index])
    for col in ("price", "quantity", "revenue", "time_on_page_s", "scroll_depth"):
        if col in frame:
            raw = frame[col].replace("", None)
            num = pd.to_numeric(raw, errors="coerce")
            drop(
                num.isna() & raw.notna(), lambda i, col=col, raw=raw: f"{col} {str(raw.loc[i])[:40]!r} is not a number"
            )
            frame = frame.assign(**{col: num.loc[frame.index]})
    etype = frame["type"].astype(str).str.strip()
    frame = frame.assign(type=etype.map(lambda v: mapping.types.get(v, v)))
    drop(frame["type"] == "", "empty event type")
    for col in ("product_id", "category", "url", "campaign_id", "session_id", "device", "country", "city"):
        if col in frame:
            frame[col] = frame[col].astype(str).replace({"": None, "nan": None})
    return frame
