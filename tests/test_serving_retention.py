"""The log is trimmed by receive time, never by event time, and only up to
what the older of the two latest snapshots covers; after a trim a restart and
a same-config reload give the profiles of before."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from features.events import Event
from models.intent_online import OnlineIntentModel
from serving.log import SCHEMA_VERSION
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.service import Service
from serving.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_788_775_200_000
DAY = 86_400_000


def service(state: Path) -> Service:
    settings = Settings(
        state_dir=state, clock="event", admin_keys=[SecretStr("retention-admin")],
        read_keys=[SecretStr("retention-read")], segments=ROOT / "config" / "segments.yaml",
    )  # fmt: skip
    return Service(settings, Scorers(OnlineIntentModel(), intent_feature_names())).start()


def cart(mid: str, user: str, at: int, received: int) -> Event:
    return Event(mid, "add_to_cart", user, None, at, received, properties={"price": 10.0, "category": "shoes"})


def test_an_event_far_ahead_on_the_event_clock_trims_nothing_within_retention(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    s = service(tmp_path / "state")
    s.ingest([cart(f"m{i}", f"u{i % 7}", T0 + i * 60_000, now) for i in range(1000)])
    s.ingest([cart("far", "u0", T0 + 70 * 365 * DAY, now)])  # behind the edge: a watermark far ahead
    for _ in range(3):
        s.save_snapshot()
    assert s.log is not None and s.log.count() == 1001
    s.close()


def test_retention_trims_only_what_an_older_snapshot_covers_and_state_survives(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    old = now - 40 * DAY  # received before the 30-day retention
    s = service(tmp_path / "state")
    assert s.engine is not None and s.log is not None
    s.ingest([cart(f"old{i}", f"u{i % 5}", T0 + i * 60_000, old) for i in range(100)])
    s.save_snapshot()  # the first: nothing is trimmed, no older snapshot covers the log yet
    assert s.log.count() == 100
    s.ingest([cart(f"new{i}", f"u{i % 5}", T0 + DAY + i * 60_000, now) for i in range(50)])
    s.save_snapshot()  # the second: the first covers the 100 old ones, which retention lets go
    assert s.log.count() == 50
    before = {pid: s.engine.vector(pid) for pid, _ in s.engine.store.items()}
    s.reload()  # same config: the state carries over, nothing replayed
    assert {pid: s.engine.vector(pid) for pid, _ in s.engine.store.items()} == before
    s.close()
    again = service(tmp_path / "state")  # restart: from the snapshot, not the (trimmed) log
    assert again.engine is not None
    assert {pid: again.engine.vector(pid) for pid, _ in again.engine.store.items()} == before
    again.close()


def test_an_older_log_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state" / "events.db"
    path.parent.mkdir()
    db = sqlite3.connect(path)  # the first schema: no receive time column, no version
    db.executescript("CREATE TABLE events (seq INTEGER PRIMARY KEY, profile_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,"
                     " body BLOB NOT NULL); CREATE TABLE suppressed (tombstone TEXT PRIMARY KEY);")  # fmt: skip
    db.execute("INSERT INTO events (profile_id, ts_ms, body) VALUES ('u1', 5, CAST(? AS BLOB))",
               ('["m1","add_to_cart","u1",null,5,77,"track",null,{},{},null,null,null,null]',))  # fmt: skip
    db.commit()
    db.close()
    s = service(tmp_path / "state")
    assert s.log is not None and s.log.count() == 1
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT received_ms FROM events").fetchall() == [(77,)]
    db.close()


def test_a_background_snapshot_is_the_state_at_its_fork_and_ingest_goes_on(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    s = service(tmp_path / "state")
    assert s.engine is not None
    s.ingest([cart(f"a{i}", f"u{i % 9}", T0 + i * 60_000, now) for i in range(300)])
    s.save_snapshot(background=True)  # a forked child writes it
    s.ingest([cart(f"b{i}", f"u{i % 9}", T0 + (300 + i) * 60_000, now) for i in range(300)])  # meanwhile
    deadline = time.monotonic() + 30
    while s._writer.busy and time.monotonic() < deadline:
        s.tick(now)
        time.sleep(0.01)
    assert not s._writer.busy and s._snapshot_seqs == [300]
    expected = {pid: s.engine.vector(pid) for pid, _ in s.engine.store.items()}
    assert s.log is not None
    s.log.close()  # a crash: the snapshot covers the first 300, the log the rest
    again = service(tmp_path / "state")
    assert again.engine is not None and again.engine.seq == 600
    assert {pid: again.engine.vector(pid) for pid, _ in again.engine.store.items()} == expected
    again.close()


def test_a_reload_rebuilds_beside_the_live_engine_while_ingest_and_erasure_go_on(tmp_path: Path) -> None:
    import threading

    from serving.engine import Engine
    from serving.regime import build_features, load_config

    now = time.time_ns() // 1_000_000
    rules = tmp_path / "segments.yaml"
    rules.write_text((ROOT / "config" / "segments.yaml").read_text())
    settings = Settings(
        state_dir=tmp_path / "state", clock="event", admin_keys=[SecretStr("retention-admin")],
        read_keys=[SecretStr("retention-read")], segments=rules,
    )  # fmt: skip
    s = Service(settings, Scorers(OnlineIntentModel(), intent_feature_names())).start()
    s.ingest([cart(f"a{i}", f"u{i % 11}", T0 + i * 60_000, now) for i in range(3000)])
    new_segment = "segments:\n  - name: reloaded_carts\n    rule: count(add_to_cart, 2h) >= 3\n"
    rules.write_text(rules.read_text().replace("segments:\n", new_segment, 1))
    prepared: list[Any] = []
    worker = threading.Thread(target=lambda: prepared.append(s.prepare_reload()))
    worker.start()
    i = 3000
    while worker.is_alive() or i < 3200:  # ingest goes on meanwhile, and an erasure
        s.ingest([cart(f"a{i}", f"u{i % 11}", T0 + i * 60_000, now)])
        if i == 3100:
            s.erase("u3", wait=False)
        i += 1
    worker.join()
    s.finish_reload(prepared[0])
    assert s.engine is not None and s.log is not None and "reloaded_carts" in s.engine.config.segments
    config = load_config(rules)
    fresh = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()))
    fresh.replay([e for _, e, _ in s.log.read()])
    assert s.engine.store.get("u3") is None
    assert {p: s.engine.vector(p) for p, _ in s.engine.store.items()} == {
        p: fresh.vector(p) for p, _ in fresh.store.items()
    }
    assert {p: u.members.entered for p, u in s.engine.users.items()} == {
        p: u.members.entered for p, u in fresh.users.items()
    }
    s.close()


def test_dedup_is_by_receive_time_bounded_in_memory_and_kept_by_the_log(tmp_path: Path) -> None:
    """A messageId again within 24 h of receive time (on the event clock too,
    whatever its event time) changes nothing, after a restart with no
    snapshot as well; memory keeps only the last minutes, the log the rest;
    past 24 h the id is new again."""
    now = time.time_ns() // 1_000_000
    minute = 60_000
    s = service(tmp_path / "state")
    assert s.engine is not None
    s.ingest([cart(f"m{i}", f"u{i % 5}", T0 + i * minute, now - 30 * 3_600_000 + i * minute) for i in range(100)])
    s.ingest([cart(f"n{i}", f"u{i % 5}", T0 + i * minute, now - 2 * 3_600_000 + i * minute) for i in range(100)])
    assert len(s.engine._seen) < 20  # the last 10 minutes of receive time
    assert s.log is not None
    s.log.close()  # a crash: no snapshot at all
    again = service(tmp_path / "state")
    assert again.engine is not None
    retried = [cart(f"n{i}", f"u{i % 5}", T0 + 99 * 86_400_000, now) for i in range(100)]  # another event time
    assert again.ingest(retried).duplicates == 100
    older = again.ingest([cart(f"m{i}", f"u{i % 5}", T0, now) for i in range(100)])  # received over 24 h ago
    assert older.accepted == 100 and older.duplicates == 0
    again.close()


def test_sequence_numbers_are_never_reused_after_erasing_the_newest_events(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    s = service(tmp_path / "state")
    s.ingest([cart(f"a{i}", "alice", T0 + i, now) for i in range(3)])
    s.ingest([cart(f"b{i}", "bob", T0 + 10 + i, now) for i in range(2)])
    s.erase("bob")  # the newest rows go, and a snapshot at position 5 is written
    s.ingest([cart(f"c{i}", "carol", T0 + 20 + i, now) for i in range(2)])
    assert s.engine is not None and s.engine.seq == 7
    expected = s.engine.vector("carol")
    assert s.log is not None
    s.log.close()  # a crash: carol's events are only in the log, after the snapshot's position
    again = service(tmp_path / "state")
    assert again.engine is not None and again.engine.vector("carol") == expected
    assert again.ingest([cart("c0", "carol", T0 + 20, now)]).duplicates == 1
    again.close()


def test_an_erasure_waits_for_a_reader_of_the_log_before_its_wal_is_emptied(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    s = service(tmp_path / "state")
    s.ingest([cart(f"e{i}", "eve", T0 + i, now) for i in range(5)])
    s.ingest([cart(f"f{i}", "frank", T0 + i, now) for i in range(5)])
    reader = sqlite3.connect(tmp_path / "state" / "events.db")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchone()  # a rebuild or backup reading the log
    started = time.monotonic()
    s.erase("eve")
    assert time.monotonic() - started < 2 and s.erasures_pending  # no stall; the WAL still holds eve's rows
    reader.rollback()
    reader.close()
    s.tick(now)
    assert not s.erasures_pending
    wal = tmp_path / "state" / "events.db-wal"
    assert not wal.exists() or b"eve" not in wal.read_bytes()
    s.close()


def test_a_restart_leaves_one_generation_of_profiles_in_redis(tmp_path: Path, redis_client: Any) -> None:
    now = time.time_ns() // 1_000_000
    prefix = f"segflow-test-gen-{time.time_ns()}:"
    settings = Settings(
        state_dir=tmp_path / "state", clock="event", admin_keys=[SecretStr("retention-admin")],
        read_keys=[SecretStr("retention-read")], segments=ROOT / "config" / "segments.yaml",
        store="redis://127.0.0.1:6379/0", store_prefix=prefix,
    )  # fmt: skip
    try:
        for run in range(3):
            s = Service(settings, Scorers(OnlineIntentModel(), intent_feature_names())).start()
            s.ingest([cart(f"r{run}-{i}", f"u{i}", T0 + run * 100 + i, now) for i in range(4)])
            s.close()
        keys = [k.decode() for k in redis_client.scan_iter(match=prefix + "*")]
        assert sorted(keys) == [f"{prefix}g3:u{i}" for i in range(4)]
        s = Service(settings, Scorers(OnlineIntentModel(), intent_feature_names())).start()
        s.erase("u1")
        s.close()
        assert not [k for k in redis_client.scan_iter(match=prefix + "*") if k.decode().endswith(":u1")]
    finally:
        for k in redis_client.scan_iter(match=prefix + "*"):
            redis_client.delete(k)
