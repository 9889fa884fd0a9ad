"""A real ``segflow serve`` (uvicorn) on 127.0.0.1 on the event clock:
replay over HTTP equals the offline features and the in-process engine;
acknowledged events survive SIGKILL exactly once; auth, limits, erasure."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from features.events import Event, format_ms, to_payload
from features.offline import OfflineFeatures
from features.table import events_to_table, table_to_events
from models.intent_online import OnlineIntentModel
from serving.engine import Engine
from serving.regime import build_features, intent_feature_names, load_config
from serving.scorers import Scorers
from tests.servers import READ, SEGMENTS, WRITE, Server
from training.synthetic import generate


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "state").start()
    yield s
    s.stop()


def _post(http: httpx.Client, events: list[Event]) -> dict:
    body = orjson.dumps({"batch": [to_payload(e) for e in events]})
    r = http.post("/v1/batch", content=body, auth=WRITE, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


def test_replay_over_http_equals_offline_features_and_in_process_engine(server: Server) -> None:
    history = generate(80, 3, 11)
    events = sorted(table_to_events(history.events), key=lambda e: e.ts_ms)
    end = events[-1].ts_ms + 1
    http_changes = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for i in range(0, len(events), 250):
            http_changes += _post(http, events[i : i + 250])["transitions"]
        http_changes += http.post("/v1/admin/advance", params={"to_ms": end}, auth=WRITE).json()["transitions"]
        users = sorted({e.profile_id for e in events})
        served = {u: http.get(f"/v1/profiles/{u}", auth=READ).json()["features"] for u in users}

    config = load_config(SEGMENTS)
    engine = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()))
    local = []
    for i in range(0, len(events), 250):
        local += engine.ingest(events[i : i + 250]).changes
    local += engine.advance(end)
    as_tuples = sorted((c.profile_id, c.transition.segment, c.transition.kind, c.transition.at_ms) for c in local)
    assert sorted((t["user"], t["segment"], t["kind"], t["at_ms"]) for t in http_changes) == as_tuples

    offline = OfflineFeatures(engine.features, events_to_table(events)).at(
        pd.DataFrame({"profile_id": users, "at": engine.watermark})
    )
    for row, user in zip(offline.to_dict("records"), users, strict=True):
        for name, want in row.items():
            got = served[user][name]
            if isinstance(want, float) and np.isnan(want):
                assert got is None, (user, name)
            elif isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (user, name)
            else:
                assert got == want, (user, name)


def _events_total(url: str) -> float:
    text = httpx.get(url + "/metrics", auth=READ).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("segflow_events_total ")))


def test_sigkill_halfway_loses_no_acknowledged_event_and_counts_each_once(tmp_path: Path) -> None:
    events = sorted(table_to_events(generate(800, 3, 3).events), key=lambda e: e.ts_ms)[:10_000]
    assert len(events) == 10_000
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    server = Server(tmp_path / "state").start()
    acked: set[int] = set()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i, batch in enumerate(batches[:50]):
                _post(http, batch)
                acked.add(i)
            killer = threading.Timer(0.005, server.kill)
            killer.start()
            for i, batch in enumerate(batches[50:], start=50):
                try:
                    _post(http, batch)
                    acked.add(i)
                except (httpx.TransportError, AssertionError):
                    break
            killer.join()
        server = Server(tmp_path / "state").start()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i, batch in enumerate(batches):
                if i not in acked:
                    _post(http, batch)  # the same messageIds again
        assert _events_total(server.url) == 10_000
    finally:
        server.stop()


def test_reads_need_a_read_key_and_bad_input_names_the_field(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ok = http.post("/v1/track", auth=WRITE, json={"userId": "u1", "event": "Product Viewed", "messageId": "m1",
                                                      "timestamp": "2026-09-07T10:00:00Z"})  # fmt: skip
        assert ok.status_code == 200 and ok.json()["accepted"] == 1
        assert http.get("/v1/profiles/u1").status_code == 401
        assert http.get("/v1/profiles/u1", auth=WRITE).status_code == 200  # write keys are admin keys: they read
        assert http.get("/v1/segments", headers={"authorization": f"Bearer {READ[0]}"}).status_code == 200
        refused = http.post("/v1/track", auth=READ, json={})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        bad = http.post("/v1/track", auth=WRITE, json={"userId": "u1", "event": "x", "timestamp": "2026-13-01"})
        assert bad.status_code == 400 and bad.json()["detail"][0]["field"] == "timestamp"
        big = http.post("/v1/track", auth=WRITE, content=b'{"userId": "u", "event": "' + b"x" * 40_000 + b'"}')
        assert big.status_code == 413
        assert http.get("/v1/segments/nope/members", auth=READ).status_code == 404


def test_erasure_over_http_leaves_no_trace(server: Server, read_snapshot: Callable[[Path], str]) -> None:
    who = "erase-me-42"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(3):
            http.post("/v1/track", auth=WRITE, json={"userId": who, "event": "Product Added", "messageId": f"x{i}",
                                                     "timestamp": f"2026-09-07T10:0{i}:00Z"})  # fmt: skip
        assert http.get(f"/v1/profiles/{who}", auth=READ).status_code == 200
        assert http.delete(f"/v1/profiles/{who}", auth=WRITE).json() == {"erased": True}
        assert http.get(f"/v1/profiles/{who}", auth=READ).status_code == 404
        later = http.post("/v1/track", auth=WRITE, json={"userId": who, "event": "Product Added", "messageId": "x9",
                                                          "timestamp": "2026-09-07T11:00:00Z"}).json()  # fmt: skip
        assert later["suppressed"] == 1 and later["accepted"] == 0
        assert who not in http.get("/metrics", auth=READ).text
    import sqlite3

    for path in server.state.iterdir():  # the log and its WAL, the quarantine, the snapshots
        text = read_snapshot(path) if path.name.startswith("snapshot") else path.read_bytes().decode("latin-1")
        assert who not in text, path.name
    db = sqlite3.connect(server.state / "events.db")
    assert db.execute("SELECT count(*) FROM events WHERE profile_id = ?", (who,)).fetchone()[0] == 0
    tombstones = [r[0] for r in db.execute("SELECT tombstone FROM suppressed")]
    assert len(tombstones) == 1 and who not in tombstones[0]


def test_preview_over_stored_history(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        events = sorted(table_to_events(generate(40, 2, 9).events), key=lambda e: e.ts_ms)
        _post(http, events)
        new = SEGMENTS.read_text().replace("likely_buyer: 0.35", "likely_buyer: 0.05")
        assert http.post("/v1/segments/preview", json={"config": new}).status_code == 401
        assert http.post("/v1/segments/preview", json={"config": new}, auth=READ).status_code == 403  # admin only
        r = http.post("/v1/segments/preview", json={"config": new, "limit": 5}, auth=WRITE)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["events"] == len(events)
        likely = next(s for s in body["segments"] if s["segment"] == "likely_buyers")
        assert likely["status"] == "changed" and len(likely["daily_sizes"]) >= 2
        same = next(s for s in body["segments"] if s["segment"] == "active_now")
        assert same["status"] == "same" and same["transitions_only_new"] == []
        text = "version: 1\nsegments:\n  - name: x\n    rule: count(\n"
        broken = http.post("/v1/segments/preview", json={"config": text}, auth=WRITE)
        assert broken.status_code == 422 and "preview.yaml:4" in broken.text


def test_why_names_the_events_behind_each_clause(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        script = [
            ("v1", "Product Viewed", "2026-09-07T10:00:00Z"),
            ("c1", "Product Added", "2026-09-07T10:05:00Z"),
            ("c2", "Product Added", "2026-09-07T10:06:00Z"),
        ]
        for mid, event, ts in script:
            body = {"userId": "why", "event": event, "messageId": mid, "timestamp": ts,
                    "properties": {"category": "shoes", "price": 30}}  # fmt: skip
            assert http.post("/v1/track", auth=WRITE, json=body).status_code == 200
        later = 1_788_775_560_000 + 49 * 3_600_000  # 2026-09-07T10:06Z + 49 h
        http.post("/v1/admin/advance", params={"to_ms": later}, auth=WRITE)
        why = http.get("/v1/profiles/why/segments/cart_abandoners_48h", auth=READ).json()
        assert why["member"] is True
        first = why["clauses_now"][0]
        assert first["clause"].startswith("not_followed(add_to_cart, purchase, 48h)") and [
            e["message_id"] for e in first["events"]
        ] == ["c2"]
        entered = why["last_transition"]
        assert entered["kind"] == "enter" and entered["clauses"][0]["events"][0]["message_id"] == "c2"
        profile = http.get("/v1/profiles/why", auth=READ).json()
        shoes = next(s for s in profile["segments"] if s["segment"] == "shoes_cart_abandoners")
        # it entered at the first cart add: the events behind it are those of that moment
        assert {e["message_id"] for c in shoes["reason"]["clauses"] for e in c.get("events", [])} == {"v1", "c1"}


def test_scripted_users_over_http_enter_and_exit_when_written(server: Server) -> None:
    t0 = 1_788_775_200_000  # 2026-09-07T10:00:00Z
    minute, hour = 60_000, 3_600_000
    script = [  # user, messageId, event, at, properties
        ("alice", "a1", "Product Viewed", t0, {"category": "shoes"}),
        ("alice", "a2", "Product Added", t0 + 5 * minute, {"category": "shoes", "price": 40}),
        ("bob", "b1", "Product Added", t0, {"category": "hats", "price": 10}),
        ("bob", "b2", "Order Completed", t0 + hour, {"revenue": 10}),
    ]
    got = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for user, mid, event, at, props in script:
            body = {"userId": user, "event": event, "messageId": mid, "timestamp": format_ms(at), "properties": props}
            got += http.post("/v1/track", auth=WRITE, json=body).json()["transitions"]
        got += http.post("/v1/admin/advance", params={"to_ms": t0 + 72 * hour}, auth=WRITE).json()["transitions"]
    watched = {"shoes_browsers_24h", "active_now", "cart_abandoners_48h"}
    seen = sorted((t["at_ms"], t["user"], t["segment"], t["kind"]) for t in got if t["segment"] in watched)
    assert seen == sorted([
        (t0, "alice", "shoes_browsers_24h", "enter"),
        (t0, "alice", "active_now", "enter"),
        (t0, "bob", "active_now", "enter"),
        (t0 + 30 * minute + 1, "bob", "active_now", "exit"),  # 30 minutes and a millisecond after his cart add
        (t0 + 5 * minute + 30 * minute + 1, "alice", "active_now", "exit"),
        (t0 + hour, "bob", "active_now", "enter"),
        (t0 + hour + 30 * minute + 1, "bob", "active_now", "exit"),
        (t0 + 24 * hour, "alice", "shoes_browsers_24h", "exit"),  # the view leaves the 24-hour window
        (t0 + 5 * minute + 48 * hour, "alice", "cart_abandoners_48h", "enter"),  # no purchase for 48 hours
        # bob bought an hour after his cart add: never an abandoner
    ])  # fmt: skip
