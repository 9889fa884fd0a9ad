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
from collections.abc import Mapping, Sequence
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

from serving.destinations.config import AnyDestination
from serving.destinations.fields import Fields
from serving.destinations.http import Refused, Retryable
from serving.destinations.ledger import CANCELLED, PENDING, SKIPPED, SUPPRESSED, Admission, Delivery, Ledger
from serving.destinations.sync import Person
from serving.destinations.webhook import payload
from serving.log import EventLog
from serving.people import People

log = logging.getLogger("segflow.destinations")

IDLE_S = 0.25  # a look at the outbox at least this often (held deliveries, retries due after a restart)
RETRY_AFTER_MARGIN_S = 0.005  # timers may wake a hair early: never before the receiver's Retry-After


class Sender(Protocol):
    async def send(self, deliveries: Sequence[dict[str, Any]]) -> Mapping[str, str]:
        """Deliver a batch; the keys it skipped, with why (a user the platform does not know)."""
        ...


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
    suppressed: int = 0
    skipped: int = 0
    deletions: int = 0
    in_flight: int = 0


class Dispatcher:
    """Delivers one destination's changes from the outbox."""

    def __init__(
        self,
        destination: AnyDestination,
        ledger: Ledger,
        outbox: EventLog,
        sender: Sender,
        fields: Fields,
        people: People | None = None,
    ) -> None:
        d = self.destination = destination
        self.ledger = ledger
        self.outbox = outbox
        self.sender = sender
        self.fields = fields
        self.people = people if destination.email else None  # consent matters to email destinations only
        self.stats = Stats()
        self._wake = asyncio.Event()
        self._busy: set[str] = set()  # users with a batch in flight or waiting for its retry
        self._tasks: set[asyncio.Task[Any]] = set()
        self._erasing: asyncio.Task[int] | None = None
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
                    self._erase()
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
            barred: dict[tuple[str, str], bool] = {}  # whether this round's latest change was a suppressed enter
            for e in entries:
                if not d.wants(e.segment, e.kind):
                    continue
                user_segment = (e.profile_id, e.segment)
                why = self._suppressed(e.profile_id, e.kind)
                if why is None and e.kind == "exit" and self._enter_barred(user_segment, barred, name):
                    why = "its enter was suppressed: nothing to remove"
                barred[user_segment] = why is not None and e.kind == "enter"
                if why is not None:
                    admissions.append(Admission(e, SUPPRESSED, 0, why))
                    continue
                guard = getattr(d, "flap_guard_ms", 0)
                if guard and e.kind == "exit":
                    i = held.pop(user_segment, None)
                    if i is not None and e.at_ms - admissions[i].entry.at_ms <= guard:
                        admissions[i] = Admission(
                            admissions[i].entry, CANCELLED, 0, "flap: left again within the guard"
                        )
                        admissions.append(Admission(e, CANCELLED, 0, "flap: entered within the guard"))
                        continue
                    found = None if e.profile_id in self._busy else self.ledger.held_enter(name, *user_segment)
                    if found is not None and e.at_ms - found[1] <= guard:
                        cancels.append((found[0], "flap: left again within the guard"))
                        admissions.append(Admission(e, CANCELLED, 0, "flap: entered within the guard"))
                        continue
                cap = getattr(d, "frequency_cap", None)
                if cap is not None:
                    recent = [t for t in counted.get(user_segment, []) if t >= e.at_ms - cap.per_ms]
                    sent = self.ledger.sent_since(name, e.profile_id, e.segment, e.at_ms - cap.per_ms)
                    if sent + len(recent) >= cap.count:
                        admissions.append(Admission(e, CANCELLED, 0, f"frequency cap: {cap.count} per {cap.per_ms} ms"))
                        continue
                    counted.setdefault(user_segment, []).append(e.at_ms)
                hold = guard if (guard and e.kind == "enter") else 0
                if hold:
                    held[user_segment] = len(admissions)
                admissions.append(Admission(e, PENDING, now + hold))
            self.ledger.admit(name, admissions, cancels, entries[-1].id, now)
            cancelled = sum(a.status == CANCELLED for a in admissions) + len(cancels)
            suppressed = sum(a.status == SUPPRESSED for a in admissions)
            self.stats.cancelled += cancelled
            self.stats.suppressed += suppressed
            admitted += len(admissions) - cancelled - suppressed
            cursor = entries[-1].id
        return admitted

    def _enter_barred(self, user_segment: tuple[str, str], barred: dict[tuple[str, str], bool], name: str) -> bool:
        """Whether a user's latest enter to this email destination was suppressed (their exit has nothing to undo)."""
        if self.people is None:
            return False
        if user_segment in barred:
            return barred[user_segment]
        return self.ledger.last_kind_status(name, *user_segment) == ("enter", SUPPRESSED)

    def _suppressed(self, profile_id: str, kind: str) -> str | None:
        """Why an enter is not sent to this email destination (exits always are)."""
        if self.people is None or kind != "enter":
            return None
        return self.people.suppressed(profile_id)

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
            skipped: Mapping[str, str] = {}
            async for attempt in retrying:
                with attempt:
                    ids, bodies, skipped = await self._attempt(ids, bodies)
            if not ids:
                return  # every user in it was erased (or unsubscribed) meanwhile
            by_key = {b["key"]: i for i, b in zip(ids, bodies, strict=True)}
            if skipped:
                self.ledger.settle(name, SKIPPED, [(by_key[k], why) for k, why in skipped.items() if k in by_key])
                self.stats.skipped += len(skipped)
            sent = [i for i, b in zip(ids, bodies, strict=True) if b["key"] not in skipped]
            self.ledger.delivered(name, sent, now_ms())
            self.stats.delivered += len(sent)
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

    async def _attempt(
        self, ids: list[int], bodies: list[dict[str, Any]]
    ) -> tuple[list[int], list[dict[str, Any]], Mapping[str, str]]:
        """One attempt of what is still pending of a batch; what it sent, and what the destination skipped."""
        async with self._slots, self._limiter:
            name = self.destination.name
            if self.people is not None:  # unsubscribed since admission: the enter is not sent
                barred = [(i, why) for i, b in zip(ids, bodies, strict=True)
                          if (why := self._suppressed(b["user"], b["kind"])) is not None]  # fmt: skip
                if barred:
                    self.ledger.settle(name, SUPPRESSED, barred)
                    self.stats.suppressed += len(barred)
            pending = self.ledger.attempting(name, ids, now_ms())
            if len(pending) < len(ids):  # erased or suppressed since the batch was made: their bodies go too
                kept = [(i, b) for i, b in zip(ids, bodies, strict=True) if i in pending]
                ids, bodies = [i for i, _ in kept], [b for _, b in kept]
            if not ids:
                return ids, bodies, {}
            self.stats.attempts += 1
            self.stats.in_flight += 1
            try:
                skipped = await self.sender.send(bodies)
            finally:
                self.stats.in_flight -= 1
        return ids, bodies, skipped

    def _failed(self, ids: list[int], state: RetryCallState) -> None:
        outcome = state.outcome
        reason = str(outcome.exception()) if outcome is not None else "failed"
        wait_s = state.next_action.sleep if state.next_action is not None else 0.0
        self.ledger.failed(self.destination.name, ids, reason, now_ms() + int(wait_s * 1000))
        self.stats.retries += 1

    def unsettled(self) -> set[str]:
        """Users with deliveries still pending or in flight here."""
        return self._busy | self.ledger.pending_users(self.destination.name)

    def _erase(self) -> None:
        """Send the deletion requests owed, in a task of their own (a slow platform does not hold deliveries up)."""
        if self.people is None or not hasattr(self.sender, "delete"):
            return
        if self._erasing is None or self._erasing.done():
            self._erasing = asyncio.get_running_loop().create_task(self.erasures())
            self._tasks.add(self._erasing)
            self._erasing.add_done_callback(self._tasks.discard)

    async def erasures(self) -> int:
        """Send the deletion requests an erasure owes this destination; how many were sent.
        A user with a batch in flight waits for it, so no delivery lands after their deletion."""
        delete, people = getattr(self.sender, "delete", None), self.people
        if people is None or delete is None:
            return 0
        d, sent = self.destination, 0
        for profile_id, contact, attempts in people.deletions.due(d.name, now_ms()):
            if profile_id in self._busy:
                continue
            try:
                outcome = await delete(Person(profile_id, contact))
            except Refused as exc:
                people.deletions.done(d.name, profile_id, f"Refused: {exc}", now_ms(), status="dead")
                continue
            except Exception as exc:  # retryable, or unexpected (a bug, an odd answer): back off and try again
                if not isinstance(exc, Retryable):
                    log.exception("destination %s: a deletion request failed unexpectedly", d.name)
                reason = f"{type(exc).__name__}: {exc}"
                if attempts + 1 >= d.max_attempts:
                    people.deletions.done(d.name, profile_id, reason, now_ms(), status="dead")
                else:
                    asked = exc.retry_after if isinstance(exc, Retryable) else None
                    wait_s = asked if asked is not None else min(d.backoff_initial_s * 2**attempts, d.backoff_max_s)
                    people.deletions.retry(d.name, profile_id, reason, now_ms() + int(wait_s * 1000))
                continue
            people.deletions.done(d.name, profile_id, outcome, now_ms())
            self.stats.deletions += 1
            sent += 1
        return sent

    def _dead(self, ids: list[int], reason: str) -> None:
        self.ledger.dead(self.destination.name, ids, reason)
        self.stats.dead += len(ids)
        log.warning("destination %s: %d deliveries dead-lettered (%s)", self.destination.name, len(ids), reason)
