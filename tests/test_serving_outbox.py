"""The outbox holds a change exactly when its cause is in the log: written in
the append's transaction, keyed by what it is, never twice; a failed write
acknowledges nothing and leaves the state as it was. The wall clock never
dates an event at or before a time its timers were advanced to."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from features.events import Event
from models.intent_online import OnlineIntentModel
from serving.log import EventLog
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.service import Service
from serving.settings import Settings

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 3_600_000
RULES = """
version: 1
segments:
  - name: carted_1h
    rule: count(add_to_cart, 1h) >= 1
"""


def service(tmp_path: Path, clock: str = "event", rules: str = RULES) -> Service:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "segments.yaml").write_text(rules)
    settings = Settings(
        state_dir=tmp_path / "state", clock=clock, segments=tmp_path / "segments.yaml",
        admin_keys=[SecretStr("outbox-admin")], read_keys=[SecretStr("outbox-read")],
    )  # fmt: skip
    return Service(settings, Scorers(OnlineIntentModel(), intent_feature_names())).start()


def cart(mid: str, user: str, t: int) -> Event:
    return Event(mid, "add_to_cart", user, None, t, t)


def test_event_and_time_driven_changes_are_in_the_outbox_once_in_order(tmp_path: Path) -> None:
    s = service(tmp_path)
    assert s.log is not None and s.engine is not None
    s.ingest([cart("a1", "ann", T0), cart("b1", "bob", T0 + 60_000)])
    s.ingest([cart("c1", "cid", T0 + 2 * 3_600_000)])  # an hour after: ann's and bob's exits fire first
    s.advance(T0 + 4 * 3_600_000)
    got = [(c.profile_id, c.kind, c.at_ms, c.cause) for c in s.log.changes_after(0)]
    assert got == [
        ("ann", "enter", T0, "event"),
        ("bob", "enter", T0 + 60_000, "event"),
        ("ann", "exit", T0 + 3_600_000, "time"),
        ("bob", "exit", T0 + 3_660_000, "time"),
        ("cid", "enter", T0 + 2 * 3_600_000, "event"),
        ("cid", "exit", T0 + 3 * 3_600_000, "time"),
    ]
    before = s.log.changes_after(0)
    again = service(tmp_path / "again").engine  # the same events again, in an engine of its own
    assert again is not None
    rederived = again.replay([cart("a1", "ann", T0), cart("b1", "bob", T0 + 60_000), cart("c1", "cid", T0 + 7_200_000)])
    rederived += again.advance(T0 + 4 * 3_600_000)
    assert {c.key for c in rederived} == {c.key for c in before}
    s.log.add_changes(rederived)  # written again: every key is there, nothing is added
    assert s.log.changes_after(0) == before
    assert len({c.key for c in before}) == len(before)
    s.close()


def test_a_user_in_and_out_and_in_again_within_a_millisecond_keeps_every_change(tmp_path: Path) -> None:
    rules = "version: 1\nsegments:\n  - name: holding\n    rule: count(add_to_cart, 1h) > count(remove_from_cart, 1h)\n"
    s = service(tmp_path, rules=rules)
    assert s.log is not None and s.engine is not None
    remove = Event("r1", "remove_from_cart", "ann", None, T0, T0)
    s.ingest([cart("a1", "ann", T0)])
    s.ingest([remove])  # three requests at one instant: enter, exit, enter
    s.ingest([cart("a2", "ann", T0)])
    got = s.log.changes_after(0)
    assert [c.kind for c in got] == ["enter", "exit", "enter"] and len({c.key for c in got}) == 3
    s.close()


def test_a_failed_tick_write_rebuilds_and_the_next_tick_writes_the_same_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service(tmp_path, clock="wall")
    assert s.log is not None and s.engine is not None
    now = s.engine.fired_to + 10_000
    s.ingest([cart("a1", "ann", now)])
    calls = []

    def broken(*_: object) -> None:
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(EventLog, "add_changes", broken)
    with pytest.raises(OSError):
        s.tick(now + 3_600_000 + 61_000)  # ann's exit is due
    monkeypatch.undo()
    assert calls and [c.kind for c in s.log.changes_after(0)] == ["enter"]
    s.tick(now + 3_600_000 + 62_000)  # the rebuilt state fires it again
    assert [c.kind for c in s.log.changes_after(0)] == ["enter", "exit"]
    s.close()


def test_a_failed_log_write_acknowledges_nothing_and_keeps_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service(tmp_path)
    assert s.log is not None and s.engine is not None
    s.ingest([cart("a1", "ann", T0)])

    def broken(*_: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(EventLog, "append", broken)
    with pytest.raises(OSError):
        s.ingest([cart("b1", "bob", T0 + 1000)])
    monkeypatch.undo()
    assert s.engine.store.get("bob") is None and "bob" not in s.engine.users  # rebuilt from what was logged
    assert [c.profile_id for c in s.log.changes_after(0)] == ["ann"]
    assert s.ingest([cart("b1", "bob", T0 + 1000)]).accepted == 1  # the client's retry is taken, not a duplicate
    s.close()


def test_the_wall_clock_dates_an_event_after_the_time_its_timers_reached(tmp_path: Path) -> None:
    s = service(tmp_path, clock="wall")
    assert s.log is not None and s.engine is not None
    now = s.engine.fired_to + 10_000
    s.advance(now)
    s.ingest([cart("late", "ann", now - 500)])  # stamped before that tick, applied after it
    (_, event, _), *_ = list(s.log.read())
    assert event.received_ms == now + 1 and event.ts_ms == now - 500
    s.close()
