"""The contact vault: how to reach each identified user, sealed at rest.

Each row holds one profile's contact (email, phone, Mailchimp's subscriber
hash) as AES-GCM ciphertext under a vault key of its own (not the
pseudonymization key), with the profile id as associated data, so a row
moved to another profile does not open. Only the delivery dispatcher and
the admin access-request export read it. Erasure deletes the row (SQLite's
``secure_delete`` overwrites it): what is left of the person is ciphertext
nobody holds.

Keys come from ``$SEGFLOW_VAULT_KEYS`` (hex, comma-separated, the first one
current) or the key file ``$SEGFLOW_HOME/vault.key`` (one hex key a line,
the first current; generated on first use, mode 0600). :meth:`Vault.rotate`
adds a key, seals every row again under it, and drops the old keys from the
file.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> v = Vault(d / "vault.db", VaultKeys.load(d / "vault.key"))
>>> v.put("u1", Contact("bob@mail.com", None, "x"), 10)
>>> v.get("u1").email, v.erase("u1"), v.get("u1")
('bob@mail.com', True, None)
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from features.contacts import Contact, Sighting
from features.pseudonyms import segflow_home
from serving.log import Transaction, checkpoint, connect

KEYS_ENV = "SEGFLOW_VAULT_KEYS"
SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    profile_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    at_ms INTEGER NOT NULL  -- the time of the event that gave the newest part
);
CREATE TABLE IF NOT EXISTS deletion_requests (
    destination TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    requested_ms INTEGER NOT NULL,
    status TEXT NOT NULL,  -- pending, sent, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    done_ms INTEGER,
    key_id TEXT, nonce BLOB, sealed BLOB,  -- the contact, sealed, until the request is sent
    PRIMARY KEY (destination, profile_id)
);
"""


class VaultError(RuntimeError):
    """A vault that cannot be opened or read (a missing key, a damaged row)."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"segflow-vault" + key).hexdigest()[:12]


@dataclass(frozen=True)
class VaultKeys:
    """The vault's keys by id; ``current`` seals, any opens."""

    keys: dict[str, bytes]
    current: str
    path: Path | None = None

    @classmethod
    def of(cls, keys: Iterable[bytes], path: Path | None = None) -> VaultKeys:
        found = list(keys)
        if not found or any(len(k) != 32 for k in found):
            raise VaultError("a vault key is 32 bytes (64 hex digits)")
        return cls({key_id(k): k for k in found}, key_id(found[0]), path)

    @classmethod
    def load(cls, path: Path | None = None) -> VaultKeys:
        env = os.environ.get(KEYS_ENV)
        try:
            if env:
                return cls.of(bytes.fromhex(k.strip()) for k in env.split(",") if k.strip())
            path = path or segflow_home() / "vault.key"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            return cls.of((bytes.fromhex(line) for line in lines), path)
        except ValueError as exc:
            raise VaultError(f"vault keys ({KEYS_ENV} or {path}) must be hex digits: {exc}") from None

    def with_new_key(self) -> tuple[VaultKeys, bytes]:
        new = secrets.token_bytes(32)
        return VaultKeys({key_id(new): new, **self.keys}, key_id(new), self.path), new


