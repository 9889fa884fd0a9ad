"""The event log: every accepted event, appended before it is acknowledged.

SQLite in WAL mode, one transaction per request (group commit). Durability is
a setting, as with Redis's AOF: ``process`` writes each commit to the
operating system before answering, so an acknowledged event survives a crash
of segflow; ``power`` also fsyncs, so it survives the machine losing power.
The log keeps, by receive time, at least the retention and the longest
feature window, and everything after the older of the two latest snapshots,
so recovery and a config reload that derives a new feature can rebuild
profiles from it. The schema is versioned (``PRAGMA user_version``); an
older log is migrated when opened. Erasure
deletes a user's rows and keeps only a tombstone (a keyed hash).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from features.events import Event
from features.values import plain_json

Durability = Literal["process", "power"]

# PRAGMA user_version: 1 had no received_ms column, 2 no message_id, 3 reused the sequence numbers of
# erased newest rows (no AUTOINCREMENT); each is migrated on open
SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, whatever erasure or trimming removes
    profile_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    received_ms INTEGER,
    message_id TEXT
);
CREATE INDEX IF NOT EXISTS events_profile ON events (profile_id);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms);
CREATE TABLE IF NOT EXISTS suppressed (tombstone TEXT PRIMARY KEY);
"""
# each step takes the schema from the version before it to its own
_MIGRATIONS = {
    2: """
ALTER TABLE events ADD COLUMN received_ms INTEGER;
UPDATE events SET received_ms = json_extract(CAST(body AS TEXT), '$[5]');
""",
    3: """
ALTER TABLE events ADD COLUMN message_id TEXT;
UPDATE events SET message_id = json_extract(CAST(body AS TEXT), '$[0]');
""",
    4: """
CREATE TABLE events_v4 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    received_ms INTEGER,
    message_id TEXT
);
INSERT INTO events_v4 (seq, profile_id, ts_ms, body, received_ms, message_id)
    SELECT seq, profile_id, ts_ms, body, received_ms, message_id FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX IF NOT EXISTS events_profile ON events (profile_id);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms);
""",
}
_AFTER = """
CREATE INDEX IF NOT EXISTS events_received ON events (received_ms);
CREATE INDEX IF NOT EXISTS events_message ON events (message_id);
"""


def encode_event(event: Event) -> bytes:
    """An event as compact JSON; :func:`decode_event` gives it back exactly.
    A value JSON cannot hold (the edge refuses them; a bug might not) is
    neutralized (:func:`~features.values.plain_json`), never a failed write."""
    try:
        return _encode(event, event.properties, event.traits)
    except (orjson.JSONEncodeError, TypeError):
        return _encode(event, plain_json(event.properties), plain_json(event.traits))


def _encode(event: Event, properties: Mapping[str, Any], traits: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        [
            event.message_id,
            event.type,
            event.user_id,
            event.anonymous_id,
            event.ts_ms,
            event.received_ms,
            event.kind,
            event.name,
            dict(properties),
            dict(traits),
            event.device,
            event.country,
            event.city,
            event.timezone,
        ]
    )


def decode_event(body: bytes) -> Event:
    return Event(*orjson.loads(body))


