"""Where profiles live: a small protocol, chosen by config.

The embedded default keeps profiles in memory; durability comes from the
event log and snapshots (``serving.snapshot``), not from the store. A store
for Redis implements the same four methods with ``features.codec``, the one
codec of a profile: stores never invent their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from features.online import Profile


class StateStore(Protocol):
    def get(self, profile_id: str) -> Profile | None: ...
    def put(self, profile_id: str, profile: Profile) -> None: ...
    def delete(self, profile_id: str) -> bool: ...
    def items(self) -> Iterator[tuple[str, Profile]]: ...


class MemoryStore:
    """Profiles in a dict: the embedded default."""

    def __init__(self) -> None:
        self._profiles: dict[str, Profile] = {}

    def get(self, profile_id: str) -> Profile | None:
        return self._profiles.get(profile_id)

    def put(self, profile_id: str, profile: Profile) -> None:
        self._profiles[profile_id] = profile

    def delete(self, profile_id: str) -> bool:
        return self._profiles.pop(profile_id, None) is not None

    def items(self) -> Iterator[tuple[str, Profile]]:
        return iter(list(self._profiles.items()))

    def __len__(self) -> int:
        return len(self._profiles)
