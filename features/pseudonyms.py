"""Keyed pseudonymization of personal data at the edge.

Personal data (email, phone, IP, names) is never stored raw: it is replaced by
a keyed hash (BLAKE2b in keyed mode, a MAC) so the same person maps to the same
pseudonym inside one installation while nobody without the key can reverse or
dictionary-attack it. The key comes from settings, never from the code: the
embedded default generates one on first run and keeps it outside the repository
(``$SEGFLOW_HOME/pii.key``, by default ``~/.segflow/pii.key``, mode 0600).

>>> p = Pseudonymizer(b"k" * 32)
>>> alias = p("Alice@Example.com ")
>>> alias == p("alice@example.com"), alias.startswith("pii_"), len(alias)
(True, True, 36)
>>> p(alias) == alias  # pseudonymizing twice changes nothing
True
>>> p.scrub_text("see https://x.io/?e=bob%40mail.com now").startswith("see https://x.io/?e=pii_")
True
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

PREFIX = "pii_"
_DIGEST_BYTES = 16
_PSEUDONYM = re.compile(r"pii_[0-9a-f]{32}\Z")
EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.ASCII)
# A phone number: E.164 with a leading '+', or a national number written with
# separators. Plain digit strings are not phones: shops use numeric user ids.
PHONE = re.compile(r"(?:\+\d[\d\s().-]{6,18}\d|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4})\Z")

_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_PHONE_IN_TEXT = re.compile(r"\+\d[\d\s().-]{6,18}\d")

KEY_ENV = "SEGFLOW_PII_KEY"
HOME_ENV = "SEGFLOW_HOME"


class Pseudonymizer:
    """Replaces a personal value by ``pii_`` and 32 hex digits of a keyed hash."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError(f"pseudonymization key is {len(key)} bytes; it needs at least 16")
        self._key = key[:64]

    def __call__(self, value: str) -> str:
        if _PSEUDONYM.match(value):
            return value
        normal = value.strip().lower().replace("%40", "@")
        digest = hashlib.blake2b(normal.encode(), key=self._key, digest_size=_DIGEST_BYTES)
        return PREFIX + digest.hexdigest()

    def tombstone(self, value: str) -> str:
        """A keyed hash that recognizes ``value`` again without holding it
        (what erasure keeps to drop a user's later events)."""
        return "erased_" + hashlib.blake2b(value.encode(), key=self._key, digest_size=_DIGEST_BYTES).hexdigest()

    def scrub_text(self, text: str) -> str:
        """Replace every email address inside ``text`` by its pseudonym."""
        if "@" not in text and "%40" not in text:
            return text
        return EMAIL.sub(lambda m: self(m.group(0)), text)

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymizer(<key hidden>)"


def looks_personal(identifier: str) -> bool:
    """Whether an id looks like an email address or a phone number.

    >>> looks_personal("alice@example.com"), looks_personal("+44 20 7946 0958")
    (True, True)
    >>> looks_personal("543462"), looks_personal("u-000017")
    (False, False)
    """
    return ("@" in identifier and EMAIL.fullmatch(identifier) is not None) or (PHONE.match(identifier) is not None)


def redact(text: str) -> str:
    """Text safe for errors and logs: emails, IPv4 addresses and phone numbers
    replaced by placeholders (no key needed, nothing recoverable).

    >>> redact("bad timestamp 'bob@x.io' from 10.1.2.3")
    "bad timestamp '<email>' from <ip>"
    """
    text = EMAIL.sub("<email>", text)
    text = _IPV4.sub("<ip>", text)
    return _PHONE_IN_TEXT.sub("<phone>", text)


def segflow_home() -> Path:
    """Where segflow keeps its local state outside the repository."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".segflow")


def load_key(path: Path | None = None) -> bytes:
    """The pseudonymization key: ``$SEGFLOW_PII_KEY`` (hex), else the key file,
    generated with 32 random bytes on first use."""
    env = os.environ.get(KEY_ENV)
    if env:
        try:
            return bytes.fromhex(env)
        except ValueError as exc:
            raise ValueError(f"{KEY_ENV} must be hex digits ({exc})") from None
    path = path or segflow_home() / "pii.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())
