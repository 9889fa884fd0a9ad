"""Where each change stands with each destination: the delivery ledger.

It lives in the log's database, beside the outbox (a connection of its
own), so a delivery and the change it carries are trimmed and erased
together. Each destination has a cursor: the last outbox entry it has
looked at. An entry it wants becomes a delivery, ``pending`` until it is
``delivered``, or ``dead`` (attempts or age exhausted: a dead letter, kept
for ``segflow destinations replay``), or ``cancelled`` with a reason (the
frequency cap, the flap guard), ``suppressed`` (an enter to an email
destination for a user who gets no email, with why) or ``skipped`` (the
platform does not know the user: no address, not in the audience). Attempts are counted before they are made,
so after a crash a delivery is sent again only after an attempt that may
have failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.log import Transaction, checkpoint, connect
from serving.outbox import Entry

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    destination TEXT NOT NULL,
    outbox_id INTEGER NOT NULL,
    profile_id TEXT NOT NULL,
    segment TEXT NOT NULL,
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    status TEXT NOT NULL,  -- pending, delivered, dead, cancelled, suppressed, skipped
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL,  -- held by the flap guard, or waiting for a retry
    reason TEXT,  -- the last error, or why it was cancelled or died
    enqueued_ms INTEGER NOT NULL,
    delivered_ms INTEGER,
    PRIMARY KEY (destination, outbox_id)
);
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (destination, status, outbox_id);
CREATE INDEX IF NOT EXISTS deliveries_user ON deliveries (profile_id, destination, segment);
CREATE TABLE IF NOT EXISTS destination_cursors (destination TEXT PRIMARY KEY, after_id INTEGER NOT NULL);
"""
PENDING, DELIVERED, DEAD, CANCELLED = "pending", "delivered", "dead", "cancelled"
SUPPRESSED, SKIPPED = "suppressed", "skipped"  # no consent for email; the platform does not know the user
STATUSES = (PENDING, DELIVERED, DEAD, CANCELLED, SUPPRESSED, SKIPPED)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A pending delivery with the change it carries."""

    entry: Entry
    attempts: int
    not_before_ms: int
    enqueued_ms: int


@dataclass(frozen=True, slots=True)
class Admission:
    """An outbox entry a destination wants, as it enters the ledger."""

    entry: Entry
    status: str
    not_before_ms: int
    reason: str | None = None


class Ledger:
    def __init__(self, path: Path, durability: str = "process") -> None:
        self._db = connect(path, durability)  # beside the log's own: sqlite3's 5 s busy wait between them
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with Transaction(self._db):
            self._db.executemany(sql, rows)

    # -- admission -------------------------------------------------------------

    def cursor(self, destination: str) -> int | None:
        """The last outbox entry a destination has looked at (None: it is new)."""
        row = self._db.execute("SELECT after_id FROM destination_cursors WHERE destination = ?", (destination,))
        found = row.fetchone()
        return int(found[0]) if found else None

    def admit(self, destination: str, admissions: Sequence[Admission], cancel: Sequence[tuple[int, str]],
              after_id: int, now_ms: int) -> None:  # fmt: skip
        """New deliveries, cancellations of held ones (``(outbox id, reason)``)
        and the cursor's new place, in one transaction."""
        with Transaction(self._db):
            self._db.executemany(
                "INSERT OR IGNORE INTO deliveries (destination, outbox_id, profile_id, segment, kind, at_ms, status,"
                " not_before_ms, reason, enqueued_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (destination, a.entry.id, a.entry.profile_id, a.entry.segment, a.entry.kind, a.entry.at_ms,
                     a.status, a.not_before_ms, a.reason, now_ms)
                    for a in admissions
                ],
            )  # fmt: skip
            self._db.executemany(
                "UPDATE deliveries SET status = 'cancelled', reason = ? WHERE destination = ? AND outbox_id = ?"
                " AND status = 'pending' AND attempts = 0",
                [(reason, destination, outbox_id) for outbox_id, reason in cancel],
            )
            self._db.execute(
                "INSERT INTO destination_cursors (destination, after_id) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET after_id = excluded.after_id",
                (destination, after_id),
            )

    def held_enter(self, destination: str, profile_id: str, segment: str) -> tuple[int, int] | None:
        """A user's enter not sent yet (the flap guard holds it): outbox id and instant."""
        row = self._db.execute(
            "SELECT outbox_id, at_ms FROM deliveries WHERE profile_id = ? AND destination = ? AND segment = ?"
            " AND kind = 'enter' AND status = 'pending' AND attempts = 0 ORDER BY outbox_id DESC LIMIT 1",
            (profile_id, destination, segment),
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def last_kind_status(self, destination: str, profile_id: str, segment: str) -> tuple[str, str] | None:
        """A user's latest delivery for a segment: its kind and status."""
        row = self._db.execute(
            "SELECT kind, status FROM deliveries WHERE profile_id = ? AND destination = ? AND segment = ?"
            " ORDER BY outbox_id DESC LIMIT 1",
            (profile_id, destination, segment),
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def sent_since(self, destination: str, profile_id: str, segment: str, since_ms: int) -> int:
        """Deliveries to a user for a segment (sent or on their way) at or after ``since_ms``."""
        row = self._db.execute(
            "SELECT count(*) FROM deliveries WHERE profile_id = ? AND destination = ? AND segment = ?"
            " AND status IN ('pending', 'delivered') AND at_ms >= ?",
            (profile_id, destination, segment, since_ms),
        ).fetchone()
        return int(row[0])

    # -- delivery ----------------------------------------------------------------

    def pending(self, destination: str, limit: int) -> list[Delivery]:
        """Pending deliveries with their changes, oldest first."""
        rows = self._db.execute(
            "SELECT o.id, o.key, o.profile_id, o.segment, o.kind, o.at_ms, o.cause, o.body, o.recorded_ms,"
            " d.attempts, d.not_before_ms, d.enqueued_ms FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
            " WHERE d.destination = ? AND d.status = 'pending' ORDER BY d.outbox_id LIMIT ?",
            (destination, limit),
        )
        return [Delivery(Entry.of(row[:9]), int(row[9]), int(row[10]), int(row[11])) for row in rows]

    def pending_users(self, destination: str) -> set[str]:
        rows = self._db.execute(
            "SELECT DISTINCT profile_id FROM deliveries WHERE destination = ? AND status = 'pending'", (destination,)
        )
        return {str(r[0]) for r in rows}

    def attempting(self, destination: str, ids: Sequence[int], now_ms: int) -> set[int]:
        """Count an attempt, before it is made; the ids still pending (an erasure may have taken some)."""
        with Transaction(self._db):
            for i in ids:
                self._db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, not_before_ms = ?"
                    " WHERE destination = ? AND outbox_id = ? AND status = 'pending'",
                    (now_ms, destination, i),
                )
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(
                f"SELECT outbox_id FROM deliveries WHERE destination = ? AND status = 'pending'"
                f" AND outbox_id IN ({marks})",
                (destination, *ids),
            )
            return {int(r[0]) for r in rows}

    def delivered(self, destination: str, ids: Sequence[int], now_ms: int) -> None:
        self._write(
            "UPDATE deliveries SET status = 'delivered', delivered_ms = ?, reason = NULL"
            " WHERE destination = ? AND outbox_id = ?",
            [(now_ms, destination, i) for i in ids],
        )

    def failed(self, destination: str, ids: Sequence[int], reason: str, retry_at_ms: int) -> None:
        self._write(
            "UPDATE deliveries SET reason = ?, not_before_ms = ? WHERE destination = ? AND outbox_id = ?",
            [(reason, retry_at_ms, destination, i) for i in ids],
        )

    def settle(self, destination: str, status: str, reasons: Sequence[tuple[int, str]]) -> None:
        """Deliveries not sent, with why (``(outbox id, why)``): ``suppressed`` (the user
        gets no email; only pending ones) or ``skipped`` (the destination knows nobody to apply them to)."""
        assert status in (SUPPRESSED, SKIPPED)
        only_pending = " AND status = 'pending'" if status == SUPPRESSED else ""
        self._write(
            f"UPDATE deliveries SET status = ?, reason = ? WHERE destination = ? AND outbox_id = ?{only_pending}",
            [(status, why, destination, i) for i, why in reasons],
        )

    def dead(self, destination: str, ids: Sequence[int], reason: str) -> None:
        self._write(
            "UPDATE deliveries SET status = 'dead', reason = ? WHERE destination = ? AND outbox_id = ?",
            [(reason, destination, i) for i in ids],
        )

    # -- operations --------------------------------------------------------------

    def counts(self, destination: str) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT status, count(*) FROM deliveries WHERE destination = ? GROUP BY status", (destination,)
        )
        found = dict.fromkeys(STATUSES, 0)
        found.update({status: int(n) for status, n in rows})
        return found

    def oldest_pending_ms(self, destination: str) -> int | None:
        """When the oldest undelivered change was recorded."""
        row = self._db.execute(
            "SELECT min(enqueued_ms) FROM deliveries WHERE destination = ? AND status = 'pending'", (destination,)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def listing(self, destination: str, status: str, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT d.outbox_id, o.key, d.profile_id, d.segment, d.kind, d.at_ms, d.attempts, d.reason,"
            " d.delivered_ms FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
            " WHERE d.destination = ? AND d.status = ? AND d.outbox_id > ? ORDER BY d.outbox_id LIMIT ?",
            (destination, status, after_id, limit),
        )
        names = ("id", "key", "profile_id", "segment", "kind", "at_ms", "attempts", "reason", "delivered_ms")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def replay(self, destination: str, status: str = DEAD, keys: Sequence[str] | None = None) -> int:
        """Send again: the dead letters (or cancelled ones, or those keys), from their first attempt."""
        sql = (
            "UPDATE deliveries SET status = 'pending', attempts = 0, not_before_ms = 0, reason = NULL"
            " WHERE destination = ? AND status = ?"
        )
        args: list[Any] = [destination, status]
        if keys is not None:
            marks = ",".join("?" * len(keys))
            sql += f" AND outbox_id IN (SELECT id FROM outbox WHERE key IN ({marks}))"
            args += list(keys)
        else:
            sql += " AND outbox_id IN (SELECT id FROM outbox)"  # a change the retention let go cannot be sent
        with Transaction(self._db):
            return int(self._db.execute(sql, args).rowcount)

    def recent_for(self, profile_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """A user's latest deliveries, newest first (the profile's "why")."""
        rows = self._db.execute(
            "SELECT destination, segment, kind, at_ms, status, attempts, reason, delivered_ms FROM deliveries"
            " WHERE profile_id = ? ORDER BY outbox_id DESC LIMIT ?",
            (profile_id, limit),
        )
        names = ("destination", "segment", "kind", "at_ms", "status", "attempts", "reason", "delivered_ms")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def needed_from(self, destinations: Sequence[str]) -> int | None:
        """The oldest outbox entry one of these (the configured) destinations
        still needs: its own pending one, or the first after its cursor; None: none."""
        if not destinations:
            return None
        marks = ",".join("?" * len(destinations))
        rows = self._db.execute(
            f"SELECT min(d.outbox_id) FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
            f" WHERE d.status = 'pending' AND d.destination IN ({marks})"
            f" UNION ALL SELECT min(after_id) + 1 FROM destination_cursors WHERE destination IN ({marks})",
            (*destinations, *destinations),
        )
        found = [int(r[0]) for r in rows if r[0] is not None]
        return min(found) if found else None

    def trim(self) -> int:
        """Forget the deliveries of changes the outbox no longer holds (after its trim)."""
        with Transaction(self._db):
            oldest = self._db.execute("SELECT coalesce(min(id), 1 << 62) FROM outbox").fetchone()[0]
            return int(self._db.execute("DELETE FROM deliveries WHERE outbox_id < ?", (oldest,)).rowcount)

    def erase(self, profile_id: str) -> int:
        with Transaction(self._db):
            return int(self._db.execute("DELETE FROM deliveries WHERE profile_id = ?", (profile_id,)).rowcount)

    def checkpoint(self) -> bool:
        return checkpoint(self._db)
