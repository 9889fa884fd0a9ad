"""The traits a person was given: the latest value of each ``identify`` and
``group`` trait, as the profile shows it and the rules read it (text, after
scrubbing: a personal value is kept only as its pseudonym).

A later trait replaces an earlier one by event time, so a late, older
``identify`` does not undo a newer one; ``null`` removes a trait; nested
values (objects, lists) are not kept. A profile keeps at most
:data:`MAX_TRAITS` names: further new names are dropped and counted, so one
client cannot grow a profile without bound.

>>> import tempfile, pathlib
>>> from features.events import Event
>>> t = Traits(pathlib.Path(tempfile.mkdtemp()) / "vault.db")
>>> def identify(at, **traits):
...     return Event("m", "identify", "u1", None, at, at, kind="identify", traits=traits)
>>> t.observe([identify(20, plan="gold", seats=3), identify(10, plan="free", vip=True)])
2
>>> t.of("u1")
{'plan': 'gold', 'seats': '3', 'vip': 'true'}
>>> t.observe([identify(30, plan=None, address={"city": "Oslo"})])
1
>>> t.of("u1")
{'seats': '3', 'vip': 'true'}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from features.events import Event
from features.limits import MAX_NAME_CHARS, MAX_TEXT_CHARS
from features.specs import TRAIT_KINDS, trait_text
from serving.log import Transaction, connect

log = logging.getLogger(__name__)

MAX_TRAITS = 200  # names kept per profile
SCHEMA = """
CREATE TABLE IF NOT EXISTS traits (
    profile TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT,  -- NULL: removed (kept so an older value cannot come back)
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (profile, name)
);
"""


class Traits:
    def __init__(self, path: Path, durability: str = "process") -> None:
        self._db = connect(path, durability)
        self._db.execute(SCHEMA)
        self.dropped = 0  # new trait names refused: their profile had MAX_TRAITS already

    def close(self) -> None:
        self._db.close()

    def observe(self, events: Sequence[Event], owner: Callable[[str], str] = str) -> int:
        """Keep the traits of the ``identify`` and ``group`` calls among accepted
        events, for the profile each event's id belongs to (``owner``); how many calls."""
        calls = [e for e in events if e.kind in TRAIT_KINDS and e.traits]
        if not calls:
            return 0
        db = self._db
        with Transaction(db):
            for e in calls:
                pid = owner(e.profile_id)
                names = {n for (n,) in db.execute("SELECT name FROM traits WHERE profile = ?", (pid,))}
                rows = []
                for name, value in e.traits.items():
                    if isinstance(value, dict | list) or len(name) > MAX_NAME_CHARS:
                        continue
                    if not self._room(names, name):
                        continue
                    text = trait_text(value)
                    rows.append((pid, name, None if text is None else text[:MAX_TEXT_CHARS], e.ts_ms))
                db.executemany(
                    "INSERT INTO traits (profile, name, value, at_ms) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (profile, name) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms"
                    " WHERE excluded.at_ms >= traits.at_ms",
                    rows,
                )
        if self.dropped:
            log.debug("%d trait names over the per-profile limit of %d were not kept", self.dropped, MAX_TRAITS)
        return len(calls)

    def _room(self, held: set[str], name: str) -> bool:
        """Whether a profile holding ``held`` keeps ``name`` (then added to ``held``);
        a new name past the limit is counted, not kept."""
        if name in held:
            return True
        if len(held) >= MAX_TRAITS:
            self.dropped += 1
            return False
        held.add(name)
        return True

    def copy(self, source: str, target: str) -> int:
        """Give ``target`` the traits ``source`` holds where they are newer than
        its own (an identity merge), within the limit of names; how many."""
        db = self._db
        with Transaction(db):
            held = {n for (n,) in db.execute("SELECT name FROM traits WHERE profile = ?", (target,))}
            rows = []
            for name, value, at_ms in db.execute("SELECT name, value, at_ms FROM traits WHERE profile = ?", (source,)):
                if not self._room(held, name):
                    continue
                rows.append((target, name, value, at_ms))
            db.executemany(
                "INSERT INTO traits (profile, name, value, at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (profile, name)"
                " DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms WHERE excluded.at_ms > traits.at_ms",
                rows,
            )
        return len(rows)

    def of(self, profile_id: str) -> dict[str, str]:
        """The profile's traits, by name."""
        rows = self._db.execute(
            "SELECT name, value FROM traits WHERE profile = ? AND value IS NOT NULL ORDER BY name", (profile_id,)
        )
        return {str(name): str(value) for name, value in rows}

    def erase(self, profile_id: str) -> int:
        with Transaction(self._db):
            return int(self._db.execute("DELETE FROM traits WHERE profile = ?", (profile_id,)).rowcount)