def _write_keys(path: Path, keys: list[bytes]) -> None:
    """Replace the key file whole (a crash leaves the old file or the new one, never half of one)."""
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(k.hex() + "\n" for k in keys))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class Vault:
    """Contacts by profile, sealed (see the module's text)."""

    def __init__(self, path: Path, keys: VaultKeys, durability: str = "process", keep_raw: bool = True) -> None:
        self._db = connect(path, durability)
        self._db.executescript(SCHEMA)
        self.keys = keys
        self.keep_raw = keep_raw  # off: only the identifiers derived at the edge (the subscriber hash)

    def close(self) -> None:
        self._db.close()

    def seal(self, profile_id: str, contact: Contact) -> tuple[str, bytes, bytes]:
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.keys.keys[self.keys.current]).encrypt(
            nonce, orjson.dumps(contact.as_dict()), profile_id.encode()
        )
        return self.keys.current, nonce, sealed

    def unseal(self, profile_id: str, kid: str, nonce: bytes, sealed: bytes) -> Contact:
        key = self.keys.keys.get(kid)
        if key is None:
            raise VaultError(f"the vault row of a profile is sealed under key {kid}, which is not among the keys")
        try:
            data = orjson.loads(AESGCM(key).decrypt(nonce, sealed, profile_id.encode()))
        except InvalidTag:
            raise VaultError("a vault row does not open: damaged, or moved from another profile") from None
        return Contact(data.get("email"), data.get("phone"), data.get("email_md5"))

    def put(self, profile_id: str, contact: Contact, at_ms: int) -> None:
        self.add([Sighting(profile_id, contact, at_ms)])

    def add(self, sightings: Iterable[Sighting]) -> int:
        """Keep the contacts, each merged with what is held (a newer event's values win); how many rows changed."""
        changed = 0
        with Transaction(self._db):
            for s in sightings:
                contact = s.contact if self.keep_raw else s.contact.without_raw()
                row = self._db.execute(
                    "SELECT key_id, nonce, sealed, at_ms FROM contacts WHERE profile_id = ?", (s.profile_id,)
                ).fetchone()
                at_ms = s.at_ms
                if row is not None:
                    held = self.unseal(s.profile_id, row[0], row[1], row[2])
                    contact = held.merged(contact) if s.at_ms >= row[3] else contact.merged(held)
                    at_ms = max(at_ms, int(row[3]))
                    if contact == held:
                        continue
                self._db.execute(
                    "INSERT OR REPLACE INTO contacts (profile_id, key_id, nonce, sealed, at_ms) VALUES (?, ?, ?, ?, ?)",
                    (s.profile_id, *self.seal(s.profile_id, contact), at_ms),
                )
                changed += 1
        return changed

    def copy(self, source: str, target: str) -> bool:
        """Give ``target`` the contact ``source`` holds, merged by time with its own
        (an identity merge; the source keeps its row for the deliveries it still owes)."""
        row = self._db.execute(
            "SELECT key_id, nonce, sealed, at_ms FROM contacts WHERE profile_id = ?", (source,)
        ).fetchone()
        if row is None:
            return False
        return self.add([Sighting(target, self.unseal(source, row[0], row[1], row[2]), int(row[3]))]) > 0

    def get(self, profile_id: str) -> Contact | None:
        row = self._db.execute(
            "SELECT key_id, nonce, sealed FROM contacts WHERE profile_id = ?", (profile_id,)
        ).fetchone()
        return None if row is None else self.unseal(profile_id, row[0], row[1], row[2])

    def get_many(self, profile_ids: Iterable[str]) -> dict[str, Contact]:
        """The contacts of several profiles, in one read a few hundred at a time."""
        wanted, found = sorted(set(profile_ids)), {}
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT profile_id, key_id, nonce, sealed FROM contacts WHERE profile_id IN ({marks})", part
            )
            found.update({pid: self.unseal(pid, kid, nonce, sealed) for pid, kid, nonce, sealed in rows})
        return found

    def erase(self, profile_id: str) -> bool:
        with Transaction(self._db):
            gone = self._db.execute("DELETE FROM contacts WHERE profile_id = ?", (profile_id,)).rowcount > 0
        self.checkpoint()  # a reader may hold it back: the service checkpoints again after erasures
        return gone

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM contacts").fetchone()[0])

    def rotate(self) -> dict[str, object]:
        """A new key, and every row sealed again under it. With a key file the
        new key is written first and the file keeps only it once every row is
        sealed again; with ``$SEGFLOW_VAULT_KEYS`` the operator puts the new key
        first and restarts, and this seals the rows again under it."""
        if self.keys.path is None:
            return {"key_id": self.keys.current, "resealed": self.reseal()}
        keys, new = self.keys.with_new_key()
        assert keys.path is not None
        _write_keys(keys.path, list(keys.keys.values()))  # the new key on disk before any row needs it
        self.keys = keys
        resealed = self.reseal()
        self.keys = VaultKeys({keys.current: new}, keys.current, keys.path)
        _write_keys(keys.path, [new])
        return {"key_id": keys.current, "resealed": resealed}

    def reseal(self) -> int:
        """Every sealed row (contacts, and contacts a deletion request still holds)
        not under the current key sealed again under it; how many."""
        with Transaction(self._db):
            rows = self._db.execute(
                "SELECT profile_id, key_id, nonce, sealed FROM contacts WHERE key_id != ?", (self.keys.current,)
            ).fetchall()
            for pid, kid, nonce, sealed in rows:
                self._db.execute(
                    "UPDATE contacts SET key_id = ?, nonce = ?, sealed = ? WHERE profile_id = ?",
                    (*self.seal(pid, self.unseal(pid, kid, nonce, sealed)), pid),
                )
            owed = self._db.execute(
                "SELECT destination, profile_id, key_id, nonce, sealed FROM deletion_requests"
                " WHERE sealed IS NOT NULL AND key_id != ?",
                (self.keys.current,),
            ).fetchall()
            for dest, pid, kid, nonce, sealed in owed:
                self._db.execute(
                    "UPDATE deletion_requests SET key_id = ?, nonce = ?, sealed = ? WHERE destination = ?"
                    " AND profile_id = ?",
                    (*self.seal(pid, self.unseal(pid, kid, nonce, sealed)), dest, pid),
                )
        self.checkpoint()
        return len(rows) + len(owed)

    def checkpoint(self) -> bool:
        """Empty the WAL (it held rows as written: erased or resealed contacts); whether it completed."""
        return checkpoint(self._db)


