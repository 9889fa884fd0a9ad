"""The embedded service: an engine with its log, snapshots, models and config.

Start opens the log, restores the latest snapshot and replays the log after
it, honouring the reloads and model swaps the log records (see
:mod:`serving.recovery`), so the state is exactly what was acknowledged;
then, if the config file or the registered models changed meanwhile, it
reloads (:mod:`serving.reloading`).
"""

from __future__ import annotations

import copy
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from features.contacts import Sighting
from features.events import Event
from features.online import FeatureSet
from features.pseudonyms import Pseudonymizer, load_key
from features.segment_spec import SegmentParser
from segments.config import SegmentConfig
from serving import reloading, snapshot
from serving.destinations.config import PLATFORMS, Destinations
from serving.destinations.fields import Fields
from serving.destinations.ledger import Ledger
from serving.engine import DAY_MS, Engine, Outcome
from serving.log import EventLog, Record
from serving.outbox import Change
from serving.people import People
from serving.quarantine import Quarantine
from serving.recovery import ADVANCE, Replay
from serving.regime import build_features, intent_feature_names, load_config, loads_config, longest_window_ms
from serving.reloading import Readiness, Rebuild
from serving.scorers import INTENT, Scorers, load_scorers
from serving.settings import Settings
from serving.store import MemoryStore, StateStore, open_store
from serving.vault import VaultKeys

log = logging.getLogger("segflow.service")


