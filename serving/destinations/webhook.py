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

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from features.events import format_ms
from serving.destinations.config import WebhookDestination
from serving.destinations.http import call
from serving.destinations.signing import HEADER, sign
from serving.outbox import Entry


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


class Webhook:
    """Sends batches to one webhook destination through a shared client."""

    def __init__(self, destination: WebhookDestination, client: httpx.AsyncClient) -> None:
        self.destination = destination
        self.client = client
        self.secret = destination.signing_secret()

    async def send(self, deliveries: Sequence[dict[str, Any]]) -> Mapping[str, str]:
        d = self.destination
        body = orjson.dumps({"destination": d.name, "deliveries": list(deliveries)})
        headers = {"content-type": "application/json", HEADER: sign(self.secret, body)}
        await call(self.client, "POST", d.url, d.timeout_s, content=body, headers=headers)
        return {}
