"""Bad input never hurts state: a real server on 127.0.0.1 takes poison
numbers, far-future times, deep nesting, broken credentials and slow
connections, and keeps serving; the good events of a batch are applied, the
bad ones listed and quarantined; snapshots, erasure, restarts and the models
keep working, with the memory store and with Redis."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr
from typer.testing import CliRunner

from cli.main import app
from features.events import Event, format_ms
from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.keys import ApiKey, new_key, read_keys_file, write_keys_file
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.service import Service
from serving.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN, READ = "edge-admin-key", "edge-read-key"
T0 = 1_788_775_200_000  # 2026-09-07T10:00:00Z
DAY = 86_400_000
POISON = ["1e999", 1e300, "Infinity", "NaN", "-inf"]
FIELDS = ["price", "revenue", "quantity", "time_on_page_s"]


def settings_for(state: Path, **more: Any) -> Settings:
    base: dict[str, Any] = {
        "state_dir": state,
        "clock": "event",
        "admin_keys": [SecretStr(ADMIN)],
        "read_keys": [SecretStr(READ)],
        "segments": ROOT / "config" / "segments.yaml",
        "tracking_uri": f"sqlite:///{state.parent / 'mlflow.db'}",
    }
    return Settings(**{**base, **more})


def serve(settings: Settings) -> ServerThread:
    return ServerThread(create_app(settings, Scorers(OnlineIntentModel(), intent_feature_names())))


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def track(user: str, mid: str, at_ms: int, event: str = "Product Added", **props: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, "messageId": mid, "timestamp": format_ms(at_ms),
            "properties": {"category": "shoes", "price": 20, **props}}  # fmt: skip


def metric(http: httpx.Client, name: str, labels: str = "") -> float:
    text = http.get("/metrics", headers=auth(READ)).text
    line = next((x for x in text.splitlines() if x.startswith(f"{name}{labels} ")), None)
    return float(line.split()[1]) if line else 0.0


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {}
        return
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not answering on 127.0.0.1:6379: install redis-server and start it")
    prefix = f"segflow-test-edge-{uuid.uuid4().hex[:8]}:"
    yield {"store": "redis://127.0.0.1:6379/0", "store_prefix": prefix}
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def test_poison_numbers_are_rejected_alone_and_state_survives(tmp_path: Path, store: dict[str, Any]) -> None:
    settings = settings_for(tmp_path / "state", **store)
    good = [track(f"u{i % 5}", f"good-{i}", T0 + i * 60_000) for i in range(10)]
    bad = [
        track("u0", f"bad-{field}-{j}", T0 + 30_000, **{field: value})
        for field in FIELDS
        for j, value in enumerate(POISON)
    ]
    batch = [*good[:5], *bad, *good[5:]]
    with serve(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/v1/batch", json={"batch": batch}, headers=auth(ADMIN))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == 10 and body["code"] == "events_rejected"
        assert sorted({x["index"] for x in body["rejected"]}) == list(range(5, 5 + len(bad)))
        fields = {(x["index"], x["field"]) for x in body["rejected"]}
        assert (5, "batch[5].properties.price") in fields and (5 + 19, "batch[24].properties.time_on_page_s") in fields
        assert all("finite" in x["problem"] or "range" in x["problem"] for x in body["rejected"])
        assert metric(http, "segflow_rejects_total", '{reason="invalid_event"}') == len(bad)
        held = http.get("/v1/admin/quarantine", params={"limit": 1000}, headers=auth(ADMIN)).json()
        assert held["count"] == len(bad)
        # 1e999 as a JSON number, not a string: too large for a double, refused with its event alone
        literal = json.dumps({"batch": [track("u1", "lit-good", T0 + 5), track("u1", "lit-bad", T0 + 6, price=0.5)]})
        r = http.post("/v1/batch", content=literal.replace('"price": 0.5', '"price": 1e999'), headers=JSON)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        assert [x["field"] for x in r.json()["rejected"]] == ["batch[1].properties.price"]
        # a retry of the same batch: the good ones are duplicates, the bad ones refused again
        again = http.post("/v1/batch", json={"batch": batch}, headers=auth(ADMIN)).json()
        assert again["duplicates"] == 10 and again["accepted"] == 0
        # three days on: timers fire, the online model learns what it sampled
        advanced = http.post("/v1/admin/advance", params={"to_ms": T0 + 3 * DAY}, headers=auth(ADMIN))
        assert advanced.status_code == 200, advanced.text
        later = http.post("/v1/track", json=track("u1", "later-1", T0 + 3 * DAY + 1), headers=auth(ADMIN))
        assert later.status_code == 200 and later.json()["accepted"] == 1
        assert http.get("/v1/profiles/u1", headers=auth(READ)).status_code == 200
        erased = http.delete("/v1/profiles/u0", headers=auth(ADMIN))  # erasure writes a snapshot
        assert erased.status_code == 200 and erased.json() == {"erased": True}
        assert http.get("/v1/admin/quarantine", headers=auth(ADMIN)).json()["count"] == 1  # u0's went; u1's stays
        before = http.get("/v1/profiles/u2", headers=auth(READ)).json()["features"]
    with serve(settings) as url, httpx.Client(base_url=url, timeout=60) as http:  # restart: snapshot, then log
        assert http.get("/v1/profiles/u2", headers=auth(READ)).json()["features"] == before
        assert http.get("/v1/profiles/u0", headers=auth(READ)).status_code == 404
        after = http.post("/v1/track", json=track("u3", "after-1", T0 + 3 * DAY + 5), headers=auth(ADMIN))
        assert after.status_code == 200 and after.json()["accepted"] == 1


def counts(profile: dict[str, Any]) -> dict[str, Any]:
    """What events change in a profile (recencies and the hour move with the wall clock)."""
    return {k: v for k, v in profile["features"].items() if "_count_" in k or "_sum_" in k}


@pytest.mark.parametrize("clock", ["event", "wall"])
def test_an_event_dated_years_ahead_is_rejected_and_changes_nothing(tmp_path: Path, clock: str) -> None:
    now = time.time_ns() // 1_000_000
    with serve(settings_for(tmp_path / "state", clock=clock)) as url, httpx.Client(base_url=url, timeout=30) as http:
        first = http.post("/v1/track", json=track("f1", "ok-1", now - 60_000), headers=auth(ADMIN))
        assert first.status_code == 200 and first.json()["accepted"] == 1
        before = counts(http.get("/v1/profiles/f1", headers=auth(READ)).json())
        ahead = now + 5 * 365 * DAY
        r = http.post("/v1/track", json=track("f1", "future-1", ahead), headers=auth(ADMIN))
        assert r.status_code == 400, r.text
        (problem,) = r.json()["detail"]
        assert problem["field"] == "timestamp" and "years after the event was received" in problem["problem"]
        assert "at most 10 minutes ahead" in problem["problem"]
        also = http.post("/v1/track", json=track("f2", "future-2", ahead), headers=auth(ADMIN))
        assert also.status_code == 400
        assert counts(http.get("/v1/profiles/f1", headers=auth(READ)).json()) == before
        assert http.get("/v1/profiles/f2", headers=auth(READ)).status_code == 404
        assert metric(http, "segflow_events_total") == 1
        # within the allowed skew is fine
        near = http.post("/v1/track", json=track("f1", "near-1", now + 60_000), headers=auth(ADMIN))
        assert near.status_code == 200 and near.json()["accepted"] == 1


JSON = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}


def test_deep_nesting_and_broken_credentials_get_4xx(tmp_path: Path) -> None:
    with serve(settings_for(tmp_path / "state")) as url, httpx.Client(base_url=url, timeout=30) as http:
        for depth in (40, 300, 1000):
            half = depth // 2  # objects and lists both: written by hand, json.dumps recurses
            nested = "[" * half + '{"a":' * half + "1" + "}" * half + "]" * half
            event = json.dumps(track("deep", f"deep-{depth}", T0, extra="NESTED")).replace('"NESTED"', nested)
            one = http.post("/v1/track", content=event, headers=JSON)
            assert 400 <= one.status_code < 500, (depth, one.text)
            assert one.json()["code"] and one.json()["message"]
            batch = '{"batch": [' + json.dumps(track("deep", f"ok-{depth}", T0)) + ", " + event + "]}"
            both = http.post("/v1/batch", content=batch, headers=JSON)
            assert both.status_code in (200, 400), (depth, both.text)
            if depth < 1000:  # orjson reads 300 levels; the event alone is refused, its neighbour applied
                assert both.status_code == 200 and both.json()["accepted"] == 1
                assert "nests more than 32 levels" in both.json()["rejected"][0]["problem"]
        for header in ("Basic w6nDqcOp", "Basic " + base64.b64encode("é:".encode()).decode(), "Bearer",
                       "Basic !!!", "Digest x"):  # fmt: skip
            r = http.get("/v1/segments", headers={"authorization": header})
            assert r.status_code == 401, (header, r.text)
        raw = http.build_request("GET", "/v1/segments")
        raw.headers["authorization"] = "Basic ÿÿÿ".encode("latin-1").decode("latin-1")
        assert http.send(raw).status_code == 401


def test_key_scopes_revocation_and_rate_limits(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    source, limited = new_key("source", "web"), ApiKey("slow", "read", "slow-read-key", rate_per_s=2, burst=2)
    write_keys_file(keys_file, [source, limited])
    settings = settings_for(tmp_path / "state", keys_file=keys_file)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        ok = http.post("/v1/track", json=track("s1", "src-1", T0), headers=auth(source.secret))
        assert ok.status_code == 200 and ok.json()["accepted"] == 1
        in_body = http.post("/v1/track", json={**track("s1", "src-2", T0 + 1), "writeKey": source.secret})
        assert in_body.status_code == 200 and in_body.json()["accepted"] == 1
        admin_in_body = http.post("/v1/track", json={**track("s1", "src-3", T0 + 2), "writeKey": ADMIN})
        assert admin_in_body.status_code == 403
        for method, path in [("GET", "/v1/profiles/s1"), ("GET", "/v1/segments"), ("DELETE", "/v1/profiles/s1"),
                             ("POST", "/v1/admin/reload"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                             ("GET", "/v1/admin/quarantine")]:  # fmt: skip
            r = http.request(method, path, headers=auth(source.secret))
            assert r.status_code == 403, (method, path, r.status_code)
            assert r.json()["code"] == "forbidden"
        assert http.get("/v1/segments").status_code == 401
        assert http.get("/v1/segments", headers=auth("no-such-key")).status_code == 401
        assert http.get("/metrics").status_code == 401 and http.get("/docs").status_code == 401
        assert http.get("/docs", headers=auth(READ)).status_code == 200
        assert http.get("/healthz").status_code == 200
        # revoke the source key in the keys file: refused within a second, no restart
        write_keys_file(keys_file, [limited])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            r = http.post("/v1/track", json=track("s1", f"rev-{time.monotonic()}", T0 + 5), headers=auth(source.secret))
            if r.status_code == 401:
                break
            time.sleep(0.05)
        assert r.status_code == 401 and r.json()["message"] == "unknown or revoked key"
        # a key over its rate: 429 with Retry-After
        codes = [http.get("/v1/segments", headers=auth(limited.secret)) for _ in range(6)]
        assert [c.status_code for c in codes[:2]] == [200, 200]
        refused = next(c for c in codes if c.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1 and refused.json()["code"] == "rate_limited"
    assert [k.id for k in read_keys_file(keys_file)] == ["slow"]


def test_slow_connections_are_dropped_and_healthz_keeps_answering(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "state", request_deadline_s=2.0, max_pending_requests=20)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=5) as http:
        port = int(url.rsplit(":", 1)[1])
        slow = []
        for i in range(60):  # three times the limit: each sends half a request, then waits
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            slow.append(s)
        for _ in range(20):
            assert http.get("/healthz").status_code == 200
        started = time.monotonic()
        closed = 0
        for s in slow:
            s.settimeout(max(0.1, 6 - (time.monotonic() - started)))
            try:
                closed += s.recv(1024) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
            finally:
                s.close()
        assert closed == len(slow)
        assert time.monotonic() - started < 6  # by the 2-second deadline (or evicted sooner), not held
        assert http.get("/healthz").status_code == 200


def test_a_non_finite_value_behind_the_edge_breaks_nothing(tmp_path: Path) -> None:
    """As a bug elsewhere might: the engine is handed values the edge refuses."""
    settings = settings_for(tmp_path / "state")
    deep: Any = "x"
    for _ in range(300):
        deep = {"d": deep}
    props = [{"price": float("inf"), "quantity": 10**30, "category": "shoes"},
             {"price": float("nan"), "revenue": -float("inf"), "deep": deep},
             {"price": 1e300, "time_on_page_s": float("-inf"), "scroll_depth": float("nan")}]  # fmt: skip
    scorers = Scorers(OnlineIntentModel(), intent_feature_names())
    service = Service(settings, scorers).start()
    types = ["add_to_cart", "purchase", "page_view"]
    events = [
        Event(f"nf-{i}", types[i % 3], f"n{i % 2}", None, T0 + i * 60_000, T0 + i * 60_000, properties=props[i % 3])
        for i in range(30)
    ]
    service.ingest(events)
    assert service.engine is not None
    service.engine.advance(T0 + 3 * DAY)  # the online model learns the samples it kept
    service.ingest([Event("nf-late", "add_to_cart", "n0", None, T0 + 3 * DAY + 1, T0 + 3 * DAY + 1)])
    service.save_snapshot()
    vector = service.engine.vector("n1")
    assert vector is not None
    assert service.erase("n0") is True
    service.close()
    again = Service(settings, scorers).start()
    assert again.engine is not None and again.engine.vector("n1") == vector
    score = again.engine.users["n1"].scores["intent"]
    assert 0.0 <= score <= 1.0
    out = again.ingest([Event("nf-after", "add_to_cart", "n1", None, T0 + 3 * DAY + 2, T0 + 3 * DAY + 2)])
    assert out.accepted == 1
    again.close()


def test_keys_and_quarantine_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_file = tmp_path / "keys.json"
    monkeypatch.setenv("SEGFLOW_KEYS_FILE", str(keys_file))
    cli = CliRunner()
    added = cli.invoke(app, ["keys", "add", "source", "--id", "shop", "--origin", "https://shop.example"])
    assert added.exit_code == 0, added.output
    secret = json.loads(added.output)["key"]
    listed = json.loads(cli.invoke(app, ["keys", "list"]).output)
    assert [k["id"] for k in listed["keys"]] == ["shop"] and secret not in str(listed)
    rotated = json.loads(cli.invoke(app, ["keys", "rotate", "shop"]).output)["key"]
    assert rotated != secret and read_keys_file(keys_file)[0].origins == ("https://shop.example",)
    with serve(settings_for(tmp_path / "state", keys_file=keys_file)) as url:
        body = track("q1", "q-1", T0, scroll_depth=75)
        r = httpx.post(url + "/v1/track", json=body, headers={**auth(rotated), "origin": "https://shop.example"})
        assert r.status_code == 400 and "out of its range [0, 1]" in r.text
        elsewhere = httpx.post(
            url + "/v1/track", json=body, headers={**auth(rotated), "origin": "https://evil.example"}
        )
        assert elsewhere.status_code == 403
        held = json.loads(cli.invoke(app, ["quarantine", "list", "--url", url, "--key", ADMIN]).output)
        assert held["count"] == 1 and held["held"][0]["problems"][0]["field"] == "properties.scroll_depth"
        one = cli.invoke(app, ["quarantine", "show", str(held["held"][0]["id"]), "--url", url, "--key", ADMIN])
        assert json.loads(one.output)["payload"]["properties"]["scroll_depth"] == 75
        again = cli.invoke(app, ["quarantine", "replay", str(held["held"][0]["id"]), "--url", url, "--key", ADMIN])
        assert again.exit_code == 1  # still out of range: it stays, and says why
    assert cli.invoke(app, ["keys", "revoke", "shop"]).exit_code == 0
    assert read_keys_file(keys_file) == []


def test_review_findings_stay_fixed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Attacks a cold review found: each answered with a clear 4xx, nothing personal kept."""
    keys_file = tmp_path / "keys.json"
    web = ApiKey("web", "source", "web-source-key", rate_per_s=100, burst=100)
    write_keys_file(keys_file, [web])
    settings = settings_for(tmp_path / "state", keys_file=keys_file, source_client_rate_per_s=5.0)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        # a custom event name holding an email, twice (the second once slipped past a cache)
        for i in range(2):
            body = track("pii-name", f"n{i}", T0 + i, event="Call bob@example.com")
            body["properties"] |= {"dave@example.com": 1}
            body["context"] = {"location": {"city": "carol@example.com"}}
            assert http.post("/v1/track", json=body, headers=auth(ADMIN)).status_code == 200
        # a flood of empty events: refused before any is parsed
        flood = json.dumps({"batch": [{}] * 100_000})
        assert http.post("/v1/batch", content=flood, headers={"content-type": "application/json"}).status_code == 401
        assert http.post("/v1/batch", content=flood, headers=JSON).status_code == 413
        many = http.post("/v1/batch", content=json.dumps({"batch": [{}] * 2000}), headers=JSON)
        assert many.status_code == 400 and len(many.json()["rejected"]) == 1000  # listed, capped
        assert http.get("/v1/admin/quarantine", headers=auth(ADMIN)).json()["count"] == 100  # kept, capped
        # nested too deep inside a batch over 32 KB: the deep one refused alone
        padded = json.dumps(track("d", "d1", T0, pad="x" * 30_000))
        deep = '{"batch": [' + padded + ', {"a": ' + "[" * 300 + "]" * 300 + "}]}"
        assert http.post("/v1/batch", content=deep, headers=JSON).status_code == 200
        # a quarantined copy keeps no key and no raw id; a cut one cannot be replayed
        bad = {**track("0123456789", "q1", T0, price="NaN"), "writeKey": web.secret}
        assert http.post("/v1/track", json=bad, headers={"origin": "x"}).status_code == 400
        held = http.get("/v1/admin/quarantine", params={"after": 100}, headers=auth(ADMIN)).json()["held"]
        shown = http.get(f"/v1/admin/quarantine/{held[-1]['id']}", headers=auth(ADMIN)).text
        assert web.secret not in shown and "0123456789" not in shown
        cut = http.get("/v1/admin/quarantine", params={"after": 101}, headers=auth(ADMIN)).json()["held"][0]
        assert http.post(f"/v1/admin/quarantine/{cut['id']}/replay", headers=auth(ADMIN)).status_code == 422
        # one client over its own rate does not spend the key's for everyone
        codes = [http.post("/v1/track", json=track("r", f"r{i}", T0), headers=auth(web.secret)).status_code
                 for i in range(40)]  # fmt: skip
        assert codes.count(429) >= 30
        # an erased user's later bad events are not kept either
        http.post("/v1/track", json=track("gone", "g1", T0), headers=auth(ADMIN))
        assert http.delete("/v1/profiles/gone", headers=auth(ADMIN)).status_code == 200
        before = http.get("/v1/admin/quarantine", headers=auth(ADMIN)).json()["count"]
        http.post("/v1/track", json=track("gone", "g2", T0, price="NaN"), headers=auth(ADMIN))
        assert http.get("/v1/admin/quarantine", headers=auth(ADMIN)).json()["count"] == before
        # a keys file that does not validate: its keys stop working (fail closed), settings keys go on, no 500
        keys_file.write_text('{"keys": [{"id": "web", "scope": "source", "key": "web-source-key", "rate_per_s": "x"}]}')
        time.sleep(0.3)
        assert http.post("/v1/track", json=track("k", "k1", T0), headers=auth(web.secret)).status_code == 401
        assert http.get("/v1/segments", headers=auth(READ)).status_code == 200
    stored = (tmp_path / "state" / "events.db").read_bytes().decode("utf-8", "replace")
    for raw in ("bob@example.com", "dave@example.com", "carol@example.com"):
        assert raw not in stored