class EventLog:
    """Append-only, durable log of accepted events."""

    def __init__(self, path: Path, durability: Durability = "process") -> None:
        if durability not in ("process", "power"):
            raise ValueError(f"durability must be 'process' or 'power', not {durability!r}")
        self.path = path
        self.durability = durability
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL commits reach the OS on every commit (NORMAL: a crash of segflow loses
        # nothing, and power loss cannot corrupt the file); FULL adds the fsync
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'power' else 'NORMAL'}")
        self._db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten, not left in free pages
        self._migrate()

    def _migrate(self) -> None:
        """Create the schema, or bring an older log up to this version (in one transaction)."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone() is not None
        if version > SCHEMA_VERSION:
            raise ValueError(f"{self.path}: event log schema {version} is newer than this segflow's ({SCHEMA_VERSION})")
        if not exists:
            self._db.executescript(_SCHEMA + _AFTER + f"PRAGMA user_version = {SCHEMA_VERSION};")
            return
        version = max(version, 1)
        if version < SCHEMA_VERSION:
            steps = "".join(_MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
            self._db.executescript(f"BEGIN IMMEDIATE; {steps} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        self._db.executescript(_SCHEMA + _AFTER)

    def append(self, events: Sequence[Event]) -> int:
        """Write events in one transaction; the sequence number of the last (0 if none ever)."""
        if events:
            rows = [(e.profile_id, e.ts_ms, encode_event(e), e.received_ms, e.message_id) for e in events]
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO events (profile_id, ts_ms, body, received_ms, message_id) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        return self.last_seq()

    def seen(self, message_ids: Sequence[str], received_since_ms: int) -> set[str]:
        """Which of these message ids the log holds, received at or after
        ``received_since_ms`` (the dedup window, persisted with the events)."""
        found: set[str] = set()
        for i in range(0, len(message_ids), 500):
            part = message_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT message_id FROM events WHERE message_id IN ({marks}) AND received_ms >= ?",
                (*part, received_since_ms),
            )
            found.update(r[0] for r in rows)
        return found

    def last_seq(self) -> int:
        row = self._db.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def read(self, after_seq: int = 0, since_ms: int | None = None) -> Iterator[tuple[int, Event]]:
        """Events in arrival order after ``after_seq`` (and at or after ``since_ms``)."""
        sql = "SELECT seq, body FROM events WHERE seq > ?"
        args: list[int] = [after_seq]
        if since_ms is not None:
            sql += " AND ts_ms >= ?"
            args.append(since_ms)
        cursor = self._db.execute(sql + " ORDER BY seq", args)
        while rows := cursor.fetchmany(5000):
            for seq, body in rows:
                yield int(seq), decode_event(body)

    def read_apart_all(self) -> Iterator[tuple[int, Event]]:
        """Every event in arrival order, as one consistent read through a
        read-only connection of its own (for a rebuild in another thread)."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            cursor = db.execute("SELECT seq, body FROM events ORDER BY seq")
            while rows := cursor.fetchmany(5000):
                for seq, body in rows:
                    yield int(seq), decode_event(body)
        finally:
            db.close()

    def read_apart(self) -> list[Event]:
        """Every logged event in arrival order, through a connection of its own
        (safe from another thread while this log keeps appending)."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return [decode_event(body) for (body,) in db.execute("SELECT body FROM events ORDER BY seq")]
        finally:
            db.close()

    def recent(self, profile_id: str, limit: int = 1000) -> list[Event]:
        """A user's latest logged events, newest first (evidence for reasons)."""
        rows = self._db.execute(
            "SELECT body FROM events WHERE profile_id = ? ORDER BY seq DESC LIMIT ?", (profile_id, limit)
        )
        events = [decode_event(body) for (body,) in rows]
        events.sort(key=lambda e: -e.ts_ms)
        return events

    def count(self, profile_id: str | None = None) -> int:
        if profile_id is None:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM events WHERE profile_id = ?", (profile_id,)).fetchone()[0])

    def trim(self, received_before_ms: int, up_to_seq: int) -> int:
        """Drop events received before ``received_before_ms`` (retention, by
        the server's clock, never by event time) among those up to sequence
        ``up_to_seq`` (what a durable snapshot covers); how many went."""
        with self._transaction():
            return self._db.execute(
                "DELETE FROM events WHERE received_ms < ? AND seq <= ?", (received_before_ms, up_to_seq)
            ).rowcount

    def erase(self, profile_id: str, tombstone: str) -> int:
        """Delete every event of a user and keep the user's tombstone (a keyed
        hash, not the id) so later events can be recognized and dropped."""
        with self._transaction():
            n = self._db.execute("DELETE FROM events WHERE profile_id = ?", (profile_id,)).rowcount
            self._db.execute("INSERT OR IGNORE INTO suppressed (tombstone) VALUES (?)", (tombstone,))
        return n

    def checkpoint(self) -> bool:
        """Empty the WAL into the database (after an erasure: the WAL held the
        rows as written); False while a reader holds it (a rebuild, a backup):
        try again later. Waits at most a tenth of a second."""
        return checkpoint(self._db)

    def suppressed(self) -> set[str]:
        """The tombstones of erased users."""
        return {r[0] for r in self._db.execute("SELECT tombstone FROM suppressed")}

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()


def checkpoint(db: sqlite3.Connection) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` with a short wait; whether it completed."""
    db.execute("PRAGMA busy_timeout = 100")
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.execute("PRAGMA busy_timeout = 5000")
    return busy == 0


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
