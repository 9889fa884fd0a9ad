"""Webhook signatures, Stripe-style: HMAC-SHA256 over ``"{t}.{n}.{body}"``
in the ``Segflow-Signature`` header as ``t=<unix seconds>,n=<nonce>,v1=<hex>``.

A receiver checks the signature with the shared secret and refuses a
delivery whose timestamp is older than the tolerance (a replayed one) or
whose body was changed on the way (a tampered one). Each attempt has a
nonce of its own, so a retry of the same body within the same second is not
mistaken for a replay, while a request sent again as it was is (see
:class:`Verifier`). Several ``v1`` values may be given while a secret is
rotated; one that matches is enough.

>>> header = sign("whsec_test", b'{"a":1}', timestamp=1_800_000_000, nonce="ab12")
>>> header.startswith("t=1800000000,n=ab12,v1=")
True
>>> verify("whsec_test", b'{"a":1}', header, now=1_800_000_010)
1800000000
>>> verify("whsec_test", b'{"a":2}', header, now=1_800_000_010)
Traceback (most recent call last):
...
serving.destinations.signing.SignatureError: the signature does not match the body (tampered, or another secret)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "Segflow-Signature"
TOLERANCE_S = 300


class SignatureError(ValueError):
    """A delivery that must not be trusted; the message says why."""


def sign(secret: str, body: bytes, timestamp: int | None = None, nonce: str | None = None) -> str:
    """The signature header for ``body`` sent at ``timestamp`` (now), under a fresh nonce."""
    t = int(time.time()) if timestamp is None else timestamp
    n = secrets.token_hex(8) if nonce is None else nonce
    return f"t={t},n={n},v1={_digest(secret, t, n, body)}"


def verify(
    secret: str, body: bytes, header: str | None, tolerance_s: int = TOLERANCE_S, now: float | None = None
) -> int:
    """Check a delivery: the timestamp it was signed at, or SignatureError
    (no or malformed header, a stale or future timestamp, a signature that
    does not match the body)."""
    t, n, signatures = parse(header)
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        raise SignatureError(f"the timestamp is {int(current - t)} s from now, beyond {tolerance_s} s (a replay?)")
    expected = _digest(secret, t, n, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise SignatureError("the signature does not match the body (tampered, or another secret)")
    return t


def parse(header: str | None) -> tuple[int, str, list[str]]:
    """A header's timestamp, nonce and signatures; SignatureError unless it
    has exactly one ``t`` (ASCII digits), one ``n`` and at least one ``v1``."""
    if not header:
        raise SignatureError(f"no {HEADER} header")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    t, n, signatures = fields.get("t", []), fields.get("n", []), [v for v in fields.get("v1", []) if v]
    if len(t) != 1 or not (t[0].isascii() and t[0].isdigit()) or len(n) != 1 or not n[0] or not signatures:
        raise SignatureError(f"a malformed {HEADER} header (expected t=<seconds>,n=<nonce>,v1=<hex>)")
    return int(t[0]), n[0], signatures


def _digest(secret: str, t: int, nonce: str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.{nonce}.".encode() + body, hashlib.sha256).hexdigest()


class Verifier:
    """:func:`verify`, and refuse a delivery seen before: within the
    tolerance a replayed request would otherwise pass, so each nonce is
    remembered until its timestamp is stale anyway (a request sent again,
    however its header is respelled, carries the same nonce).

    >>> v = Verifier("whsec_test")
    >>> header = sign("whsec_test", b"{}")
    >>> v.check(b"{}", header) > 0
    True
    >>> v.check(b"{}", header)
    Traceback (most recent call last):
    ...
    serving.destinations.signing.SignatureError: this delivery was received before (a replay)
    """

    def __init__(self, secret: str, tolerance_s: int = TOLERANCE_S) -> None:
        self.secret = secret
        self.tolerance_s = tolerance_s
        self._seen: dict[str, int] = {}  # nonce -> timestamp

    def check(self, body: bytes, header: str | None, now: float | None = None) -> int:
        current = time.time() if now is None else now
        t = verify(self.secret, body, header, self.tolerance_s, current)
        _, nonce, _ = parse(header)
        if nonce in self._seen:
            raise SignatureError("this delivery was received before (a replay)")
        for old in [n for n, at in self._seen.items() if current - at > self.tolerance_s]:
            del self._seen[old]
        self._seen[nonce] = t
        return t