class Service:
    """One process's segflow: ingest, reads, erasure, snapshots, reload."""

    def __init__(self, settings: Settings, scorers: Scorers | None = None) -> None:
        self.settings = settings
        self.pseudonymizer = Pseudonymizer(load_key())
        self._given_scorers = copy.deepcopy(scorers)  # as given: each start or reload begins from these
        self._registered: Scorers | None = None  # as the registry had them at the last start or reload
        self.readiness = Readiness()
        self.engine: Engine | None = None
        self.log: EventLog | None = None
        self.quarantine: Quarantine | None = None
        self.ledger: Ledger | None = None  # where each change stands with each destination
        self.people: People | None = None  # contacts (the vault), consent, deletion requests owed
        self.destinations = Destinations()
        self.changed: Callable[[], None] = lambda: None  # told when the outbox gains changes (the dispatchers)
        self.parser: SegmentParser | None = None  # checks what the features in force read
        self._last_snapshot = time.monotonic()
        self._snapshot_seqs: list[int] = []  # log positions of the two latest snapshots this process knows
        self._writer = snapshot.Writer(self.snapshot_path, self.previous_snapshot_path, settings.durability == "power")
        self._erasure_waits = 0  # erasures not yet in a written snapshot
        self._writing_erasures = 0  # ... of which the snapshot being written holds
        self._wal_dirty = False  # an erasure's rows may still be in a WAL
        self._erased_meanwhile: list[str] | None = None  # erasures while a rebuild is prepared
        self.generation = 1  # of the external store's prefix
        self.reloading = False
        self.divergent = 0  # changes a recovery derived that the outbox did not hold (0 when replay is exact)
        self.due_lag_ms: deque[int] = deque(maxlen=100_000)  # wall clock: due time to emitted transition

    # -- lifecycle -------------------------------------------------------------

    @property
    def snapshot_path(self) -> Path:
        return self.settings.state_dir / "snapshot.bin"

    @property
    def previous_snapshot_path(self) -> Path:
        return self.settings.state_dir / "snapshot.prev.bin"

    @property
    def _generation_path(self) -> Path:
        return self.settings.state_dir / "store.generation"

    def _set_generation(self, generation: int) -> None:
        """Make ``generation`` the store's live one, and drop the one before it."""
        before = self.generation
        self._generation_path.write_text(str(generation))
        self.generation = generation
        if before != generation:
            self._drop_generation(before)

    def _drop_generation(self, generation: int) -> None:
        if self.settings.store != "memory" and self.engine is not None:
            open_store(self.settings.store, self.engine.features, f"{self.settings.store_prefix}g{generation}:").clear()

    def start(self) -> Service:
        s = self.settings
        self._registered = None
        self.destinations = Destinations.load(s.destinations)  # a broken file stops the start, naming the problem
        self.log = EventLog(s.state_dir / "events.db", s.durability)
        self.ledger = Ledger(s.state_dir / "events.db", s.durability)
        try:
            previous: int | None = int(self._generation_path.read_text())
        except (OSError, ValueError):
            previous = None
        self.generation = previous or 0
        self.quarantine = Quarantine(s.state_dir / "quarantine.db", s.durability, s.quarantine_max)
        keys = VaultKeys.load(s.vault_key_file)
        self.people = People(s.state_dir, self.pseudonymizer, keys, s.durability, keep_raw=s.vault)
        self.engine = self._recover(self.generation + 1)
        self._set_generation(self.generation + 1)  # and the last run's profiles go (erasure leaves none behind)
        self.parser = self._parser(self.engine)
        if not self.log.records():  # a new log (or one from before records): what is in force from here
            at = self._instant(self.engine)
            fired = self.engine.advance(at - 1)
            self._record(self.engine, "rebuild", self.settings.segments.read_text(), fired, at)
        else:
            self.finish_reload(self.prepare_reload(reread=False))  # the config or models changed while it was down
        scorers = self.engine.scorers
        if scorers.drift is not None:
            scorers.drift.reset()  # drift counts live events, not the log replayed at start
        # the recovered state lives as long as the process: keep the cyclic GC from rescanning it
        gc.collect()
        gc.freeze()
        self.readiness = Readiness(True, self._notes(scorers))
        for note in self.readiness.notes:
            log.warning(note)
        return self

    def fresh_scorers(self) -> Scorers:
        """A fresh copy of the models in force, as loaded (nothing learned
        live): as given, or as registered (read from the registry once a
        start or a reload, not at each use); ``intent`` made as settings say."""
        if self._given_scorers is not None:
            scorers = copy.deepcopy(self._given_scorers)
        else:
            if self._registered is None:
                self._registered = load_scorers(
                    intent_feature_names(), self.settings.model_alias, self.settings.tracking_uri
                )
            scorers = copy.deepcopy(self._registered)
        scorers.use_intent(self.settings.intent)
        return scorers

    def _notes(self, scorers: Scorers) -> list[str]:
        notes = []
        if scorers.fresh:
            notes.append("no online intent model registered: started a fresh one (run `segflow train --register`)")
        if scorers.batch is None:
            notes.append(f"no batch intent model registered: intent ({scorers.intent}) is the online score")
        elif scorers.intent == "online":
            notes.append("intent is the online score (settings: intent), though a batch model is registered")
        if scorers.clusters is None:
            notes.append("no cluster model registered: cluster rules never hold")
        return notes

    def _parser(self, engine: Engine) -> SegmentParser:
        """The edge's parser: checks the numeric properties these features read."""
        future_ms = int(self.settings.max_future_skew_s * 1000)
        return SegmentParser(self.pseudonymizer, numeric=engine.features.numeric_properties, max_future_ms=future_ms)

    def _new_engine(self, config: SegmentConfig, scorers: Scorers, generation: int | None = None) -> Engine:
        """An empty engine over the configured store. An external store keeps
        each engine's profiles under a prefix of its own generation, cleared
        first, so a rebuild never empties what the live engine serves."""
        assert self.log is not None
        features = build_features(config, scorers)
        gen = self.generation if generation is None else generation
        store = open_store(self.settings.store, features, f"{self.settings.store_prefix}g{gen}:")
        store.clear()
        return self._engine(config, features, scorers, store, self.log)

    def _engine(
        self, config: SegmentConfig, features: FeatureSet, scorers: Scorers, store: StateStore, log: EventLog | None
    ) -> Engine:
        return Engine(
            config, features, scorers, clock=self.settings.clock, store=store, log=log,
            dedup_ms=int(self.settings.dedup_hours * 3_600_000), tombstone=self.pseudonymizer.tombstone,
        )  # fmt: skip

    def audit(self) -> Replay:
        """Replay the whole log from its first record, in engines of its own
        (in memory, touching nothing live), checking every change it derives
        against the outbox: the live service did what its log says when the
        result's ``divergent`` is 0 (its ``derived`` holds the keys)."""
        assert self.log is not None

        def detached(config: SegmentConfig, scorers: Scorers) -> Engine:
            return self._engine(config, build_features(config, scorers), scorers, MemoryStore(), None)

        replay = Replay(self.log, detached, self._regime)
        records = self.log.records()
        replay.forward(replay.rebuild(records[0] if records else None, upto=0))
        return replay

    def _regime(self, record: Record | None) -> tuple[SegmentConfig, Scorers]:
        """The config and models a log record put in force (None: those configured now).
        A recorded config this segflow cannot read, or models the registry no
        longer has, mean those configured now, with a warning."""
        scorers = self.fresh_scorers()
        if record is None:
            return load_config(self.settings.segments), scorers
        scorers.use_intent(record.models.get(INTENT, "auto"))  # as it was made then (auto: before the setting)
        try:
            config = loads_config(record.config, f"the config recorded at log position {record.seq}")
        except Exception as exc:
            log.warning("the recorded config %s cannot be read (%s): using the configured one", record.config_id, exc)
            return load_config(self.settings.segments), scorers
        if self._given_scorers is None and _models(record.models) != _models(scorers.versions):
            try:
                scorers = load_scorers(
                    intent_feature_names(), self.settings.model_alias, self.settings.tracking_uri, record.models
                )
            except Exception as exc:
                log.warning(
                    "the recorded models %s cannot be loaded (%s): using the registered ones", record.models, exc
                )
            scorers.use_intent(record.models.get(INTENT, "auto"))
        return config, scorers

    def _replayer(self, generation: int | None = None) -> Replay:
        assert self.log is not None
        return Replay(self.log, lambda config, scorers: self._new_engine(config, scorers, generation), self._regime)

    def _recover(self, generation: int | None = None) -> Engine:
        """The engine as the log says it was: the latest readable snapshot
        (an unreadable, truncated or outdated one means the one before it,
        else a rebuild from the log), and the log after it, honouring records."""
        assert self.log is not None
        replay = self._replayer(generation)
        records = {r.id: r for r in self.log.records()}
        engine: Engine | None = None
        for path in (self.snapshot_path, self.previous_snapshot_path):
            try:
                state = snapshot.read(path)
                if state is None:
                    continue
                config, scorers = self._regime(records.get(state.get("epoch", 0)))
                engine = self._new_engine(config, scorers, generation)
                engine.suppressed = self.log.suppressed()
                engine.restore_state(state)
                self._snapshot_seqs = [engine.seq]
                if path == self.previous_snapshot_path:  # the latest is unreadable: it must not replace this one
                    self.snapshot_path.unlink(missing_ok=True)
                break
            except Exception as exc:
                log.warning("snapshot %s not used (%s: %s)", path.name, type(exc).__name__, exc)
                engine = None
        started, after = time.perf_counter(), engine.seq if engine is not None else 0
        if engine is None:  # the last rebuild the log records, as it was made (or the configured now, over it all)
            rebuilds = [r for r in records.values() if r.kind == "rebuild"]
            engine = replay.rebuild(rebuilds[-1] if rebuilds else None)
        engine = replay.forward(engine)
        self.divergent += replay.divergent
        log.info(
            "recovered %d profiles (%d events replayed in %.1fs; %d changes checked against the outbox, %d not there)",
            len(engine.users), engine.seq - after, time.perf_counter() - started, replay.checked, replay.divergent,
        )  # fmt: skip
        return engine

    def _record(self, engine: Engine, kind: str, text: str, changes: list[Change], at_ms: int | None = None) -> None:
        """Write the record of what is in force from ``engine.seq`` on, with the changes it made."""
        assert self.log is not None
        at = self._instant(engine) if at_ms is None else at_ms
        versions = engine.scorers.versions
        record = self.log.add_record(engine.seq, at, kind, text, engine.config.config_id, versions, changes)
        engine.through = record.id
        if kind != ADVANCE:
            engine.epoch = record.id

    def _instant(self, engine: Engine) -> int:
        """Now, on the engine's clock (the wall time, or the event clock's
        watermark), and after any time its timers were advanced to: a reload
        happens there, after the timers due before it fire."""
        now = time.time_ns() // 1_000_000 if engine.clock == "wall" else engine.watermark
        return max(now, engine.fired_to + 1, 0)

    def close(self) -> None:
        if self.engine is not None:
            self.save_snapshot()  # waits for one being written, then writes the last
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.quarantine is not None:
            self.quarantine.close()
            self.quarantine = None
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self.people is not None:
            self.people.close()
            self.people = None

    # -- work ------------------------------------------------------------------

    def ingest(self, events: list[Event], sightings: Sequence[Sighting] = ()) -> Outcome:
        """Accept events (and the contacts their identify calls gave, for the
        vault). They are in the log before they are applied: if applying
        fails, the state is rebuilt from the snapshot and the log (so what the
        log holds is applied exactly once) before the error goes on."""
        assert self.engine is not None and self.people is not None
        self.people.observe(events, sightings, self.is_erased, self.engine.identity.resolve)
        applied = self.engine.stats.events
        try:
            outcome = self.engine.ingest(events)
        except Exception:
            if self.engine.stats.events != applied:
                log.error("applying or logging events failed: rebuilding the state from the snapshot and the log")
                self.engine = self._recover()
            raise
        for merge in outcome.merges:  # the person's contact, traits and consent go with the profile
            self.people.merge(merge.source, merge.target)
        if outcome.changes:
            self.changed()
        return outcome

    def advance(self, now_ms: int) -> list[Change]:
        """Move the event clock by hand: the timers due by ``now_ms`` fire; the
        log records the move (a replay makes it again) with their changes."""
        assert self.engine is not None and self.log is not None
        engine = self.engine
        changes = engine.advance(now_ms)
        self._written(lambda: self._record(engine, ADVANCE, "", changes, now_ms))
        if changes:
            self.changed()
        return changes

    def _fire_due(self, now_ms: int) -> list[Change]:
        """The wall clock's tick: the timers due by ``now_ms`` fire; their changes go to the outbox."""
        assert self.engine is not None and self.log is not None
        changes = self.engine.advance(now_ms)
        if changes:
            log_ = self.log
            self._written(lambda: log_.add_changes(changes))
            self.changed()
        return changes

    def _written(self, write: Callable[[], object]) -> None:
        """Write what the engine just decided; if the write fails, the state
        is rebuilt from the snapshot and the log (where those timers are still
        due: the next tick fires them again, with the same keys)."""
        try:
            write()
        except Exception:
            log.error("writing changes to the log failed: rebuilding the state from the snapshot and the log")
            self.engine = self._recover()
            raise

    def fields(self) -> Fields:
        """The profile fields destinations ask for, read from this service."""

        def recent(pid: str) -> list[Event]:
            return self.log.recent(pid, 500) if self.log is not None else []

        def cluster(name: str | None) -> str | None:
            return self.engine.scorers.cluster_description(name) if self.engine is not None else None

        def segment(name: str) -> str | None:
            seg = self.engine.config.segments.get(name) if self.engine is not None else None
            return seg.description if seg is not None else None

        return Fields(recent, cluster, segment)

    def tick(self, now_ms: int) -> None:
        """Housekeeping between requests: due timers (wall clock), snapshots, log trimming."""
        assert self.engine is not None
        if self.settings.clock == "wall":
            # what is due before now: an event received in this millisecond is applied before its timers fire
            fired = self._fire_due(now_ms - 1)
            emitted = time.time_ns() // 1_000_000  # the lag ends when the change is in the outbox
            for change in fired:
                self.due_lag_ms.append(emitted - change.transition.at_ms)
        self._snapshot_done(self._writer.poll())
        self._checkpoint()
        if self._erasure_waits and not self._writer.busy:
            self.save_snapshot(background=True)  # one that holds the erasure
        elif time.monotonic() - self._last_snapshot >= self.settings.snapshot_every_s and not self._writer.busy:
            self.save_snapshot(background=True)

    def save_snapshot(self, background: bool = False) -> None:
        """Write a snapshot, in a forked child when ``background`` (the service
        goes on; :meth:`tick` collects the outcome), else before returning.
        The one before is kept as ``snapshot.prev.bin``. Once written, the log
        is trimmed: only events received before the retention (and the longest
        window), and only those the older of the two snapshots covers, so a
        snapshot that turns out unreadable still has the log behind it."""
        assert self.engine is not None
        if self._writer.busy:
            self._snapshot_done(self._writer.poll(block=True))
        self._last_snapshot = time.monotonic()
        erasures = self._erasure_waits
        engine = self.engine
        if background and not isinstance(engine.store, MemoryStore):
            # an external store goes on changing after the fork: its profiles are read here, as of engine.seq
            profiles = dict(engine.store.items())
            self._writer.start(lambda: engine.export_state(profiles), engine.seq, background)
        else:
            self._writer.start(engine.export_state, engine.seq, background)
        self._writing_erasures = erasures
        if not background:
            self._snapshot_done(True)

    def _snapshot_done(self, ok: bool | None) -> None:
        if ok is None:
            return
        if not ok:
            log.warning("a snapshot could not be written; the next interval retries (the log holds everything)")
            return
        assert self.log is not None and self.engine is not None and self._writer.seq is not None
        seq = self._writer.seq
        if self._writing_erasures:  # the snapshot before still holds erased users: gone, and trimming restarts
            self.previous_snapshot_path.unlink(missing_ok=True)
            self._erasure_waits -= self._writing_erasures
            self._writing_erasures = 0
            self._snapshot_seqs = [seq]
            return
        self._snapshot_seqs = [*self._snapshot_seqs[-1:], seq]
        if len(self._snapshot_seqs) == 2:
            keep_ms = max(self.settings.retention_days * DAY_MS, longest_window_ms(self.engine.features))
            names = [d.name for d in self.destinations.destinations]
            needed = self.ledger.needed_from(names) if self.ledger is not None else None
            self.log.trim(time.time_ns() // 1_000_000 - keep_ms, min(self._snapshot_seqs), needed)
            if self.ledger is not None:
                self.ledger.trim()

    @property
    def snapshot_busy(self) -> bool:
        """Whether a snapshot is being written in the background."""
        return self._writer.busy

    @property
    def erasures_pending(self) -> bool:
        """Whether an erasure still waits for a snapshot without the user, or for its WAL checkpoint."""
        return self._erasure_waits > 0 or self._wal_dirty

    def is_erased(self, profile_id: str) -> bool:
        """Whether this profile was erased (its later events are dropped, not kept anywhere)."""
        return self.engine is not None and self.pseudonymizer.tombstone(profile_id) in self.engine.suppressed

    def erase(self, profile_id: str, wait: bool = True) -> bool:
        """Erasure, of the user and every id linked to theirs: gone from profiles, log (with a tombstone that
        drops later events, and outlives any snapshot), timers, dedup keys,
        pending labels, outbox and quarantine; then from the snapshots on disk:
        at once when ``wait``, else by a background snapshot that
        :attr:`erasures_pending` waits for."""
        assert self.engine is not None
        ids = self.engine.identity.linked(profile_id)  # the user's every id goes: profiles, log rows, links
        known = self.engine.erase(profile_id)
        if self._erased_meanwhile is not None:  # a rebuild in progress replayed this user: it forgets too
            self._erased_meanwhile.extend(ids)
        platforms = [d.name for d in self.destinations.destinations if d.kind in PLATFORMS]
        for pid in ids:
            if self.quarantine is not None:
                known = self.quarantine.erase(pid) > 0 or known
            if self.ledger is not None:
                self.ledger.erase(pid)
            if self.people is not None:  # a deletion request for the user, and for a linked id with a contact
                owed = platforms if pid == ids[0] or self.people.contacts([pid]) else []
                known = self.people.erase(pid, owed) or known
        self._erasure_waits += 1
        self._wal_dirty = True
        if wait:
            self.save_snapshot()
            self._checkpoint()
        return known

    def _checkpoint(self) -> None:
        """After an erasure, empty the WALs (they held the user's rows as
        written); a reader holding them (a rebuild, a backup) means later."""
        if self._wal_dirty and self.log is not None and self.quarantine is not None and self.people is not None:
            self._wal_dirty = not (self.log.checkpoint() and self.quarantine.checkpoint() and self.people.checkpoint())

    def reload(self) -> dict[str, Any]:
        """New config and models, swapped in (:meth:`prepare_reload` then :meth:`finish_reload`)."""
        return self.finish_reload(self.prepare_reload())

    def prepare_reload(self, reread: bool = True) -> Rebuild:
        """Load the config and models again and, under another config, build
        the new engine from the log (:func:`serving.reloading.prepare`; safe in
        a worker thread while the service goes on)."""
        return reloading.prepare(self, reread)

    def finish_reload(self, rebuild: Rebuild) -> dict[str, Any]:
        """Swap the new config and models in, on the event loop (:func:`serving.reloading.finish`)."""
        return reloading.finish(self, rebuild)


def _models(versions: Mapping[str, str]) -> dict[str, str]:
    """The model versions of a record or of the scorers, without the intent mode beside them."""
    return {name: version for name, version in versions.items() if name != INTENT}
