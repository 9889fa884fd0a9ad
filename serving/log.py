"""The event log: every accepted event, appended before it is acknowledged.

SQLite in WAL mode, one transaction per request (group commit). Durability is
a setting, as with Redis's AOF: ``process`` writes each commit to the
operating system before answering, so an acknowledged event survives a crash
of segflow; ``power`` also fsyncs, so it survives the machine losing power.
The log keeps, by receive time, at least the retention and the longest
feature window, and everything after the older of the two latest snapshots,
so recovery and a config reload that derives a new feature can rebuild
profiles from it. Beside the events it holds the outbox (every segment
change, written in the same transaction as its cause; see
:mod:`serving.outbox`) and the records of reloads and model swaps (the config
and models in force from each point on), so a replay honours them. The schema
is versioned (``PRAGMA user_version``); an older log is migrated when opened.
Erasure deletes a user's rows and keeps only a tombstone (a keyed hash).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from features.events import Event
from features.values import plain_json
from serving import outbox
from serving.outbox import Change, Entry

Durability = Literal["process", "power"]

# PRAGMA user_version: 1 had no received_ms column, 2 no message_id, 3 reused the sequence numbers of
# erased newest rows (no AUTOINCREMENT), 4 had no outbox and no records; each is migrated on open
SCHEMA_VERSION = 5
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, whatever erasure or trimming removes
    profile_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    received_ms INTEGER,
    message_id TEXT,
    batch_end INTEGER  -- 1 on the last event of an append: events of a user at one instant are evaluated once
);
CREATE INDEX IF NOT EXISTS events_profile ON events (profile_id);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms);
CREATE TABLE IF NOT EXISTS suppressed (tombstone TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS links (  -- identity links, kept past trimming (replays remake those still logged)
    seq INTEGER NOT NULL,  -- the linking event's position
    source TEXT NOT NULL,  -- the id that joined
    target TEXT NOT NULL,  -- the profile it joined
    at_ms INTEGER NOT NULL  -- the merge instant
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,  -- in force after the event at this position
    at_ms INTEGER NOT NULL,  -- the instant it took effect, on the engine's clock
    kind TEXT NOT NULL,  -- 'rebuild' (a config or feature set: state rebuilt) or 'models' (scorers swapped)
    config_id TEXT NOT NULL,
    config TEXT NOT NULL,  -- the segment config's text
    models TEXT NOT NULL,  -- JSON: registered name -> version
    recorded_ms INTEGER NOT NULL
);
"""
    + outbox.SCHEMA
)
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
    5: "ALTER TABLE events ADD COLUMN batch_end INTEGER;",  # and the outbox and records tables
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


