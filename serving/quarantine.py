"""The quarantine: events refused at the edge, kept (scrubbed) to inspect and replay.

A refused event is never silently dropped: its payload, with personal data
pseudonymized and nesting cut at the limit, is kept with its problems, its
receive time and the profile it names, in SQLite beside the event log
(``quarantine.db``). ``segflow quarantine list|show|replay`` and the admin
routes read it; a replay parses the payload again (as received then) and, if
it now passes, ingests it and removes it from here. The oldest entries go
first beyond ``quarantine_max``; erasure removes a user's entries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from features.values import plain_json
from serving.log import Durability, checkpoint, connect

log = logging.getLogger("segflow.quarantine")
Refused = tuple[str | None, list[tuple[str, str]], Any]  # profile id, problems, scrubbed payload
_COLUMNS = "id, received_ms, kind, profile_id, problems, payload"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    kind TEXT,
    profile_id TEXT,
    problems BLOB NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_profile ON quarantine (profile_id);
"""


@dataclass(frozen=True, slots=True)
class Held:
    """One quarantined event."""

    id: int
    received_ms: int
    kind: str | None
    profile_id: str | None
    problems: list[tuple[str, str]]
    payload: Any

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_ms": self.received_ms,
            "kind": self.kind,
            "problems": [{"field": f, "problem": p} for f, p in self.problems],
        }

    def json(self) -> dict[str, Any]:
        return {**self.summary(), "profile_id": self.profile_id, "payload": self.payload}


class Quarantine:
    """Refused events, durable as the event log is."""

    def __init__(self, path: Path, durability: Durability = "process", max_rows: int = 100_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self._db = connect(path, durability)
        self._db.executescript(_SCHEMA)

    def add(self, received_ms: int, kind: str | None, held: Sequence[Refused]) -> int:
        """Keep refused events: (profile id, problems, scrubbed payload) each. How many are held now."""
        rows = [
            (received_ms, kind, pid, orjson.dumps(problems), orjson.dumps(plain_json(payload)))
            for pid, problems, payload in held
        ]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO quarantine (received_ms, kind, profile_id, problems, payload) VALUES (?, ?, ?, ?, ?)", rows
            )
            over = self.count() - self.max_rows
            if over > 0:
                self._db.execute(
                    "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT ?)", (over,)
                )
                log.warning("quarantine full (%d): its %d oldest entries dropped", self.max_rows, over)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self.count()

    def list(self, after_id: int = 0, limit: int = 100) -> list[Held]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM quarantine WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [_held(row) for row in rows]

    def get(self, held_id: int) -> Held | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM quarantine WHERE id = ?", (held_id,)).fetchone()
        return None if row is None else _held(row)

    def remove(self, held_id: int) -> bool:
        return self._db.execute("DELETE FROM quarantine WHERE id = ?", (held_id,)).rowcount > 0

    def erase(self, profile_id: str) -> int:
        """Forget a user's refused events (erasure)."""
        return self._db.execute("DELETE FROM quarantine WHERE profile_id = ?", (profile_id,)).rowcount

    def checkpoint(self) -> bool:
        """Empty the WAL (after an erasure); False while a reader (a backup) holds it."""
        return checkpoint(self._db)

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _held(row: tuple[Any, ...]) -> Held:
    held_id, received_ms, kind, pid, problems, payload = row
    return Held(held_id, received_ms, kind, pid, [tuple(p) for p in orjson.loads(problems)], orjson.loads(payload))
