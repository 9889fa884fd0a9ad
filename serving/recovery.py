"""Replay: the engine as its log says it was.

The log holds the events, and a record of every reload and model swap (the
config and models in force from that point on). A replay honours them: it
applies the events under the config and models in force at each point, and
at a record does what the live service did then:

- fire the timers due before the record's instant (the live service did
  just before it swapped);
- a model swap: the new batch and cluster models; the online model keeps
  what it learned;
- an advance of the event clock (``POST /v1/admin/advance``): the timers
  due by then fire, as they did;
- a rebuild (another config or feature set): a new engine under the
  record's config and models, over the log up to the record and its timers
  up to the instant, silently (that history was lived under the config
  before), then the net membership changes between the two, at the instant.

So a recovery after a reload does not re-key history. Every change a replay
derives outside a silent rebuild was written to the outbox by the live
service with its cause; one that is not there is a *divergence*: counted,
logged, and never sent (the outbox is what was decided).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from features.events import Event
from features.identity import IdentityGraph
from segments.config import SegmentConfig
from segments.membership import Reason, Transition
from serving.engine import Engine
from serving.log import EventLog, Logged, Record
from serving.outbox import Change
from serving.scorers import Scorers

log = logging.getLogger("segflow.recovery")

ADVANCE = "advance"  # a record of the event clock moved by hand (it names the config in force, not a new one)
SWAP = "swap"  # models swapped under the same config and features, everyone scored again (since issue 18)
MODELS = "models"  # models swapped, scores kept until each user's next event (logs written before swaps rescored)

CHUNK = 5000


def replay_into(
    engine: Engine, rows: Iterable[Logged], after: int, seen: Callable[[list[Change]], None] | None = None
) -> tuple[int, int]:
    """Logged rows into ``engine``, about :data:`CHUNK` at a time (each chunk
    ends where a request did, so the same events are evaluated together
    however the log is cut), handing the changes they cause to ``seen``; how
    many events, and the last position (``after`` when there were none)."""
    n, last = 0, after
    chunk: list[Event] = []
    ends: list[bool | None] = []

    def flush() -> None:
        changes = engine.replay(chunk, last, ends)
        if seen is not None and changes:
            seen(changes)

    for seq, event, end in rows:
        chunk.append(event)
        ends.append(end)
        last = seq
        if len(chunk) >= CHUNK and end is not False:  # at a request's end: where live evaluation stopped
            flush()
            n += len(chunk)
            chunk, ends = [], []
    flush()
    return n + len(chunk), last


def net_changes(old: Engine, new: Engine, at_ms: int) -> list[Change]:
    """The membership changes a reload from ``old`` to ``new`` makes, at
    ``at_ms``, each with the new engine's reason where it has one; in user
    then segment order."""
    changes = []
    for pid in sorted(old.users.keys() | new.users.keys()):
        was = old.users.get(pid)
        now = new.users.get(pid)
        before = set(was.members.entered) if was is not None else set()
        after = set(now.members.entered) if now is not None else set()
        for segment in sorted(before ^ after):
            kind = "enter" if segment in after else "exit"
            last = now.last.get(segment) if now is not None else None
            if last is not None and last.kind == kind:
                reason = last.reason
            else:
                seg = new.config.segments.get(segment)
                rule = seg.rule.text.strip() if seg is not None else "(not in the reloaded config)"
                reason = Reason(new.config.config_id, rule, ())
            scores = now.scores if now is not None else {}
            cluster = now.cluster if now is not None else None
            changes.append(Change(pid, Transition(segment, kind, at_ms, reason), "reload", scores, cluster))
    return changes


Regime = Callable[[Record | None], tuple[SegmentConfig, Scorers]]
NewEngine = Callable[[SegmentConfig, Scorers], Engine]


@dataclass
class Replay:
    """Replays of one log: ``regime`` gives the config and models of a
    record (None: those configured now), ``new_engine`` an empty engine."""

    log: EventLog
    new_engine: NewEngine
    regime: Regime
    divergent: int = 0
    checked: int = 0
    derived: set[str] = dataclasses.field(default_factory=set)  # the keys of every change checked

    def rebuild(self, record: Record | None, upto: int | None = None) -> Engine:
        """A new engine under ``record``'s config and models, over the log up
        to the record (or ``upto``), its timers fired up to the record's
        instant: silently, as a reload builds it."""
        config, scorers = self.regime(record)
        engine = self.new_engine(config, scorers)
        engine.suppressed = self.log.suppressed()
        engine.identity = IdentityGraph.of(self.log.links_beyond())  # links older than what the log keeps
        end = record.seq if record is not None else upto
        replay_into(engine, self.log.read(0, end), 0)
        if record is not None:
            engine.advance(record.at_ms - 1)
            engine.epoch = engine.through = record.id
        return engine

    def forward(self, engine: Engine) -> Engine:
        """The log after ``engine.seq`` into ``engine``, honouring every
        record after its own: the engine at the log's end (another one after
        a rebuild)."""
        for record in self.log.records():
            if record.id <= engine.through:
                continue
            replay_into(engine, self.log.read(engine.seq, record.seq), engine.seq, self.check)
            engine = self.apply(engine, record)
        replay_into(engine, self.log.read(engine.seq), engine.seq, self.check)
        return engine

    def apply(self, engine: Engine, record: Record) -> Engine:
        """What the live service did at ``record``."""
        if record.kind == ADVANCE:  # the event clock moved by hand
            self.check(engine.advance(record.at_ms))
            engine.through = record.id
            return engine
        self.check(engine.advance(record.at_ms - 1))
        if record.kind in (SWAP, MODELS):
            _, scorers = self.regime(record)
            engine.scorers = dataclasses.replace(scorers, online=engine.scorers.online)
            if record.kind == SWAP:
                self.check(engine.rescore(record.at_ms))  # as the live service re-evaluated everyone then
            engine.epoch = engine.through = record.id
            return engine
        new = self.rebuild(record)
        new.suppressed = engine.suppressed
        self.check(net_changes(engine, new, record.at_ms))
        return new

    def check(self, changes: Sequence[Change]) -> None:
        """Count the replayed changes the outbox does not hold."""
        if not changes:
            return
        keys = {c.key for c in changes}
        missing = keys - self.log.outbox_keys(keys)
        self.checked += len(keys)
        self.derived |= keys
        if missing:
            self.divergent += len(missing)
            log.warning("replay derived %d changes the live service did not record", len(missing))
