"""The running dispatchers of a service: one per configured destination,
sharing one HTTP client, woken whenever the outbox gains changes."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx

from serving.destinations.config import (
    MAILCHIMP_CONNECTIONS,
    PLATFORMS,
    AnyDestination,
    Destinations,
    KlaviyoDestination,
    MailchimpDestination,
    WebhookDestination,
)
from serving.destinations.dispatcher import Dispatcher, Sender
from serving.destinations.fields import Fields
from serving.destinations.klaviyo import Klaviyo
from serving.destinations.ledger import Ledger
from serving.destinations.mailchimp import Mailchimp
from serving.destinations.sync import Lookup, Platform
from serving.destinations.webhook import Webhook
from serving.log import EventLog
from serving.people import People


def sender(
    d: AnyDestination, client: httpx.AsyncClient, contacts: Lookup, accounts: dict[str, asyncio.Semaphore]
) -> Sender:
    """The adapter that speaks a destination's API (``accounts``: each Mailchimp account's connections)."""
    if isinstance(d, KlaviyoDestination):
        return Klaviyo(d, client, contacts)
    if isinstance(d, MailchimpDestination):
        account = accounts.setdefault(d.key(), asyncio.Semaphore(MAILCHIMP_CONNECTIONS))
        return Mailchimp(d, client, contacts, account)
    assert isinstance(d, WebhookDestination)
    return Webhook(d, client)


class Dispatchers:
    def __init__(
        self, config: Destinations, ledger: Ledger, outbox: EventLog, fields: Fields, people: People | None = None
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        contacts: Lookup = people.contacts if people is not None else (lambda _: {})
        accounts: dict[str, asyncio.Semaphore] = {}
        self.by_name: dict[str, Dispatcher] = {
            d.name: Dispatcher(d, ledger, outbox, sender(d, self.client, contacts, accounts), fields, people)
            for d in config.destinations
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

    def platforms(self) -> list[str]:
        """The configured destinations that are email platforms (owed deletion requests)."""
        return [n for n, d in self.by_name.items() if d.destination.kind in PLATFORMS]

    def platform(self, name: str) -> Platform:
        """The adapter of a configured email platform (KeyError: no such destination, or not a platform)."""
        if name not in self.platforms():
            raise KeyError(name)
        return self.by_name[name].sender  # type: ignore[return-value]

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
