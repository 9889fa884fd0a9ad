"""The live engine: one path per event, and timers for time alone.

For each accepted event: dedup by ``messageId`` (24 h), write it to the log
(before the caller acknowledges), update the user's profile, read the
vector, score it (online intent, batch intent, cluster), evaluate
memberships, emit the transitions. A heap of timers wakes each profile at its
``next_due`` time, so a window's exit or a deadline's entry happens when it
is due with no new event; stale timers are skipped when popped, so the cost
does not grow with idle profiles.

Time comes from a clock: on the ``event`` clock an event happens at its own
timestamp and the watermark (the newest time seen) drives the timers, as in
replays, previews, demos and tests; on the ``wall`` clock an event happens
when it was received and a background task calls :meth:`Engine.advance`
with the wall time. Either way the engine is deterministic given the log,
which is how recovery restores exactly the acknowledged state: on the wall
clock an event is never dated at or before a time the timers were advanced
to (its receive time is moved just after it, before it is logged), so a
replay, which fires the timers due before each event, fires the same ones
the live ticks did; and the online model learns the samples due before an
event before a purchase can label them, whichever way it got there.

The changes an event causes are logged with it, in one transaction, after
it is applied (the caller rebuilds the state if that write fails); those
the timers cause go to the caller of :meth:`advance`.

Several events of one user at the same instant are evaluated once, after the
last, so no membership flaps within a millisecond.

Identity (:mod:`features.identity`): an ``identify`` with an anonymous id and
a user id, or an ``alias``, joins one profile into another at the call. The
joining profile's state merges into the other's (the merged profile equals
one that had seen both histories), its memberships exit there (cause
``merge``), and the merged profile is evaluated once, with the call itself:
a segment both were in is not entered again. Later events under any joined
id go to the merged profile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from features.events import PURCHASE, Event
from features.identity import IdentityGraph, Merge, event_link
from features.online import FeatureSet, Profile
from segments.config import SegmentConfig
from segments.membership import Memberships, Reason, Transition, evaluate, next_due
from serving import engine_state
from serving.engine_state import Stats, UserState
from serving.log import EventLog
from serving.outbox import Cause, Change
from serving.scorers import Scorers
from serving.store import MemoryStore, ProfileAccess, StateStore, WriteBack

logger = logging.getLogger(__name__)
Clock = Literal["event", "wall"]
DAY_MS = 86_400_000
RECENT_MS = 10 * 60_000  # message ids kept in memory when the log keeps the whole dedup window


@dataclass(slots=True)
class Outcome:
    """What one ingest call did."""

    accepted: int = 0
    duplicates: int = 0
    suppressed: int = 0
    late: int = 0
    changes: list[Change] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)  # profiles joined into others (identity)
    merged_by: list[str] = field(default_factory=list)  # the message id of each merge's linking call


class Engine:
    """Profiles, scores and memberships kept current event by event."""

    def __init__(
        self,
        config: SegmentConfig,
        features: FeatureSet,
        scorers: Scorers,
        *,
        clock: Clock = "event",
        store: StateStore | None = None,
        log: EventLog | None = None,
        dedup_ms: int = DAY_MS,
        tombstone: Callable[[str], str] | None = None,
    ) -> None:
        if clock not in ("event", "wall"):
            raise ValueError(f"clock must be 'event' or 'wall', not {clock!r}")
        missing = [name for name in scorers.feature_names if name not in features.names]
        if missing:
            raise ValueError(f"the models read features this feature set lacks: {missing}")
        self.config = config
        self.features = features
        self.scorers = scorers
        self.clock: Clock = clock
        self.store: StateStore = store if store is not None else MemoryStore()
        self._profiles: ProfileAccess = self.store  # the store, or a batch's write-back view of it
        self.log = log
        self.dedup_ms = dedup_ms
        self.users: dict[str, UserState] = {}
        self.identity = IdentityGraph()
        self.members_of: dict[str, set[str]] = {name: set() for name in config.segments}
        self.suppressed: set[str] = set()  # tombstones of erased users
        self._tombstone = tombstone or _unkeyed_tombstone
        self._rule_read = features.subset_reader(s.name for s in config.specs)
        self.stats = Stats()
        self.watermark = -1
        self.fired_to = -1  # timers were advanced through this time (inclusive)
        self.epoch = 0  # the log record (reload, model swap) this engine's config and models come from
        self.through = 0  # the last log record applied (those, and advances of the event clock)
        self.seq = 0  # the last log sequence number applied
        self._seen: dict[str, tuple[int, str]] = {}  # message id -> (receive time, profile id)
        self._received_mark = -1  # the latest receive time seen
        self._seen_order: deque[tuple[int, str]] = deque()
        self._timers: list[tuple[int, int, str]] = []
        self._due: dict[str, int] = {}
        self._timer_seq = 0

    # -- ingest ----------------------------------------------------------------

    def ingest(self, events: Sequence[Event]) -> Outcome:
        """Accept a request's events: dedup, log, apply; the transitions they caused."""
        out = Outcome()
        fresh: list[Event] = []
        batch_ids: set[str] = set()
        if self.clock == "wall":
            events = self._after_fired(events)
        for e in events:
            if e.message_id in self._seen or e.message_id in batch_ids:
                out.duplicates += 1
            elif self.suppressed and self._tombstone(e.profile_id) in self.suppressed:
                out.suppressed += 1
            else:
                batch_ids.add(e.message_id)
                fresh.append(e)
        if self.log is not None and fresh:  # the log is the dedup window beyond what memory keeps
            since = min(e.received_ms for e in fresh) - self.dedup_ms
            logged = self.log.seen([e.message_id for e in fresh], since)
            if logged:
                out.duplicates += len(logged)
                fresh = [e for e in fresh if e.message_id not in logged]
        self.stats.duplicates += out.duplicates
        self.stats.suppressed += out.suppressed
        self._apply_all(fresh, out)
        if self.log is not None and fresh:
            links: list[tuple[int, str, str, int]] = []
            if out.merges:
                at = {e.message_id: i for i, e in enumerate(fresh)}
                links = [
                    (at[mid], m.source, m.target, m.at_ms) for m, mid in zip(out.merges, out.merged_by, strict=True)
                ]
            self.seq = self.log.append(fresh, out.changes, links)
        return out

    def _after_fired(self, events: Sequence[Event]) -> Sequence[Event]:
        """On the wall clock, events received at or before the time the timers
        were advanced to (stamped before a tick, applied after it) are moved
        just after it: the log then says what happened, in that order."""
        if not events or min(e.received_ms for e in events) > self.fired_to:
            return events
        after = self.fired_to + 1
        return [e if e.received_ms > self.fired_to else dataclasses.replace(e, received_ms=after) for e in events]

    def replay(
        self, events: Sequence[Event], seq: int | None = None, ends: Sequence[bool | None] | None = None
    ) -> list[Change]:
        """Apply logged events again (recovery): no dedup check, no logging;
        the changes they cause (already in the outbox, if the replay is true).
        ``ends``: for each event, whether its request ended with it (events of
        a user at one instant are evaluated once only within one request)."""
        out = Outcome()
        self._apply_all(events, out, ends)
        if seq is not None:
            self.seq = seq
        return out.changes

    def _apply_all(self, events: Sequence[Event], out: Outcome, ends: Sequence[bool | None] | None = None) -> None:
        if not events:
            return
        view = None
        if not isinstance(self.store, MemoryStore):  # an external store: one read and one write per batch
            view = self._profiles = WriteBack(self.store, {self.identity.resolve(e.profile_id) for e in events})
        try:
            n = len(events)
            for i, e in enumerate(events):
                nxt = events[i + 1] if i + 1 < n else None
                if nxt is not None and (nxt.ts_ms != e.ts_ms or (ends is not None and ends[i])):
                    nxt = None
                self._apply(e, out, nxt)
        finally:
            if view is not None:
                self._profiles = self.store
                view.flush()

    def _time_of(self, event: Event) -> int:
        return event.ts_ms if self.clock == "event" else event.received_ms

    def _erased(self, link: tuple[str, str]) -> bool:
        return bool(self.suppressed) and any(self._tombstone(pid) in self.suppressed for pid in link)

    def _link_of(self, event: Event) -> tuple[str, str] | None:
        """The link an event would make now (None: none; refused: an erased id, or one joined elsewhere)."""
        link = event_link(event) if event.kind != "track" else None
        if link is None or not self.identity.accepts(*link) or self._erased(link):
            return None
        return link

    def _apply(self, event: Event, out: Outcome, nxt: Event | None = None) -> None:
        """Apply one event; ``nxt``: the request's next event when it is at the
        same instant (this profile is then evaluated after it, if it is the
        same profile's or will join it)."""
        t = self._time_of(event)
        self._remember(event)
        if t > self.watermark:
            self._fire(t, inclusive=False, out=out)
            self.watermark = t
        link = event_link(event) if event.kind != "track" else None
        merge = None
        if link is not None and not (self.identity.accepts(*link) and self._erased(link)):  # erased: never again
            conflicts = self.identity.conflicts
            merge = self.identity.link(*link, event.ts_ms)  # None: one profile already, or refused (counted)
            if self.identity.conflicts != conflicts:
                logger.info("an id already joined to another profile was linked elsewhere: the first link stands"
                            " (%d such conflicts)", self.identity.conflicts)  # fmt: skip
        profile = None
        if merge is not None:
            profile = self._merge(merge, t, out)
            out.merged_by.append(event.message_id)
        pid = self.identity.resolve(event.profile_id)
        evaluate_now = nxt is None or not (
            self.identity.resolve(nxt.profile_id) == pid
            or ((joins := self._link_of(nxt)) is not None and self.identity.resolve(joins[0]) == pid)
        )
        if profile is None:
            profile = self._profiles.get(pid)
        if profile is None:
            profile = self.features.new_profile()
        self.stats.events += 1
        out.accepted += 1
        if not self.features.update(profile, event):
            self.stats.late += 1
            out.late += 1
            if merge is not None and evaluate_now:  # the merged profile is evaluated at the merge all the same
                self._profiles.put(pid, profile)
                self._evaluate(pid, profile, max(t, profile.newest), sample=False, out=out)
            return
        self._profiles.put(pid, profile)  # a no-op in memory; an external store keeps the change
        if event.type == PURCHASE:
            self.scorers.online.advance(t)  # what was due before the purchase is learned without it
            self.scorers.online.observe_purchase(pid, event.ts_ms)
        if evaluate_now:
            self._evaluate(pid, profile, max(t, profile.newest), sample=True, out=out)

    def _merge(self, merge: Merge, t: int, out: Outcome) -> Profile | None:
        """Join ``merge.source``'s profile into ``merge.target``'s at ``t``: the
        state merged, the source's memberships exited, its timer and pending
        samples moved. The merged profile (None: neither had one)."""
        source, target = merge.source, merge.target
        joining = self._profiles.get(source)
        profile = self._profiles.get(target)
        if joining is not None:
            if profile is None:
                profile = joining
            else:
                self.features.merge(profile, joining)
            self._profiles.delete(source)
        state = self.users.pop(source, None)
        if state is not None:
            at = max(t, state.evaluated_ms)  # never before the profile's own last decision (a late link)
            reason = Reason(self.config.config_id, "joined another profile (identity merge)", ())
            for segment in list(state.members.entered):
                self.members_of[segment].discard(source)
                before = state.last.get(segment)
                nth = state.nth.get(segment, 0) + 1 if before is not None and before.at_ms == at else 0
                self.stats.transitions[(segment, "exit")] += 1
                out.changes.append(
                    Change(source, Transition(segment, "exit", at, reason), "merge", state.scores, state.cluster, nth)
                )
        self._due.pop(source, None)
        self.scorers.online.merge(source, target)
        out.merges.append(merge)
        return profile

    def _remember(self, event: Event) -> None:
        """Keep a message id by its receive time (on either clock): the whole
        dedup window without a log, the last :data:`RECENT_MS` with one (the
        log holds the rest, persisted), so memory stays bounded."""
        seen, order = self._seen, self._seen_order
        t = event.received_ms
        seen[event.message_id] = (t, event.profile_id)
        order.append((t, event.message_id))
        if t > self._received_mark:
            self._received_mark = t
        horizon = self._received_mark - (self.dedup_ms if self.log is None else min(self.dedup_ms, RECENT_MS))
        while order and order[0][0] < horizon:
            _, mid = order.popleft()
            kept = seen.get(mid)
            if kept is not None and kept[0] < horizon:
                del seen[mid]

    # -- evaluation ------------------------------------------------------------

    def rescore(self, t: int) -> list[Change]:
        """Every profile scored again at ``t`` by the models now in force, and its
        memberships evaluated: what a swap of models changes (cause ``reload``),
        with no event replayed. No moment is sampled for the online model to
        learn from (its samples due by ``t`` are learned, as at any instant)."""
        out = Outcome()
        for pid in sorted(self.users):
            profile = self._profiles.get(pid)
            if profile is not None:
                self.users[pid].scores = {}
                self._evaluate(pid, profile, t, sample=False, out=out, cause="reload")
        return out.changes

    def _evaluate(
        self, pid: str, profile: Profile, t: int, sample: bool, out: Outcome | None, cause: Cause | None = None
    ) -> None:
        """Memberships at ``t``. An event (``sample``) reads the whole vector and
        scores it; a timer reads only what the rules read and keeps the scores
        of the user's last event, since time alone moves windows, not models."""
        state = self.users.get(pid)
        if state is None:
            state = self.users[pid] = UserState()
        if sample or not state.scores:
            vector = self.features.read(profile, t)
            state.scores = self.scorers.scores(pid, vector, t, sample)
            state.cluster = self.scorers.cluster(vector)
        else:
            vector = self._rule_read(profile, t)
        scores, cluster = state.scores, state.cluster
        state.evaluated_ms = t
        if sample:
            intent = scores["intent"]
            if 0.0 <= intent <= 1.0:
                self.stats.scores[min(int(intent * 10), 9)] += 1
                self.stats.score_sum += intent
        new, transitions = evaluate(self.config, vector, scores, cluster, state.members, t)
        state.members = new
        for tr in transitions:
            before = state.last.get(tr.segment)
            nth = state.nth.get(tr.segment, 0) + 1 if before is not None and before.at_ms == tr.at_ms else 0
            if nth:
                state.nth[tr.segment] = nth
            else:
                state.nth.pop(tr.segment, None)
            change = Change(pid, tr, cause or ("event" if sample else "time"), scores, cluster, nth)
            state.last[tr.segment] = tr
            members = self.members_of[tr.segment]
            if tr.kind == "enter":
                members.add(pid)
            else:
                members.discard(pid)
            self.stats.transitions[(tr.segment, tr.kind)] += 1
            if out is not None:
                out.changes.append(change)
        self._schedule(pid, profile, new, t)

    def _schedule(self, pid: str, profile: Profile, members: Memberships, t: int) -> None:
        due = next_due(self.config, self.features, profile, members, t)
        if due is None:
            self._due.pop(pid, None)
            return
        if self._due.get(pid) == due:
            return
        self._due[pid] = due
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, pid))

    def _fire(self, limit: int, inclusive: bool, out: Outcome | None) -> None:
        """Wake every profile due before ``limit`` (or at it, when inclusive), in time order."""
        timers, dues = self._timers, self._due
        while timers and (timers[0][0] < limit or (inclusive and timers[0][0] == limit)):
            due, _, pid = heapq.heappop(timers)
            if dues.get(pid) != due:
                continue  # stale: rescheduled or erased since
            del dues[pid]
            profile = self._profiles.get(pid)
            if profile is None:
                continue
            self._evaluate(pid, profile, due, sample=False, out=out)

    def advance(self, now_ms: int) -> list[Change]:
        """Move the clock to ``now_ms``: every timer due by then fires, at its own due time."""
        out = Outcome()
        self._fire(now_ms, inclusive=True, out=out)
        self.fired_to = max(self.fired_to, now_ms)
        if now_ms > self.watermark:
            self.watermark = now_ms
            self.scorers.online.advance(now_ms)
        return out.changes

    def pass_clock(self, now_ms: int) -> list[Change]:
        """Move the event clock to ``now_ms`` as another profile's event then
        would: the timers due before it fire (a backtest replays some
        profiles on the clock of the whole history this way)."""
        out = Outcome()
        if now_ms > self.watermark:
            self._fire(now_ms, inclusive=False, out=out)
            self.watermark = now_ms
        return out.changes

    def next_timer(self) -> int | None:
        """When the earliest live timer is due."""
        timers, dues = self._timers, self._due
        while timers and dues.get(timers[0][2]) != timers[0][0]:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    # -- reads -----------------------------------------------------------------

    def vector(self, pid: str, at_ms: int | None = None) -> dict[str, Any] | None:
        profile = self.store.get(pid)
        if profile is None:
            return None
        return self.features.read(profile, self.watermark if at_ms is None else at_ms)

    def sizes(self) -> dict[str, int]:
        return {name: len(members) for name, members in self.members_of.items()}

    # -- state ---------------------------------------------------------------

    def export_state(self, profiles: dict[str, Profile] | None = None) -> dict[str, Any]:
        """Everything recovery needs, as explicit values: :func:`serving.engine_state.export_state`."""
        return engine_state.export_state(self, profiles)

    def restore_state(self, state: dict[str, Any]) -> None:
        """Load an exported state into this fresh engine: :func:`serving.engine_state.restore_state`."""
        engine_state.restore_state(self, state)

    def reschedule(self) -> None:
        """Set every profile's timer afresh (after a restore)."""
        self._timers, self._due = [], {}
        for pid, profile in self.store.items():
            user = self.users.get(pid)
            if user is not None:
                self._schedule(pid, profile, user.members, max(user.evaluated_ms, profile.newest))

    # -- erasure ---------------------------------------------------------------

    def erase(self, pid: str) -> bool:
        """Forget a user everywhere, with every id linked to theirs, and drop
        their later events under any of those ids."""
        known = False
        for linked in self.identity.erase(pid):
            known = self._erase_one(linked) or known
        return known

    def _erase_one(self, pid: str) -> bool:
        known = self.store.delete(pid)
        state = self.users.pop(pid, None)
        known = known or state is not None
        if state is not None:
            for name in state.members.entered:
                self.members_of[name].discard(pid)
        self._due.pop(pid, None)
        self.scorers.online.forget(pid)
        for mid in [m for m, (_, p) in self._seen.items() if p == pid]:
            del self._seen[mid]
        tombstone = self._tombstone(pid)
        if self.log is not None:
            known = self.log.erase(pid, tombstone) > 0 or known
        self.suppressed.add(tombstone)
        return known


def _unkeyed_tombstone(pid: str) -> str:
    return "erased_" + hashlib.blake2b(pid.encode(), digest_size=16).hexdigest()


def retire(engine: Engine) -> None:
    """Let a replaced engine go a piece at a time in a thread of its own:
    freeing it in one go would hold the interpreter for as long."""

    def dismantle() -> None:
        for part in (engine.users, engine._seen, engine._due):
            while part:
                for _ in range(min(len(part), 1000)):
                    part.popitem()
                time.sleep(0)
        if isinstance(engine.store, MemoryStore):
            while engine.store.forget_some(1000):
                time.sleep(0)

    threading.Thread(target=dismantle, name="segflow-retire", daemon=True).start()
