"""Who gets no email: consent and suppression.

A user is suppressed for email destinations when their latest consent
signal says no — an ``Email Unsubscribed`` event, or a consent trait on
``identify`` or ``group`` (``email_consent``, ``email_opt_in``,
``accepts_marketing``: false; true gives consent again) — or when a
suppression list segflow was given names them, by user id or by email
address (only lifting them from the list undoes that). Suppressed users get no *enter*
delivery to an email destination (each is recorded with the reason);
their *exits* are still sent, so the platform's lists stay clean.

Nothing personal is kept: a user id is kept as its profile key
(pseudonymized when it looks personal) and an email address as the keyed
pseudonym of its subscriber hash, so a listed address matches a profile
whose vault holds the address, or only its hash (the vault off).

>>> import tempfile, pathlib
>>> from features.pseudonyms import Pseudonymizer, normal_key
>>> c = Consent(pathlib.Path(tempfile.mkdtemp()) / "vault.db", Pseudonymizer(b"0" * 32))
>>> c.suppress(["Bob@Mail.com", "u7"], "list: bounced", 5)
2
>>> c.why("u7", None), c.why("u1", Contact("bob@mail.com", None, subscriber_hash("bob@mail.com")))
('list: bounced', 'list: bounced')
>>> c.why("u1", None) is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from features.contacts import Contact, email_of, subscriber_hash
from features.events import Event, format_ms
from features.pseudonyms import Pseudonymizer, normal_key
from serving.log import Transaction, connect

UNSUBSCRIBED = "Email Unsubscribed"  # Segment's email event
CONSENT_TRAITS = frozenset({"emailconsent", "emailoptin", "acceptsmarketing", "acceptsemailmarketing"})  # normal_key
_YES, _NO = frozenset({"true", "yes", "1", "optedin", "subscribed"}), frozenset({"false", "no", "0", "optedout"})
SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    subject TEXT NOT NULL,  -- profile:<profile key> or email:<pseudonym of the subscriber hash>
    source TEXT NOT NULL,  -- list (given), or signal (the user's latest consent event or trait)
    suppressed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (subject, source)
);
"""


def consent_in(traits: Mapping[str, Any]) -> tuple[str, bool] | None:
    """A consent trait and whether it gives consent (None: the traits hold none).

    >>> consent_in({"plan": "gold", "Email_Consent": "no"}), consent_in({"accepts_marketing": True})
    (('Email_Consent', False), ('accepts_marketing', True))
    """
    for key, value in traits.items():
        if normal_key(key) in CONSENT_TRAITS:
            word = normal_key(str(value)) if not isinstance(value, bool) else str(value).lower()
            if word in _YES or word in _NO:
                return key, word in _YES
    return None