def test_an_unexpected_error_answers_500_and_logs_no_personal_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Service, events: list[Event], *_: object) -> None:
        raise RuntimeError("failed for bob@example.com")

    monkeypatch.setattr(Service, "ingest", broken)
    with serve(settings_for(tmp_path / "state")) as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/track", json=track("u", "m", T0), headers=auth(ADMIN))
        assert r.status_code == 500 and r.json()["code"] == "internal"
        assert http.get("/healthz").status_code == 200  # the same connection goes on
    assert "request failed: RuntimeError" in caplog.text and "bob@example.com" not in caplog.text


def test_a_backup_under_load_restores_to_the_state_at_its_log_position(tmp_path: Path) -> None:
    import sqlite3
    import threading

    from serving.engine import Engine
    from serving.log import decode_event
    from serving.regime import build_features, load_config

    settings = settings_for(tmp_path / "state")
    target = tmp_path / "backup"
    with serve(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        for i in range(20):
            batch = [track(f"u{j % 37}", f"pre-{i}-{j}", T0 + (i * 50 + j) * 60_000) for j in range(50)]
            assert http.post("/v1/batch", json={"batch": batch}, headers=auth(ADMIN)).status_code == 200
        stop = threading.Event()

        def load() -> None:  # ingest goes on while the backup is taken
            with httpx.Client(base_url=url, timeout=60) as client:
                i = 0
                while not stop.is_set():
                    body = {
                        "batch": [
                            track(f"u{j % 37}", f"live-{i}-{j}", T0 + (1000 + i * 10 + j) * 60_000) for j in range(10)
                        ]
                    }
                    client.post("/v1/batch", json=body, headers=auth(ADMIN))
                    i += 1

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(0.3)
        done = CliRunner().invoke(app, ["backup", str(target), "--url", url, "--key", ADMIN])
        stop.set()
        loader.join()
        assert done.exit_code == 0, done.output
        doc = json.loads(done.output)
        assert doc["log_seq"] >= doc["snapshot_seq"] >= 1000
        again = CliRunner().invoke(app, ["backup", str(target), "--url", url, "--key", ADMIN])
        assert again.exit_code == 1 and "not an empty directory" in again.output
    restored = CliRunner().invoke(app, ["restore", str(target), "--state-dir", str(tmp_path / "fresh")])
    assert restored.exit_code == 0, restored.output
    service = Service(settings_for(tmp_path / "fresh"), Scorers(OnlineIntentModel(), intent_feature_names())).start()
    assert service.engine is not None and service.engine.seq == doc["log_seq"]
    config = load_config(ROOT / "config" / "segments.yaml")
    fresh = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()))
    db = sqlite3.connect(target / "events.db")
    fresh.replay([decode_event(b) for (b,) in db.execute("SELECT body FROM events ORDER BY seq")])
    db.close()
    got = {p: service.engine.vector(p) for p, _ in service.engine.store.items()}
    assert got == {p: fresh.vector(p) for p, _ in fresh.store.items()}
    service.close()


def test_a_reload_warns_of_a_property_no_feature_declares_and_no_stored_event_carries(tmp_path: Path) -> None:
    config = tmp_path / "segments.yaml"
    config.write_text("version: 1\nsegments:\n  - {name: carts, rule: 'count(add_to_cart, 1h) >= 1'}\n")
    settings = settings_for(tmp_path / "state", segments=config)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=60, headers=auth(ADMIN)) as http:
        assert http.post("/v1/track", json=track("w1", "w-1", T0, coupon="SPRING")).status_code == 200
        config.write_text(
            "version: 1\nsegments:\n"
            "  - {name: shoes, rule: 'count(add_to_cart, 1h, categroy == \"shoes\") >= 1'}\n"
            "  - {name: coupons, rule: 'count(add_to_cart, 1h, coupon == \"SPRING\") >= 1'}\n"
        )
        r = http.post("/v1/admin/reload")
        assert r.status_code == 200, r.text
        warnings = r.json()["warnings"]
    assert len(warnings) == 1 and "segment 'shoes': no feature declares a property 'categroy'" in warnings[0]
    assert "did you mean 'category'?" in warnings[0]  # coupon is carried by a stored event: no warning
