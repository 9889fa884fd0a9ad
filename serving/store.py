"""Where profiles live: a small protocol, chosen by config.

The embedded default keeps profiles in memory; durability comes from the
event log and snapshots (``serving.snapshot``), not from the store. The Redis
store keeps them in Redis (shared by workers, surviving restarts) through
``features.codec``, the one codec of a profile: stores never invent their own.
``open_store("memory")`` or ``open_store("redis://host:6379/0", features)``
picks one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import redis

from features import codec
from features.online import FeatureSet, Profile


class StateStore(Protocol):
    def get(self, profile_id: str) -> Profile | None: ...
    def put(self, profile_id: str, profile: Profile) -> None: ...
    def delete(self, profile_id: str) -> bool: ...
    def items(self) -> Iterator[tuple[str, Profile]]: ...
    def clear(self) -> None: ...


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

    def clear(self) -> None:
        self._profiles.clear()

    def __len__(self) -> int:
        return len(self._profiles)


class RedisStore:
    """Profiles in Redis, one string key each under ``prefix``, encoded by
    ``features.codec``. Reads decode; callers ``put`` after changing a profile."""

    def __init__(self, client: redis.Redis, features: FeatureSet, prefix: str = "segflow:profile:") -> None:
        self.client = client
        self.features = features
        self.prefix = prefix

    def get(self, profile_id: str) -> Profile | None:
        data = self.client.get(self.prefix + profile_id)
        return None if data is None else codec.decode(data, self.features)  # type: ignore[arg-type]

    def put(self, profile_id: str, profile: Profile) -> None:
        self.client.set(self.prefix + profile_id, codec.encode(self.features, profile))

    def delete(self, profile_id: str) -> bool:
        return bool(self.client.delete(self.prefix + profile_id))

    def items(self) -> Iterator[tuple[str, Profile]]:
        n = len(self.prefix)
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            data = self.client.get(key)
            if data is not None:
                yield key[n:].decode(), codec.decode(data, self.features)  # type: ignore[arg-type]

    def clear(self) -> None:
        """Delete every profile under this store's prefix (and nothing else)."""
        batch = []
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.client.delete(*batch)
                batch = []
        if batch:
            self.client.delete(*batch)


def open_store(url: str, features: FeatureSet, prefix: str = "segflow:profile:") -> StateStore:
    """``memory`` (the embedded default) or a ``redis://`` URL (keys under ``prefix``)."""
    if url == "memory":
        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(redis.Redis.from_url(url), features, prefix)
    raise ValueError(f"store must be 'memory' or a redis:// URL, not {url!r}")