class Consent:
    def __init__(self, path: Path, scrub: Pseudonymizer, durability: str = "process") -> None:
        self._db = connect(path, durability)
        self._migrate()
        self._db.executescript(SCHEMA)
        self._scrub = scrub

    def _migrate(self) -> None:
        """A suppressions table from before consent signals (one row a subject): its rows
        become list entries (``list: …``) or signals (unsubscribes), all suppressing."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(suppressions)")}
        if not columns or "source" in columns:
            return
        with Transaction(self._db):
            self._db.execute("ALTER TABLE suppressions RENAME TO suppressions_v1")
            self._db.execute(SCHEMA.replace("CREATE TABLE IF NOT EXISTS", "CREATE TABLE"))
            self._db.execute(
                "INSERT INTO suppressions (subject, source, suppressed, reason, at_ms) SELECT subject,"
                " CASE WHEN reason LIKE 'list:%' THEN 'list' ELSE 'signal' END, 1, reason, at_ms FROM suppressions_v1"
            )
            self._db.execute("DROP TABLE suppressions_v1")

    def close(self) -> None:
        self._db.close()

    def _email_subject(self, md5: str) -> str:
        return "email:" + self._scrub(md5)

    def subject(self, who: str) -> str:
        """The kept form of a user id or an email address."""
        email = email_of(who)
        if email is not None:
            return self._email_subject(subscriber_hash(email))
        return "profile:" + self._scrub.identifier(who.strip())

    def observe(self, events: Sequence[Event], owner: Callable[[str], str] = str) -> int:
        """Record the consent signals among accepted events (the latest by event time wins),
        for the profile each event's id belongs to (``owner``); how many."""
        rows = []
        for e in events:
            subject = "profile:" + owner(e.profile_id)
            if e.kind == "track" and e.type == UNSUBSCRIBED:
                rows.append((subject, 1, f"unsubscribed: {UNSUBSCRIBED} at {format_ms(e.ts_ms)}", e.ts_ms))
            elif e.traits and (found := consent_in(e.traits)) is not None:
                name, given = found
                rows.append((subject, 0 if given else 1, f"trait {name}: {str(given).lower()}"
                             f" at {format_ms(e.ts_ms)}", e.ts_ms))  # fmt: skip
        if rows:
            with Transaction(self._db):
                self._db.executemany(
                    "INSERT INTO suppressions (subject, source, suppressed, reason, at_ms)"
                    " VALUES (?, 'signal', ?, ?, ?) ON CONFLICT (subject, source) DO UPDATE SET"
                    " suppressed = excluded.suppressed, reason = excluded.reason, at_ms = excluded.at_ms"
                    " WHERE excluded.at_ms >= suppressions.at_ms",
                    rows,
                )
        return len(rows)

    @staticmethod
    def signals(events: Sequence[Event]) -> list[Event]:
        """The events that may carry a consent signal."""
        return [e for e in events if (e.kind == "track" and e.type == UNSUBSCRIBED) or (e.traits and e.kind != "alias")]

    def suppress(self, who: Iterable[str], reason: str, at_ms: int) -> int:
        """Add user ids or email addresses to the suppression list; how many."""
        rows = [(self.subject(w), reason, at_ms) for w in who if w.strip()]
        with Transaction(self._db):  # the first reason stays
            self._db.executemany(
                "INSERT OR IGNORE INTO suppressions (subject, source, suppressed, reason, at_ms)"
                " VALUES (?, 'list', 1, ?, ?)",
                rows,
            )
        return len(rows)

    def lift(self, who: Iterable[str]) -> int:
        """Remove user ids or email addresses from the suppression list (a new consent); how many were on it."""
        with Transaction(self._db):
            return sum(
                self._db.execute(
                    "DELETE FROM suppressions WHERE subject = ? AND source = 'list'", (self.subject(w),)
                ).rowcount
                for w in who
            )

    def why(self, profile_id: str, contact: Contact | None) -> str | None:
        """Why a user gets no email (None: they may)."""
        subjects = ["profile:" + profile_id]
        if contact is not None and contact.email_md5:
            subjects.append(self._email_subject(contact.email_md5))
        marks = ",".join("?" * len(subjects))
        row = self._db.execute(
            f"SELECT reason FROM suppressions WHERE subject IN ({marks}) AND suppressed = 1 ORDER BY at_ms LIMIT 1",
            subjects,
        ).fetchone()
        return None if row is None else str(row[0])

    def copy(self, source: str, target: str) -> None:
        """Give ``target`` the consent signals and list entries of ``source``'s
        id (an identity merge): the latest signal of the two wins."""
        with Transaction(self._db):
            self._db.execute(
                "INSERT INTO suppressions (subject, source, suppressed, reason, at_ms) SELECT ?, source, suppressed,"
                " reason, at_ms FROM suppressions WHERE subject = ? AND true ON CONFLICT (subject, source) DO UPDATE"
                " SET suppressed = excluded.suppressed, reason = excluded.reason, at_ms = excluded.at_ms"
                " WHERE excluded.source = 'signal' AND excluded.at_ms > suppressions.at_ms",
                ("profile:" + target, "profile:" + source),
            )

    def erase(self, profile_id: str) -> int:
        with Transaction(self._db):
            return int(
                self._db.execute("DELETE FROM suppressions WHERE subject = ?", ("profile:" + profile_id,)).rowcount
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM suppressions WHERE suppressed = 1").fetchone()[0])
