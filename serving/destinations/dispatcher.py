"""One dispatcher per destination, off the request path.

It admits the outbox's new entries into the ledger (the ones the
destination wants; a triggering destination's frequency cap and flap guard
decide here), then sends the pending ones in batches: at most
``concurrency`` requests at once, at most ``rate_per_s`` a second
(aiolimiter), each batch retried by tenacity with exponential backoff and
jitter, or after exactly the ``Retry-After`` a 429 or 503 asked for, until
``max_attempts`` or ``max_age``: then it is a dead letter.

Order per user: a user's deliveries go in outbox order; while one of them
is in flight or waiting for a retry, the user's later ones wait, and one
batch never splits a user's run across two requests in flight.

Delivery is at least once: every attempt is counted in the ledger before it
is made, so a delivery is sent again only after an attempt that failed,
timed out, or was cut short by a crash. Receivers deduplicate by ``key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from serving.destinations.config import Destination
from serving.destinations.fields import Fields
from serving.destinations.ledger import CANCELLED, PENDING, Admission, Delivery, Ledger
from serving.destinations.webhook import Refused, Retryable, payload
from serving.log import EventLog

log = logging.getLogger("segflow.destinations")

IDLE_S = 0.25  # a look at the outbox at least this often (held deliveries, retries due after a restart)
RETRY_AFTER_MARGIN_S = 0.005  # timers may wake a hair early: never before the receiver's Retry-After


class Sender(Protocol):
    async def send(self, deliveries: Sequence[dict[str, Any]]) -> None: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RetryAfterOr(wait_base):
    """Wait what the receiver asked for (``Retry-After``), else the fallback's backoff."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return exc.retry_after + RETRY_AFTER_MARGIN_S
        return float(self.fallback(retry_state))


@dataclass
class Stats:
    delivered: int = 0
    attempts: int = 0
    retries: int = 0
    dead: int = 0
    cancelled: int = 0
    in_flight: int = 0


