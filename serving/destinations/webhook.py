"""The webhook destination: a signed JSON POST of a batch of changes.

The body is ``{"destination": name, "deliveries": [...]}``, each delivery
the change (its key, user, segment, enter or exit, instant, cause), the
reason's rule and clauses with their values, the scores and cluster, and
the requested fields. The ``Segflow-Signature`` header signs it
(:mod:`serving.destinations.signing`); a receiver verifies it with
:class:`~serving.destinations.signing.Verifier` and deduplicates by ``key``
(delivery is at least once).

Any 2xx is success; 408, 429, 5xx, a timeout or a broken connection can be
retried (``Retry-After`` honoured, in seconds or as an HTTP date); any other
4xx means the receiver refuses the payload: a dead letter at once.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from features.events import format_ms
from serving.destinations.config import Destination
from serving.destinations.signing import HEADER, sign
from serving.outbox import Entry


class Retryable(Exception):
    """An attempt that failed but may succeed later (after ``retry_after`` seconds, if the receiver said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The receiver refused the payload itself: sending it again would not help."""


def payload(entry: Entry, fields: dict[str, Any]) -> dict[str, Any]:
    body = entry.body
    return {
        "key": entry.key,
        "user": entry.profile_id,
        "segment": entry.segment,
        "kind": entry.kind,
        "at": format_ms(entry.at_ms),
        "at_ms": entry.at_ms,
        "cause": entry.cause,
        "decided_ms": entry.recorded_ms,
        "reason": {"config_id": body.get("config_id"), "rule": body.get("rule"), "clauses": body.get("clauses", [])},
        "scores": body.get("scores", {}),
        "cluster": body.get("cluster"),
        "fields": fields,
    }


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now (given as seconds or an HTTP date).

    >>> retry_after("2"), retry_after(None), retry_after("soon")
    (2.0, None, None)
    >>> retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class Webhook:
    """Sends batches to one webhook destination through a shared client."""

    def __init__(self, destination: Destination, client: httpx.AsyncClient) -> None:
        self.destination = destination
        self.client = client
        self.secret = destination.signing_secret()

    async def send(self, deliveries: Sequence[dict[str, Any]]) -> None:
        d = self.destination
        body = orjson.dumps({"destination": d.name, "deliveries": list(deliveries)})
        headers = {"content-type": "application/json", HEADER: sign(self.secret, body)}
        try:
            r = await self.client.post(d.url, content=body, headers=headers, timeout=d.timeout_s)
        except httpx.TimeoutException:
            raise Retryable(f"no answer within {d.timeout_s} s") from None
        except httpx.TransportError as exc:
            raise Retryable(f"connection failed: {type(exc).__name__}") from None
        if r.is_success:
            return
        if r.status_code in (408, 429) or r.status_code >= 500:
            raise Retryable(f"HTTP {r.status_code}", retry_after(r.headers.get("retry-after")))
        raise Refused(f"HTTP {r.status_code} ({len(r.content)} bytes; the body is not kept: it may hold personal data)")
