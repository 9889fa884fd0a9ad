"""A reload: the config and models read again, and swapped in at one instant.

Under the same config and features the new models are swapped into the live
engine and everyone rescored (nothing replayed); under another, a new engine
is built from the log in a worker thread while the service goes on
(:func:`prepare`), then catches up and replaces the live one on the event
loop (:func:`finish`). The log records either, with the net membership
changes it made, so a replay does it again.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from features.identity import IdentityGraph
from segments.config import SegmentConfig
from segments.vocabulary import unknown_properties
from serving.engine import Engine, retire
from serving.log import Logged
from serving.recovery import SWAP, net_changes, replay_into
from serving.regime import build_features, loads_config
from serving.scorers import Scorers

if TYPE_CHECKING:
    from serving.service import Service

log = logging.getLogger("segflow.service")


@dataclass
class Readiness:
    """What ``/readyz`` says: ready once state is recovered, and notes on the models in force."""

    ready: bool = False
    notes: list[str] = field(default_factory=list)


def _noting(rows: Iterable[Logged], names: set[str]) -> Iterator[Logged]:
    """The rows as they are, noting their events' property names."""
    for row in rows:
        names.update(row[1].properties)
        yield row


@dataclass
class Rebuild:
    """A reload prepared: the config and models, and the engine rebuilt under
    them up to log position ``upto`` (None: same config, nothing to rebuild)."""

    config: SegmentConfig
    text: str  # the config as written
    scorers: Scorers
    engine: Engine | None
    upto: int
    warnings: list[str] = field(default_factory=list)  # properties the rules read that nothing declares or carries
    why: str = ""  # why the engine was rebuilt from the log (nothing: the models were swapped in)


def prepare(service: Service, reread: bool = True) -> Rebuild:
    """Load the config and models again and, under another config, build
    the new engine from the log as it stands. Safe in a worker thread while
    the service goes on serving: it reads the log through a connection of
    its own and touches nothing the live engine uses."""
    assert service.engine is not None and service.log is not None
    text = service.settings.segments.read_text()
    config = loads_config(text, str(service.settings.segments))
    if reread:
        service._registered = None  # the registry again: a model may have been promoted
    scorers = service.fresh_scorers()
    old = service.engine
    digest = build_features(config, scorers).digest
    if config.config_id == old.config.config_id and digest == old.features.digest:
        return Rebuild(config, text, scorers, None, 0)  # models alone: swapped in, nothing replayed
    why = "the config changed" if config.config_id != old.config.config_id else "the models read other features"
    service._erased_meanwhile = []
    # the rebuild allocates millions of objects that live on: collecting them as they come would stop
    # the service for whole seconds (a full collection walks them all); :func:`finish` freezes them instead
    gc.disable()
    # and the live service would wait up to the interpreter's switch interval (5 ms) each time it
    # needs the GIL back from this thread, a dozen times a request: it gets it back sooner meanwhile
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, 0.0005))
    try:
        engine = service._new_engine(config, scorers, service.generation + 1)
        # the whole log, and the last position, in one read transaction of its own
        engine.suppressed = service.log.suppressed_apart()  # this thread must not use the live connection
        engine.identity = IdentityGraph.of(service.log.links_beyond(apart=True))  # links older than the log
        carried: set[str] = set()  # the property names the stored events carry, seen on the way
        upto = replay_into(engine, _noting(service.log.read_apart_all(), carried), 0)[1]
    except BaseException:
        gc.enable()
        service._erased_meanwhile = None
        raise
    finally:
        sys.setswitchinterval(switch)
    own = set(config.specs)  # what the rules read is not declared by their reading it
    warnings = unknown_properties(config, carried, [spec for spec in engine.features.specs if spec not in own])
    for warning in warnings:
        log.warning("%s: %s", service.settings.segments, warning)
    return Rebuild(config, text, scorers, engine, upto, warnings, why)


def finish(service: Service, rebuild: Rebuild) -> dict[str, Any]:
    """Swap the new config and models in (on the event loop): under the same
    config the live engine takes the new models and keeps its state (the
    online model's learning included); else the rebuilt engine catches up
    with what arrived while it was built, drops who was erased meanwhile,
    and replaces the live one."""
    assert service.engine is not None
    try:
        return _swap(service, rebuild)
    finally:
        service._erased_meanwhile = None
        if not gc.isenabled():
            gc.freeze()  # the new state lives as long as the process, as at start
            gc.enable()


def _swap(service: Service, rebuild: Rebuild) -> dict[str, Any]:
    """At one instant: the live engine's timers due before it fire, then
    the swap; the log records both, with the net membership changes the
    swap makes, in one transaction, as a replay will do it again. If that
    write fails, the live state is rebuilt as the log has it (nothing was
    swapped) and the error goes on."""
    assert service.engine is not None and service.log is not None
    old, scorers = service.engine, rebuild.scorers
    if rebuild.engine is None and scorers.versions == old.scorers.versions:
        unchanged = {"config_id": old.config.config_id, "models": scorers.versions, "events_replayed": 0}
        return unchanged | {"rebuilt": None}
    at = service._instant(old)
    engine, replayed = old, 0
    if rebuild.engine is not None:  # first what can fail without touching the live engine
        engine = rebuild.engine
        replayed = rebuild.upto + replay_into(engine, service.log.read(rebuild.upto), rebuild.upto)[0]
        engine.suppressed = set(old.suppressed)
        for pid in service._erased_meanwhile or ():
            engine.erase(pid)
        service._erased_meanwhile = None
        engine.advance(at - 1)  # its history: lived under the config before
    fired = old.advance(at - 1)
    try:
        if rebuild.engine is None:
            old.scorers = dataclasses.replace(scorers, online=old.scorers.online)
            service._record(old, SWAP, rebuild.text, fired + old.rescore(at), at)
        else:
            service._record(engine, "rebuild", rebuild.text, fired + net_changes(old, engine, at), at)
    except Exception:
        log.error("the reload could not be recorded: the live state is rebuilt from the snapshot and the log")
        service.engine = service._recover()
        raise
    if engine is not old:
        service.engine = engine
        service._set_generation(service.generation + 1)
        retire(old)
    if engine.scorers.drift is not None:
        engine.scorers.drift.reset()  # live events from the swap on, not the log a rebuild replayed
    service.changed()
    service.parser = service._parser(engine)
    service.readiness = Readiness(True, service._notes(scorers))
    service.save_snapshot(background=True)
    done = {"config_id": rebuild.config.config_id, "models": scorers.versions, "events_replayed": replayed,
            "rebuilt": rebuild.why or None}  # fmt: skip
    return done | ({"warnings": rebuild.warnings} if rebuild.warnings else {})
