"""What segflow holds about a person beside their events: how to reach
them (the contact vault), whether they may get email (consent), and the
deletion requests an erasure owes the email platforms, and the traits
the person was given (their latest values). All of it lives in
``vault.db`` in the state directory.

Ingest hands over each request's contacts and accepted events; the
dispatchers read contacts and consent; erasure removes the contact and the
user's own suppression and records a deletion request per platform; the
admin export reads everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from features.contacts import Contact, Sighting
from features.events import Event
from features.pseudonyms import Pseudonymizer
from serving.consent import Consent
from serving.traits import Traits
from serving.vault import Deletions, Vault, VaultKeys


class People:
    def __init__(self, state_dir: Path, scrub: Pseudonymizer, keys: VaultKeys, durability: str = "process",
                 keep_raw: bool = True) -> None:  # fmt: skip
        path = state_dir / "vault.db"
        self.vault = Vault(path, keys, durability, keep_raw)
        self.consent = Consent(path, scrub, durability)
        self.traits = Traits(path, durability)
        self.deletions = Deletions(self.vault)

    def close(self) -> None:
        self.consent.close()
        self.traits.close()
        self.vault.close()

    def observe(
        self,
        events: Sequence[Event],
        sightings: Sequence[Sighting],
        erased: Callable[[str], bool],
        owner: Callable[[str], str] = str,
    ) -> None:
        """A request's accepted events and the contacts they gave, but nothing of an
        erased user (before the events are logged: a failed request leaves at most a
        contact or a suppression that the client sends again). ``owner``: the profile
        an id belongs to (an anonymous id joined to a user's: the user's)."""
        kept = [replace(s, profile_id=owner(s.profile_id)) for s in sightings if not erased(s.profile_id)]
        if kept:
            self.vault.add(kept)
        self.consent.observe([e for e in Consent.signals(events) if not erased(e.profile_id)], owner)
        self.traits.observe([e for e in events if e.traits and not erased(e.profile_id)], owner)

    def merge(self, source: str, target: str) -> None:
        """An identity merge: ``target`` gets what ``source``'s id brought (a
        contact, traits, consent), by time against its own; the source keeps
        its rows (its exits may still need the contact) until erased with the user."""
        self.vault.copy(source, target)
        self.traits.copy(source, target)
        self.consent.copy(source, target)

    def checkpoint(self) -> bool:
        return self.vault.checkpoint()

    def contacts(self, profile_ids: Iterable[str]) -> Mapping[str, Contact]:
        return self.vault.get_many(profile_ids)

    def suppressed(self, profile_id: str) -> str | None:
        """Why a user gets no email (None: they may)."""
        return self.consent.why(profile_id, self.vault.get(profile_id))

    def erase(self, profile_id: str, platforms: Sequence[str]) -> bool:
        """Forget the contact and the user's own suppression; owe each platform a deletion request."""
        contact = self.vault.get(profile_id)
        if platforms:
            self.deletions.request(platforms, profile_id, contact, time.time_ns() // 1_000_000)
        self.consent.erase(profile_id)
        self.traits.erase(profile_id)
        return self.vault.erase(profile_id) or contact is not None

    def export(self, profile_id: str) -> dict[str, Any]:
        """Everything of this person held here, for a data-subject access request."""
        contact = self.vault.get(profile_id)
        return {
            "contact": None if contact is None else contact.as_dict(),
            "traits": self.traits.of(profile_id),
            "suppressed": self.suppressed(profile_id),
            "deletion_requests": self.deletions.of(profile_id),
        }
