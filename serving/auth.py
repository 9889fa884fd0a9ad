"""Who may do what: the key a request presents, its scope, its origin and its rate.

Segment's HTTP API style Basic auth (the key as user name, empty password)
or a bearer key. Missing or malformed credentials, or a key that is unknown
or revoked, answer 401; a key whose scope does not grant the action answers
403; a key over its rate answers 429 with ``Retry-After``. Keys are never
logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import math

from fastapi import HTTPException, Request, status
from pydantic import SecretStr

from serving.keys import GRANTS, ApiKey, KeyRing, RateLimits
from serving.settings import Settings

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="segflow", Bearer'}


class Credentials(ValueError):
    """An Authorization header that cannot be read."""


def presented_key(request: Request) -> str | None:
    """The key in the Authorization header, or None; :class:`Credentials`
    when the header is there but malformed."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        key = value.strip()
    elif scheme == "basic":
        try:
            key = base64.b64decode(value.strip().encode("ascii"), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeError, ValueError):
            raise Credentials("Basic credentials must be base64 of 'key:' (ASCII)") from None
    else:
        raise Credentials(f"unsupported authorization scheme {scheme[:20]!r} (use Basic or Bearer)")
    if not key:
        raise Credentials("the authorization header holds no key")
    return key


def ring_of(settings: Settings) -> KeyRing:
    """The keys of a service's settings and its keys file."""
    fixed: list[ApiKey] = []
    for scope, given in (
        ("admin", [*settings.admin_keys, *settings.write_keys]),
        ("read", settings.read_keys),
        ("source", settings.source_keys),
    ):
        for i, secret in enumerate(given):
            fixed.append(_settings_key(settings, scope, i, secret))
    return KeyRing(fixed, settings.keys_file)


def _settings_key(settings: Settings, scope: str, i: int, secret: SecretStr) -> ApiKey:
    origins = tuple(settings.source_origins) if scope == "source" else ()
    return ApiKey(f"settings-{scope}-{i + 1}", scope, secret.get_secret_value(), origins)  # type: ignore[arg-type]


class Guard:
    """Checks a request's key for an action (``ingest``, ``read``, ``admin``)."""

    def __init__(self, ring: KeyRing, settings: Settings) -> None:
        self.ring = ring
        self.settings = settings
        self.limits = RateLimits()

    def check(self, request: Request, action: str, secret: str | None = None, in_body: bool = False) -> ApiKey:
        """The request's key if it may do ``action``; else an HTTP error.
        ``secret``: a key given in the body (``writeKey``), which must be a source key."""
        if secret is None:
            try:
                secret = presented_key(request)
            except Credentials as exc:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers=_CHALLENGE) from None
        if secret is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"a key that may {action} is required", _CHALLENGE)
        key = self.ring.find(secret)
        if key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked key", headers=_CHALLENGE)
        if action not in GRANTS[key.scope]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"key {key.id!r} ({key.scope}) may not {action}")
        if in_body and key.scope != "source":
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "only a source key may be given in a request body; send others in a header"
            )
        if key.origins:
            origin = request.headers.get("origin")
            if origin not in key.origins:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"key {key.id!r} is not allowed from this origin")
        self._rate(request, key)
        return key

    def _rate(self, request: Request, key: ApiKey) -> None:
        """The client's own bucket first (a source key), then the key's: a
        client refused for its own rate takes nothing from the key's, so one
        abuser cannot exhaust a public key for every visitor."""
        rate = key.rate_per_s or (self.settings.source_rate_per_s if key.scope == "source" else None)
        wait = 0.0
        if key.scope == "source":
            per_client = self.settings.source_client_rate_per_s
            client = request.client.host if request.client else "?"
            wait = self.limits.wait((key.id, client), per_client, max(1.0, per_client))
        if wait == 0.0 and rate is not None:
            wait = self.limits.wait((key.id,), rate, key.burst or max(1.0, rate))
        if wait > 0:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"key {key.id!r} is over its rate; retry after {wait:.2f}s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