class Dispatcher:
    """Delivers one destination's changes from the outbox."""

    def __init__(
        self, destination: Destination, ledger: Ledger, outbox: EventLog, sender: Sender, fields: Fields
    ) -> None:
        d = self.destination = destination
        self.ledger = ledger
        self.outbox = outbox
        self.sender = sender
        self.fields = fields
        self.stats = Stats()
        self._wake = asyncio.Event()
        self._busy: set[str] = set()  # users with a batch in flight or waiting for its retry
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(d.concurrency)
        self._limiter = AsyncLimiter(d.rate_per_s, 1.0)
        self._wait = RetryAfterOr(wait_exponential_jitter(initial=d.backoff_initial_s, max=d.backoff_max_s))

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: admit, send, wait for news (or :data:`IDLE_S`)."""
        try:
            while True:
                try:
                    self.admit()
                    self.dispatch()
                except Exception:  # the ledger or the log failed: try again shortly, never stop
                    log.exception("destination %s: dispatch failed", self.destination.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_S)
                self._wake.clear()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- admission ---------------------------------------------------------------

    def admit(self) -> int:
        """The outbox's new entries into the ledger; how many were admitted."""
        d, name = self.destination, self.destination.name
        cursor, admitted = self.ledger.cursor(name), 0
        if cursor is None:  # a new destination: from the changes decided from now on, or all the outbox holds
            cursor = 0 if d.start == "oldest" else self.outbox.last_change_id()
            self.ledger.admit(name, [], [], cursor, now_ms())
        while entries := self.outbox.changes_after(cursor, 1000):
            now = now_ms()
            admissions: list[Admission] = []
            cancels: list[tuple[int, str]] = []
            held: dict[tuple[str, str], int] = {}  # this round's held enters: index into admissions
            counted: dict[tuple[str, str], list[int]] = {}  # this round's deliveries' instants per user and segment
            for e in entries:
                if not d.wants(e.segment, e.kind):
                    continue
                user_segment = (e.profile_id, e.segment)
                if d.flap_guard_ms and e.kind == "exit":
                    i = held.pop(user_segment, None)
                    if i is not None and e.at_ms - admissions[i].entry.at_ms <= d.flap_guard_ms:
                        admissions[i] = Admission(
                            admissions[i].entry, CANCELLED, 0, "flap: left again within the guard"
                        )
                        admissions.append(Admission(e, CANCELLED, 0, "flap: entered within the guard"))
                        continue
                    found = None if e.profile_id in self._busy else self.ledger.held_enter(name, *user_segment)
                    if found is not None and e.at_ms - found[1] <= d.flap_guard_ms:
                        cancels.append((found[0], "flap: left again within the guard"))
                        admissions.append(Admission(e, CANCELLED, 0, "flap: entered within the guard"))
                        continue
                if d.frequency_cap is not None:
                    cap = d.frequency_cap
                    recent = [t for t in counted.get(user_segment, []) if t >= e.at_ms - cap.per_ms]
                    sent = self.ledger.sent_since(name, e.profile_id, e.segment, e.at_ms - cap.per_ms)
                    if sent + len(recent) >= cap.count:
                        admissions.append(Admission(e, CANCELLED, 0, f"frequency cap: {cap.count} per {cap.per_ms} ms"))
                        continue
                    counted.setdefault(user_segment, []).append(e.at_ms)
                hold = d.flap_guard_ms if (d.flap_guard_ms and e.kind == "enter") else 0
                if hold:
                    held[user_segment] = len(admissions)
                admissions.append(Admission(e, PENDING, now + hold))
            self.ledger.admit(name, admissions, cancels, entries[-1].id, now)
            cancelled = sum(a.status == CANCELLED for a in admissions) + len(cancels)
            self.stats.cancelled += cancelled
            admitted += len(admissions) - cancelled
            cursor = entries[-1].id
        return admitted

    # -- sending -----------------------------------------------------------------

    def dispatch(self) -> int:
        """Start sending what is due, in per-user order; how many batches started."""
        d = self.destination
        room = 2 * d.concurrency - len(self._tasks)
        if room <= 0:
            return 0
        now = now_ms()
        blocked = set(self._busy)
        batches: list[list[Delivery]] = []
        batch: list[Delivery] = []
        for delivery in self.ledger.pending(d.name, room * d.batch_size * 4):
            pid = delivery.entry.profile_id
            if pid in blocked:
                continue
            if delivery.not_before_ms > now:  # held by the flap guard or waiting for a retry: the user waits
                blocked.add(pid)
                continue
            if len(batch) >= d.batch_size:
                batches.append(batch)
                blocked.update(x.entry.profile_id for x in batch)  # a user's run never spans two requests
                batch = []
                if len(batches) >= room:
                    break
                if pid in blocked:
                    continue
            batch.append(delivery)
        if batch and len(batches) < room:
            batches.append(batch)
        for b in batches:
            users = {x.entry.profile_id for x in b}
            self._busy |= users
            task = asyncio.get_running_loop().create_task(self._deliver(b, users))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(batches)

    async def _deliver(self, batch: list[Delivery], users: set[str]) -> None:
        d, name = self.destination, self.destination.name
        ids = [x.entry.id for x in batch]
        try:
            bodies = [payload(x.entry, self.fields.of(x.entry, d.fields)) for x in batch]
            attempts_left = d.max_attempts - max(x.attempts for x in batch)
            age_left_s = (d.max_age_ms - (now_ms() - min(x.enqueued_ms for x in batch))) / 1000
            if attempts_left <= 0 or age_left_s <= 0:
                self._dead(ids, "attempts or age exhausted before a restart")
                return
            retrying = AsyncRetrying(
                stop=stop_after_attempt(attempts_left) | stop_after_delay(age_left_s),
                wait=self._wait,
                retry=retry_if_exception_type(Retryable),
                before_sleep=lambda state: self._failed(ids, state),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    ids, bodies = await self._attempt(ids, bodies)
            if not ids:
                return  # every user in it was erased meanwhile
            done = now_ms()
            self.ledger.delivered(name, ids, done)
            self.stats.delivered += len(ids)
        except (Retryable, Refused) as exc:
            self._dead(ids, f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            raise  # shutdown: what was not delivered stays pending
        except Exception:  # a bug, or the ledger failing: pending still, tried again after the longest backoff
            log.exception("destination %s: a batch failed unexpectedly; it stays pending", name)
            await asyncio.sleep(d.backoff_max_s)
        finally:
            self._busy -= users
            self.wake()

    async def _attempt(self, ids: list[int], bodies: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, Any]]]:
        """One attempt of what is still pending of a batch; what it sent."""
        async with self._slots, self._limiter:
            pending = self.ledger.attempting(self.destination.name, ids, now_ms())
            if len(pending) < len(ids):  # erased since the batch was made: their bodies go too
                kept = [(i, b) for i, b in zip(ids, bodies, strict=True) if i in pending]
                ids, bodies = [i for i, _ in kept], [b for _, b in kept]
            if not ids:
                return ids, bodies
            self.stats.attempts += 1
            self.stats.in_flight += 1
            try:
                await self.sender.send(bodies)
            finally:
                self.stats.in_flight -= 1
        return ids, bodies

    def _failed(self, ids: list[int], state: RetryCallState) -> None:
        outcome = state.outcome
        reason = str(outcome.exception()) if outcome is not None else "failed"
        wait_s = state.next_action.sleep if state.next_action is not None else 0.0
        self.ledger.failed(self.destination.name, ids, reason, now_ms() + int(wait_s * 1000))
        self.stats.retries += 1

    def _dead(self, ids: list[int], reason: str) -> None:
        self.ledger.dead(self.destination.name, ids, reason)
        self.stats.dead += len(ids)
        log.warning("destination %s: %d deliveries dead-lettered (%s)", self.destination.name, len(ids), reason)
