"""Who gets no email: consent and suppression.

A user is suppressed for email destinations when they sent an ``Email
Unsubscribed`` event, or when a suppression list segflow was given names
them, by user id or by email address. Suppressed users get no *enter*
delivery to an email destination (each is recorded with the reason);
their *exits* are still sent, so the platform's lists stay clean.

Nothing personal is kept: a user id is kept as its profile key
(pseudonymized when it looks personal) and an email address as the keyed
pseudonym of its subscriber hash, so a listed address matches a profile
whose vault holds the address, or only its hash (the vault off).

>>> import tempfile, pathlib
>>> from features.pseudonyms import Pseudonymizer
>>> c = Consent(pathlib.Path(tempfile.mkdtemp()) / "vault.db", Pseudonymizer(b"0" * 32))
>>> c.suppress(["Bob@Mail.com", "u7"], "list: bounced", 5)
2
>>> c.why("u7", None), c.why("u1", Contact("bob@mail.com", None, subscriber_hash("bob@mail.com")))
('list: bounced', 'list: bounced')
>>> c.why("u1", None) is None
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from features.contacts import Contact, email_of, subscriber_hash
from features.events import Event, format_ms, profile_key
from features.pseudonyms import Pseudonymizer
from serving.log import Transaction, connect

UNSUBSCRIBED = "Email Unsubscribed"  # Segment's email event
SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    subject TEXT PRIMARY KEY,  -- profile:<profile key> or email:<pseudonym of the subscriber hash>
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
"""


class Consent:
    def __init__(self, path: Path, scrub: Pseudonymizer, durability: str = "process") -> None:
        self._db = connect(path, durability)
        self._db.executescript(SCHEMA)
        self._scrub = scrub

    def close(self) -> None:
        self._db.close()

    def _email_subject(self, md5: str) -> str:
        return "email:" + self._scrub(md5)

    def subject(self, who: str) -> str:
        """The kept form of a user id or an email address."""
        email = email_of(who)
        if email is not None:
            return self._email_subject(subscriber_hash(email))
        return "profile:" + profile_key(who.strip(), self._scrub)

    def observe(self, events: Sequence[Event]) -> int:
        """Record the unsubscribes among accepted events; how many."""
        rows = [
            ("profile:" + e.profile_id, f"unsubscribed: {UNSUBSCRIBED} at {format_ms(e.ts_ms)}", e.ts_ms)
            for e in events
            if e.kind == "track" and e.type == UNSUBSCRIBED
        ]
        if rows:
            self._put(rows)
        return len(rows)

    def suppress(self, who: Iterable[str], reason: str, at_ms: int) -> int:
        """Add user ids or email addresses to the suppression list; how many."""
        rows = [(self.subject(w), reason, at_ms) for w in who if w.strip()]
        self._put(rows)
        return len(rows)

    def _put(self, rows: Sequence[tuple[str, str, int]]) -> None:
        with Transaction(self._db):  # the first reason stays
            self._db.executemany("INSERT OR IGNORE INTO suppressions (subject, reason, at_ms) VALUES (?, ?, ?)", rows)

    def lift(self, who: Iterable[str]) -> int:
        """Remove user ids or email addresses from the suppression list (a new consent); how many were on it."""
        with Transaction(self._db):
            return sum(
                self._db.execute("DELETE FROM suppressions WHERE subject = ?", (self.subject(w),)).rowcount for w in who
            )

    def why(self, profile_id: str, contact: Contact | None) -> str | None:
        """Why a user gets no email (None: they may)."""
        subjects = ["profile:" + profile_id]
        if contact is not None and contact.email_md5:
            subjects.append(self._email_subject(contact.email_md5))
        marks = ",".join("?" * len(subjects))
        row = self._db.execute(
            f"SELECT reason FROM suppressions WHERE subject IN ({marks}) ORDER BY at_ms LIMIT 1", subjects
        ).fetchone()
        return None if row is None else str(row[0])

    def erase(self, profile_id: str) -> int:
        with Transaction(self._db):
            return int(
                self._db.execute("DELETE FROM suppressions WHERE subject = ?", ("profile:" + profile_id,)).rowcount
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM suppressions").fetchone()[0])
