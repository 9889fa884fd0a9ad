"""The outbox: every segment change, durable, keyed by what it is.

A change is written in the same transaction as the log append of the events
that caused it (time-driven ones by the housekeeping tick, at most a tick
after their due instant), so a change is in the outbox exactly when its
cause is in the log. Its key is derived from what it is: the user, the
segment, enter or exit, the instant (and, for the net changes of a reload,
the config reloaded to): a replay that re-derives a change finds its key
already there and adds nothing. Destinations read the outbox in ``id``
order; ``id`` is the cursor of ``GET /v1/transitions``.

>>> from segments.membership import Reason, Transition
>>> t = Transition("vip", "enter", 1_000, Reason("cfg1", "orders >= 3", (("orders", 3),)))
>>> change = Change("u1", t, "event")
>>> change_key(change) == change_key(Change("u1", t, "time"))  # what it is, not how it was found
True
>>> change_key(change) == change_key(Change("u1", t, "reload"))  # a reload's net change has its own
False
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from features.values import exact_json
from segments.membership import Transition

Cause = Literal["event", "time", "reload", "merge"]  # merge: an anonymous profile joined a known one

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the delivery order, and the cursor
    key TEXT NOT NULL UNIQUE,
    profile_id TEXT NOT NULL,
    segment TEXT NOT NULL,
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    cause TEXT NOT NULL,
    body BLOB NOT NULL,
    recorded_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_profile ON outbox (profile_id);
CREATE INDEX IF NOT EXISTS outbox_recorded ON outbox (recorded_ms);
"""
INSERT = (
    "INSERT OR IGNORE INTO outbox (key, profile_id, segment, kind, at_ms, cause, body, recorded_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Change:
    """One user's transition, with what caused it and the scores behind it."""

    profile_id: str
    transition: Transition
    cause: Cause = "event"
    scores: Mapping[str, float] = field(default_factory=dict)
    cluster: str | None = None
    nth: int = 0  # the user's earlier transitions of this segment at this same instant (enter, exit, enter...)

    @property
    def key(self) -> str:
        return change_key(self)


def change_key(change: Change) -> str:
    """The idempotency key: user, segment, enter or exit, instant; when a user
    entered and left a segment more than once in one millisecond, which time
    it was; for a reload's net change, the config it reloaded to."""
    t = change.transition
    parts = [change.profile_id, t.segment, t.kind, str(t.at_ms)]
    if change.nth:
        parts.append(f"nth:{change.nth}")
    if change.cause == "reload":
        parts.append("reload:" + t.reason.config_id)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def body(change: Change) -> bytes:
    """What travels with a change: the reason's rule and clauses with their
    values, the config, the scores and the cluster."""
    t = change.transition
    return orjson.dumps(
        {
            "config_id": t.reason.config_id,
            "rule": t.reason.rule,
            "clauses": [[c, exact_json(v)] for c, v in t.reason.clauses],
            "scores": {k: exact_json(v) for k, v in change.scores.items()},
            "cluster": change.cluster,
        }
    )


def rows(changes: Iterable[Change], recorded_ms: int) -> list[tuple[Any, ...]]:
    """Changes as outbox rows for :data:`INSERT`."""
    out = []
    for c in changes:
        t = c.transition
        out.append((c.key, c.profile_id, t.segment, t.kind, t.at_ms, c.cause, body(c), recorded_ms))
    return out


@dataclass(frozen=True, slots=True)
class Entry:
    """An outbox row as read back."""

    id: int
    key: str
    profile_id: str
    segment: str
    kind: str
    at_ms: int
    cause: str
    body: dict[str, Any]
    recorded_ms: int

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Entry:
        id_, key, pid, segment, kind, at_ms, cause, data, recorded = row
        return cls(int(id_), key, pid, segment, kind, int(at_ms), cause, orjson.loads(data), int(recorded))


COLUMNS = "id, key, profile_id, segment, kind, at_ms, cause, body, recorded_ms"
