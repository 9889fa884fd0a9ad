"""What the list and tag destinations share: a batch's net changes, the
people they address, and what an email platform adapter offers.

A list mirrors memberships, so a batch is sent as where each user *ends*
for each segment: a user who entered and left within one batch is not
touched at all (they were out before it, and are out after).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from features.contacts import Contact

T = TypeVar("T")
Lookup = Callable[[Iterable[str]], Mapping[str, Contact]]  # contacts by profile, from the vault


@dataclass(frozen=True, slots=True)
class Member:
    """Somebody a platform lists: its own id for them and, where known, segflow's."""

    remote_id: str
    profile_id: str | None


@dataclass(frozen=True, slots=True)
class Person:
    """Who a deletion request is for: a profile and its contact (None: the vault held none)."""

    profile_id: str
    contact: Contact | None


class Platform(Protocol):
    """An email platform's adapter: sends batches, lists members, deletes people."""

    async def send(self, deliveries: Sequence[dict[str, Any]]) -> Mapping[str, str]: ...

    async def members(self, segment: str) -> list[Member]: ...

    async def add(self, segment: str, profile_ids: Sequence[str]) -> Mapping[str, str]: ...

    async def remove(self, segment: str, members: Sequence[Member]) -> None: ...

    async def delete(self, person: Person) -> str: ...


def net(deliveries: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each user's last change per segment in a batch (the batch is in outbox
    order), left out when the batch both adds and removes them: who entered
    was out before, so entering and leaving again changes nothing.

    >>> sorted((k, d["kind"]) for k, d in net([
    ...     {"user": "u1", "segment": "s", "kind": "enter"}, {"user": "u1", "segment": "s", "kind": "exit"},
    ...     {"user": "u2", "segment": "s", "kind": "exit"}, {"user": "u2", "segment": "s", "kind": "enter"},
    ...     {"user": "u3", "segment": "s", "kind": "enter"}]).items())
    [(('u2', 's'), 'enter'), (('u3', 's'), 'enter')]
    """
    first: dict[tuple[str, str], str] = {}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for d in deliveries:
        key = (d["user"], d["segment"])
        first.setdefault(key, d["kind"])
        last[key] = d
    return {k: d for k, d in last.items() if not (first[k] == "enter" and d["kind"] == "exit")}


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def keys_of(deliveries: Sequence[dict[str, Any]], users: set[str]) -> list[str]:
    """The keys of a batch's deliveries to these users (every one of them, superseded or not)."""
    return [d["key"] for d in deliveries if d["user"] in users]
