"""API keys in three scopes, and their rate limits.

- ``source``: ingest only. Safe to publish in a web page or an email; can be
  bound to allowed origins; rate-limited per key and per client address, so
  one abuser cannot exhaust a public key for every visitor.
- ``read``: profiles, segments, members, metrics and docs.
- ``admin``: everything ``read`` can do, plus erasure, reload, preview,
  quarantine and keys; it may ingest with an auth header (the demo,
  ``segflow replay`` and server-side SDKs do).

Keys come from settings (``SEGFLOW_SOURCE_KEYS``, ``SEGFLOW_READ_KEYS``,
``SEGFLOW_ADMIN_KEYS``; the older ``SEGFLOW_WRITE_KEYS`` are admin keys) and
from the keys file (``keys.json`` beside the state directory, mode 0600),
which the service re-reads when it changes: keys are added, rotated and
revoked there (``segflow keys ...``) without a restart, and a revoked key
stops working within :data:`REFRESH_S`. A key is found by a hash of its
secret, so the lookup time does not depend on how much of a guess matched.

>>> ring = KeyRing([ApiKey("k1", "source", "s3cret-key", rate_per_s=2, burst=2)])
>>> ring.find("s3cret-key").id, ring.find("nope")
('k1', None)
>>> limits = RateLimits()
>>> [limits.wait(("k1",), 2, 2, now=0.0) for _ in range(3)]
[0.0, 0.0, 0.5]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Scope = Literal["source", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("source", "read", "admin")
# What each scope may do: admin includes read and may ingest.
GRANTS: dict[Scope, frozenset[str]] = {
    "source": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"ingest", "read", "admin"}),
}
log = logging.getLogger("segflow.keys")
REFRESH_S = 0.25  # how often the keys file is looked at
_PREFIX: dict[Scope, str] = {"source": "sfs_", "read": "sfr_", "admin": "sfa_"}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key: an id to name it by (never the secret), a scope, optional
    allowed origins (source keys) and a rate (requests a second, with a burst)."""

    id: str
    scope: Scope
    secret: str = field(repr=False)
    origins: tuple[str, ...] = ()
    rate_per_s: float | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"key {self.id!r}: scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")
        if len(self.secret) < 8:
            raise ValueError(f"key {self.id!r}: a key needs at least 8 characters")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ValueError(f"key {self.id!r}: rate_per_s must be positive (leave it out for no limit)")

    def public(self) -> dict[str, Any]:
        """What may be shown of a key: everything but the secret."""
        return {"id": self.id, "scope": self.scope, "origins": list(self.origins), "rate_per_s": self.rate_per_s}


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """The keys in force: those given by settings, and those of the keys file,
    re-read when its modification time or size changes."""

    def __init__(self, fixed: Iterable[ApiKey], path: Path | None = None) -> None:
        self._fixed = list(fixed)
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, ApiKey] = {}
        self._index(self._fixed)
        self.refresh(force=True)

    def _index(self, keys: Sequence[ApiKey]) -> None:
        self._by_digest = {_digest(k.secret): k for k in keys}

    def refresh(self, force: bool = False) -> None:
        """Re-read the keys file if it changed (looked at every :data:`REFRESH_S`).
        A file that cannot be read or does not validate takes its keys out of
        force (those from settings stay), with an error in the log."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        with self._lock:
            self._checked = now
            try:
                st = self.path.stat()
            except FileNotFoundError:
                stamp = None
            else:
                stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp and not force:
                return
            try:
                loaded = read_keys_file(self.path) if stamp is not None else []
            except (OSError, ValueError) as exc:  # fail closed: a broken file must not keep a revoked key alive
                log.error("keys file %s unreadable (%s): only the keys from settings are in force", self.path, exc)
                loaded = []
            self._stamp = stamp
            self._index([*self._fixed, *loaded])

    def in_force(self) -> list[ApiKey]:
        """Every key in force."""
        self.refresh()
        return list(self._by_digest.values())

    def find(self, secret: str) -> ApiKey | None:
        self.refresh()
        return self._by_digest.get(_digest(secret))


class RateLimits:
    """Token buckets by name: ``rate`` requests a second, ``burst`` at once.
    The number of buckets is bounded; the idlest are forgotten first."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._buckets: dict[tuple[str, ...], tuple[float, float]] = {}
        self._max = max_buckets

    def wait(self, name: tuple[str, ...], rate: float, burst: float, now: float | None = None) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there is."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(name, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens >= 1.0:
            if name not in self._buckets and len(self._buckets) >= self._max:
                self._evict(now)
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / rate

    def _evict(self, now: float) -> None:
        oldest = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: max(1, self._max // 10)]
        for name, _ in oldest:
            del self._buckets[name]


# -- the keys file ---------------------------------------------------------------


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    scope: Scope
    key: str = Field(min_length=8)
    origins: list[str] = Field(default_factory=list)
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)


class _KeysFile(BaseModel):
    keys: list[_KeyEntry]


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys of a keys file (ValueError naming the problem when it does not
    validate). The first format (``{"write": ..., "read": ...}``) is read as
    an admin and a read key."""
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "keys" not in data:  # the first format
            legacy: dict[str, Scope] = {"write": "admin", "read": "read", "source": "source"}
            data = {"keys": [{"id": n, "scope": legacy[n], "key": v} for n, v in data.items() if n in legacy]}
        entries = _KeysFile.model_validate(data).keys
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: {where}: {first['msg']}") from None
    return [ApiKey(e.id, e.scope, e.key, tuple(e.origins), e.rate_per_s, e.burst) for e in entries]


def write_keys_file(path: Path, keys: Sequence[ApiKey]) -> None:
    """Write the keys file atomically, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**k.public(), "key": k.secret, "burst": k.burst} for k in keys]
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": rows}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_key(scope: Scope, key_id: str | None = None, **options: Any) -> ApiKey:
    """A fresh random key of a scope (``sfs_``, ``sfr_`` or ``sfa_`` and 32 random characters)."""
    secret = _PREFIX[scope] + secrets.token_urlsafe(24)
    return ApiKey(key_id or f"{scope}-{secrets.token_hex(3)}", scope, secret, **options)


def ensure_keys_file(path: Path) -> list[ApiKey]:
    """The keys file's keys, creating it with one key of each scope if absent."""
    if not path.exists():
        write_keys_file(path, [new_key("admin", "admin"), new_key("read", "read"), new_key("source", "source")])
    return read_keys_file(path)