class Deletions:
    """Deletion requests owed to destinations after an erasure: the erased
    contact stays sealed only until the request is sent, then the record
    keeps who, where, when and the outcome."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._db = vault._db

    def request(self, destinations: Iterable[str], profile_id: str, contact: Contact | None, now_ms: int) -> None:
        """A request per destination; a request still pending keeps the contact it holds
        (an erasure repeated before it is sent has none left to give)."""
        sealed = self.vault.seal(profile_id, contact) if contact is not None else (None, None, None)
        with Transaction(self._db):
            self._db.executemany(
                "INSERT INTO deletion_requests (destination, profile_id, requested_ms, status, key_id, nonce, sealed)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (destination, profile_id) DO UPDATE SET"
                " requested_ms = excluded.requested_ms, attempts = 0, not_before_ms = 0, outcome = NULL,"
                " done_ms = NULL, key_id = coalesce(excluded.key_id, key_id), nonce = coalesce(excluded.nonce, nonce),"
                " sealed = coalesce(excluded.sealed, sealed), status = 'pending'",
                [(d, profile_id, now_ms, *sealed) for d in destinations],
            )

    def due(self, destination: str, now_ms: int, limit: int = 100) -> list[tuple[str, Contact | None, int]]:
        """Pending requests: profile, contact, attempts so far (one whose contact
        does not open is ended as dead, with why: it cannot be sent)."""
        rows = self._db.execute(
            "SELECT profile_id, key_id, nonce, sealed, attempts FROM deletion_requests WHERE destination = ?"
            " AND status = 'pending' AND not_before_ms <= ? ORDER BY requested_ms LIMIT ?",
            (destination, now_ms, limit),
        ).fetchall()
        out = []
        for pid, kid, nonce, sealed, attempts in rows:
            try:
                contact = None if kid is None else self.vault.unseal(pid, kid, nonce, sealed)
            except VaultError as exc:
                self.done(destination, pid, f"not sent: {exc}", now_ms, status="dead")
                continue
            out.append((pid, contact, int(attempts)))
        return out

    def done(self, destination: str, profile_id: str, outcome: str, now_ms: int, status: str = "sent") -> None:
        with Transaction(self._db):
            self._db.execute(
                "UPDATE deletion_requests SET status = ?, outcome = ?, done_ms = ?, key_id = NULL, nonce = NULL,"
                " sealed = NULL WHERE destination = ? AND profile_id = ?",
                (status, outcome, now_ms, destination, profile_id),
            )
        checkpoint(self._db)  # the sealed contact's pages out of the WAL too

    def retry(self, destination: str, profile_id: str, reason: str, at_ms: int) -> None:
        with Transaction(self._db):
            self._db.execute(
                "UPDATE deletion_requests SET attempts = attempts + 1, outcome = ?, not_before_ms = ?"
                " WHERE destination = ? AND profile_id = ?",
                (reason, at_ms, destination, profile_id),
            )

    def of(self, profile_id: str) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT destination, requested_ms, status, attempts, outcome, done_ms FROM deletion_requests"
            " WHERE profile_id = ? ORDER BY destination",
            (profile_id,),
        )
        names = ("destination", "requested_ms", "status", "attempts", "outcome", "done_ms")
        return [dict(zip(names, row, strict=True)) for row in rows]
