"""API keys with two scopes: write (ingest, erasure, admin) and read
(profiles, segments). Segment's HTTP API style Basic auth (the key as user
name, empty password) or a bearer key. Keys are compared in constant time,
against every configured key, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from fastapi import HTTPException, Request, status
from pydantic import SecretStr

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="segflow", Bearer'}


def presented_key(request: Request) -> str | None:
    """The key in the Authorization header, or None."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def key_matches(key: str, keys: Sequence[SecretStr]) -> bool:
    given = key.encode()
    found = False
    for k in keys:
        found |= hmac.compare_digest(given, k.get_secret_value().encode())
    return found


def check(request: Request, keys: Sequence[SecretStr], scope: str) -> None:
    """Raise 401 unless the request carries one of ``keys``."""
    key = presented_key(request)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"a {scope} key is required", headers=_CHALLENGE)
    if not key_matches(key, keys):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"this key has no {scope} scope", headers=_CHALLENGE)