@dataclass(frozen=True, slots=True)
class Record:
    """A reload or a model swap, as the log keeps it: from log position
    ``seq`` on (instant ``at_ms``), this config and these models were in force."""

    id: int
    seq: int
    at_ms: int
    kind: str  # "rebuild", "swap", "models" (a swap written before swaps rescored) or "advance"
    config_id: str
    config: str
    models: dict[str, str]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventLog:
    """Append-only, durable log of accepted events."""

    def __init__(self, path: Path, durability: Durability = "process") -> None:
        if durability not in ("process", "power"):
            raise ValueError(f"durability must be 'process' or 'power', not {durability!r}")
        self.path = path
        self.durability = durability
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(path, durability)
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

    def append(
        self, events: Sequence[Event], changes: Sequence[Change] = (), links: Sequence[tuple[int, str, str, int]] = ()
    ) -> int:
        """Write events, the changes they caused and the identity links they
        made (``(index among the events, source, target, instant)``), in one
        transaction; the sequence number of the last event (0 if none ever)."""
        if events or changes:
            last = len(events) - 1
            rows = [
                (e.profile_id, e.ts_ms, encode_event(e), e.received_ms, e.message_id, int(i == last))
                for i, e in enumerate(events)
            ]
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO events (profile_id, ts_ms, body, received_ms, message_id, batch_end)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.executemany(outbox.INSERT, outbox.rows(changes, _now_ms()))
                if links:  # the events' positions run on from the one before this append
                    first = self.last_seq() - len(events) + 1
                    self._db.executemany(
                        "INSERT INTO links (seq, source, target, at_ms) VALUES (?, ?, ?, ?)",
                        [(first + i, source, target, at) for i, source, target, at in links],
                    )
        return self.last_seq()

    def add_changes(self, changes: Sequence[Change]) -> None:
        """Write time-driven changes (a key already there is kept as it is)."""
        if changes:
            with self._transaction():
                self._db.executemany(outbox.INSERT, outbox.rows(changes, _now_ms()))

    def add_record(
        self, seq: int, at_ms: int, kind: str, config_text: str, config_id: str,
        models: Mapping[str, str], changes: Sequence[Change] = (),
    ) -> Record:  # fmt: skip
        """Record a reload or a model swap, with the net changes it made, in one transaction."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO records (seq, at_ms, kind, config_id, config, models, recorded_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, at_ms, kind, config_id, config_text, orjson.dumps(dict(models)).decode(), _now_ms()),
            )
            self._db.executemany(outbox.INSERT, outbox.rows(changes, _now_ms()))
        assert cursor.lastrowid is not None
        return Record(cursor.lastrowid, seq, at_ms, kind, config_id, config_text, dict(models))

    def records(self) -> list[Record]:
        """Every reload and model swap, oldest first."""
        rows = self._db.execute("SELECT id, seq, at_ms, kind, config_id, config, models FROM records ORDER BY id")
        return [Record(i, s, a, k, c, text, orjson.loads(m)) for i, s, a, k, c, text, m in rows]

    def outbox_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of these change keys the outbox holds."""
        found: set[str] = set()
        wanted = list(keys)
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            found.update(r[0] for r in self._db.execute(f"SELECT key FROM outbox WHERE key IN ({marks})", part))
        return found

    def last_change_id(self) -> int:
        """The newest outbox entry's cursor (0: none yet)."""
        return int(self._db.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0)

    def changes_after(self, after_id: int = 0, limit: int = 1000, profile_id: str | None = None) -> list[Entry]:
        """Outbox entries after cursor ``after_id``, in order (one user's, when given)."""
        sql = f"SELECT {outbox.COLUMNS} FROM outbox WHERE id > ?"
        args: list[Any] = [after_id]
        if profile_id is not None:
            sql += " AND profile_id = ?"
            args.append(profile_id)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [Entry.of(row) for row in rows]

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

    def read(self, after_seq: int = 0, upto_seq: int | None = None) -> Iterator[Logged]:
        """Events in arrival order after ``after_seq`` (up to ``upto_seq``)."""
        sql = "SELECT seq, body, batch_end FROM events WHERE seq > ?"
        args: list[int] = [after_seq]
        if upto_seq is not None:
            sql += " AND seq <= ?"
            args.append(upto_seq)
        yield from _rows(self._db.execute(sql + " ORDER BY seq", args))

    def read_apart_all(self) -> Iterator[Logged]:
        """Every event in arrival order, as one consistent read through a
        read-only connection of its own (for a rebuild in another thread)."""
        with self._apart() as db:
            yield from _rows(db.execute("SELECT seq, body, batch_end FROM events ORDER BY seq"))

    def links_beyond(self, apart: bool = False) -> list[tuple[str, str, int]]:
        """The identity links whose event the log no longer holds (trimmed),
        oldest first: what a rebuild from the log starts from (``apart``:
        through a connection of its own, from another thread)."""
        sql = (
            "SELECT source, target, at_ms FROM links WHERE NOT EXISTS"
            " (SELECT 1 FROM events WHERE events.seq = links.seq) ORDER BY seq"
        )
        if not apart:
            return [(s, t, int(at)) for s, t, at in self._db.execute(sql)]
        with self._apart() as db:
            return [(s, t, int(at)) for s, t, at in db.execute(sql)]

    def suppressed_apart(self) -> set[str]:
        """:meth:`suppressed` through a read-only connection of its own (from another thread)."""
        with self._apart() as db:
            return {r[0] for r in db.execute("SELECT tombstone FROM suppressed")}

    def read_apart(self) -> list[Event]:
        """Every logged event in arrival order, through a connection of its own
        (safe from another thread while this log keeps appending)."""
        return [event for _, event, _ in self.read_apart_all()]

    @contextlib.contextmanager
    def _apart(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own, closed after."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            yield db
        finally:
            db.close()

    def recent(self, profile_id: str | Sequence[str], limit: int = 1000) -> list[Event]:
        """A user's latest logged events, newest first (evidence for reasons):
        under one id, or under each of several (a profile's linked ids)."""
        ids = [profile_id] if isinstance(profile_id, str) else list(profile_id)
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT body FROM events WHERE profile_id IN ({marks}) ORDER BY seq DESC LIMIT ?", (*ids, limit)
        )
        events = [decode_event(body) for (body,) in rows]
        events.sort(key=lambda e: -e.ts_ms)
        return events

    def count(self, profile_id: str | None = None) -> int:
        if profile_id is None:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM events WHERE profile_id = ?", (profile_id,)).fetchone()[0])

    def trim(self, received_before_ms: int, up_to_seq: int, changes_needed_from: int | None = None) -> int:
        """Drop events received before ``received_before_ms`` (retention, by
        the server's clock, never by event time) among those up to sequence
        ``up_to_seq`` (what a durable snapshot covers), and the changes
        recorded before it that no destination still needs (those before
        outbox id ``changes_needed_from``); how many events went."""
        with self._transaction():
            keep = changes_needed_from if changes_needed_from is not None else 1 << 62
            self._db.execute("DELETE FROM outbox WHERE recorded_ms < ? AND id < ?", (received_before_ms, keep))
            return self._db.execute(
                "DELETE FROM events WHERE received_ms < ? AND seq <= ?", (received_before_ms, up_to_seq)
            ).rowcount

    def erase(self, profile_id: str, tombstone: str) -> int:
        """Delete every event of a user and keep the user's tombstone (a keyed
        hash, not the id) so later events can be recognized and dropped."""
        with self._transaction():
            n = self._db.execute("DELETE FROM events WHERE profile_id = ?", (profile_id,)).rowcount
            n += self._db.execute("DELETE FROM outbox WHERE profile_id = ?", (profile_id,)).rowcount
            self._db.execute("DELETE FROM links WHERE source = ? OR target = ?", (profile_id, profile_id))
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

    def _transaction(self) -> Transaction:
        return Transaction(self._db)

    def close(self) -> None:
        self._db.close()


Logged = tuple[int, Event, bool | None]  # position, event, whether its append ended there (None: not known)


def _rows(cursor: sqlite3.Cursor) -> Iterator[Logged]:
    while rows := cursor.fetchmany(5000):
        for seq, body, end in rows:
            yield int(seq), decode_event(body), None if end is None else bool(end)


def connect(path: Path, durability: str) -> sqlite3.Connection:
    """A connection to one of the state's SQLite files, as every writer opens it:
    autocommit (transactions are explicit), usable from the worker threads."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # WAL commits reach the OS on every commit (NORMAL: a crash of segflow loses
    # nothing, and power loss cannot corrupt the file); FULL adds the fsync
    db.execute(f"PRAGMA synchronous={'FULL' if durability == 'power' else 'NORMAL'}")
    db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten, not left in free pages
    return db


def checkpoint(db: sqlite3.Connection) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` with a short wait; whether it completed."""
    db.execute("PRAGMA busy_timeout = 100")
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.execute("PRAGMA busy_timeout = 5000")
    return busy == 0


class Transaction:
    """``with Transaction(db):`` one immediate transaction, rolled back on an error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
