"""Where profiles live: a small protocol, chosen by config.

The embedded default keeps profiles in memory; durability comes from the
event log and snapshots (``serving.snapshot``), not from the store. The Redis
store keeps them in Redis (shared by workers, surviving restarts) through
``features.codec``, the one codec of a profile: stores never invent their own.
``open_store("memory")`` or ``open_store("redis://host:6379/0", features)``
picks one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Protocol

import redis

from features import codec
from features.online import FeatureSet, Profile


class ProfileAccess(Protocol):
    """What the engine's hot path needs: a profile by id, putting it back, and
    dropping one (a profile that joined another)."""

    def get(self, profile_id: str) -> Profile | None: ...
    def put(self, profile_id: str, profile: Profile) -> None: ...
    def delete(self, profile_id: str) -> bool: ...


class StateStore(Protocol):
    def get(self, profile_id: str) -> Profile | None: ...
    def get_many(self, profile_ids: Collection[str]) -> dict[str, Profile]: ...
    def put(self, profile_id: str, profile: Profile) -> None: ...
    def put_many(self, profiles: Mapping[str, Profile]) -> None: ...
    def delete(self, profile_id: str) -> bool: ...
    def items(self) -> Iterator[tuple[str, Profile]]: ...
    def clear(self) -> None: ...


class MemoryStore:
    """Profiles in a dict: the embedded default."""

    def __init__(self) -> None:
        self._profiles: dict[str, Profile] = {}

    def get(self, profile_id: str) -> Profile | None:
        return self._profiles.get(profile_id)

    def get_many(self, profile_ids: Collection[str]) -> dict[str, Profile]:
        profiles = self._profiles
        return {pid: profiles[pid] for pid in profile_ids if pid in profiles}

    def put(self, profile_id: str, profile: Profile) -> None:
        self._profiles[profile_id] = profile

    def put_many(self, profiles: Mapping[str, Profile]) -> None:
        self._profiles.update(profiles)

    def delete(self, profile_id: str) -> bool:
        return self._profiles.pop(profile_id, None) is not None

    def items(self) -> Iterator[tuple[str, Profile]]:
        return iter(list(self._profiles.items()))

    def clear(self) -> None:
        self._profiles.clear()

    def forget_some(self, n: int) -> int:
        """Drop up to ``n`` profiles (a retired store let go a piece at a time); how many went."""
        k = min(n, len(self._profiles))
        for _ in range(k):
            self._profiles.popitem()
        return k

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

    def get_many(self, profile_ids: Collection[str]) -> dict[str, Profile]:
        """The stored ones of ``profile_ids``, in one round trip (MGET)."""
        ids = list(profile_ids)
        if not ids:
            return {}
        found: list[bytes | None] = self.client.mget([self.prefix + pid for pid in ids])  # type: ignore[assignment]
        decode, features = codec.decode, self.features
        return {pid: decode(data, features) for pid, data in zip(ids, found, strict=True) if data is not None}

    def put(self, profile_id: str, profile: Profile) -> None:
        self.client.set(self.prefix + profile_id, codec.encode(self.features, profile))

    def put_many(self, profiles: Mapping[str, Profile]) -> None:
        """Write ``profiles`` in one round trip (MSET)."""
        if profiles:
            encode, features = codec.encode, self.features
            self.client.mset({self.prefix + pid: encode(features, p) for pid, p in profiles.items()})

    def delete(self, profile_id: str) -> bool:
        return bool(self.client.delete(self.prefix + profile_id))

    def items(self) -> Iterator[tuple[str, Profile]]:
        """Every stored profile, a page of keys per round trip."""
        n = len(self.prefix)
        for keys in self._pages():
            yield from self.get_many([key[n:].decode() for key in keys]).items()

    def clear(self) -> None:
        """Delete every profile under this store's prefix (and nothing else)."""
        for keys in self._pages():
            self.client.delete(*keys)

    def _pages(self, size: int = 1000) -> Iterator[list[bytes]]:
        """This store's keys, ``size`` at a time."""
        page: list[bytes] = []
        for key in self.client.scan_iter(match=self.prefix + "*", count=size):
            page.append(key)
            if len(page) >= size:
                yield page
                page = []
        if page:
            yield page


def open_store(url: str, features: FeatureSet, prefix: str = "segflow:profile:") -> StateStore:
    """``memory`` (the embedded default) or a ``redis://`` URL (keys under ``prefix``)."""
    if url == "memory":
        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(redis.Redis.from_url(url), features, prefix)
    raise ValueError(f"store must be 'memory' or a redis:// URL, not {url!r}")


class WriteBack:
    """One batch's view of a store: the batch's profiles read in one call,
    changes kept and written in one call by :meth:`flush`. Between the two,
    the batch's reads and writes cost no round trips. What has not been
    flushed is never lost: the event log holds it, and recovery replays it."""

    def __init__(self, store: StateStore, profile_ids: Collection[str]) -> None:
        self.store = store
        self._cache: dict[str, Profile | None] = dict.fromkeys(profile_ids)
        self._cache.update(store.get_many(profile_ids))
        self._written: dict[str, Profile] = {}

    def get(self, profile_id: str) -> Profile | None:
        cache = self._cache
        if profile_id in cache:
            return cache[profile_id]
        profile = cache[profile_id] = self.store.get(profile_id)
        return profile

    def put(self, profile_id: str, profile: Profile) -> None:
        self._cache[profile_id] = self._written[profile_id] = profile

    def delete(self, profile_id: str) -> bool:
        self._cache[profile_id] = None
        self._written.pop(profile_id, None)
        return self.store.delete(profile_id)

    def flush(self) -> None:
        self.store.put_many(self._written)
        self._written = {}
