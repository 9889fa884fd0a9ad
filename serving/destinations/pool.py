"""The running dispatchers of a service: one per configured destination,
sharing one HTTP client, woken whenever the outbox gains changes."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx

from serving.destinations.config import Destinations
from serving.destinations.dispatcher import Dispatcher
from serving.destinations.fields import Fields
from serving.destinations.ledger import Ledger
from serving.destinations.webhook import Webhook
from serving.log import EventLog


class Dispatchers:
    def __init__(self, config: Destinations, ledger: Ledger, outbox: EventLog, fields: Fields) -> None:
        self.config = config
        self.ledger = ledger
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self.by_name: dict[str, Dispatcher] = {
            d.name: Dispatcher(d, ledger, outbox, Webhook(d, self.client), fields) for d in config.destinations
        }
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(d.run(), name=f"segflow-destination-{n}") for n, d in self.by_name.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.client.aclose()

    def wake(self) -> None:
        for d in self.by_name.values():
            d.wake()

    def status(self) -> list[dict[str, Any]]:
        """Each destination's counts and figures, for ``segflow destinations status``."""
        out = []
        for name, d in self.by_name.items():
            s = d.stats
            oldest = self.ledger.oldest_pending_ms(name)
            out.append({
                "name": name, "kind": d.destination.kind, "url": d.destination.url,
                "counts": self.ledger.counts(name), "cursor": self.ledger.cursor(name) or 0,
                "outbox_last": d.outbox.last_change_id(),
                "attempts": s.attempts, "retries": s.retries, "in_flight": s.in_flight,
                "oldest_undelivered_ms": oldest, "since_start": dataclasses.asdict(s),
            })  # fmt: skip
        return out
