"""``make reliability``: attacks on a real ``segflow serve`` on 127.0.0.1,
one JSON line per figure. Every count of harm must be 0.

- SIGKILL loops at both durability levels (memory store, and Redis when it
  answers): acknowledged events lost, and duplicated, over the kills; kills
  while a snapshot's temporary file existed are counted apart.
- Poison values, fuzzed requests (schemathesis over the OpenAPI schema),
  deep nesting, broken credentials: 5xx answers.
- The auth matrix: routes answering a key whose scope should be refused.
- Erasure: traces of erased users in the state directory.
- Personal data: raw values of a Faker corpus in the state directory.
- Slow clients: ``/healthz`` failures while more slow connections than the
  limit are open.
- A soak with 20 clients: throughput, p50/p99 latency, RSS growth.

``python -m bench.reliability --short`` is the version CI runs (a few kills,
a short soak); the full one finishes in under 15 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.report import emit
from features.events import format_ms
from serving import snapshot
from serving.server import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN, READ, SOURCE = "rel-admin-key-1", "rel-read-key-1", "rel-source-key-1"
T0 = 1_788_775_200_000
H = {"authorization": f"Bearer {ADMIN}"}


class Served:
    """``segflow serve`` in a child process we own (stopped by its PID)."""

    def __init__(self, state: Path, durability: str = "process", **env: str) -> None:
        self.state, self.durability, self.env = state, durability, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Served:
        env = {**os.environ, "SEGFLOW_ADMIN_KEYS": ADMIN, "SEGFLOW_READ_KEYS": READ, "SEGFLOW_SOURCE_KEYS": SOURCE,
               "SEGFLOW_PII_KEY": "33" * 32, "SEGFLOW_TRACKING_URI": f"sqlite:///{self.state.parent / 'mlflow.db'}",
               "SEGFLOW_SOURCE_CLIENT_RATE_PER_S": "100000", **self.env}  # fmt: skip
        cmd = [sys.executable, "-m", "cli", "serve", "--port", str(self.port), "--clock", "event",
               "--durability", self.durability, "--state-dir", str(self.state),
               "--segments", str(ROOT / "config" / "segments.yaml")]  # fmt: skip
        log = open(self.state.parent / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.state.parent / 'server.log'}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@contextmanager
def served(tmp: Path, durability: str = "process", **env: str) -> Iterator[Served]:
    server = Served(tmp / "state", durability, **env).start()
    try:
        yield server
    finally:
        server.stop()


def _event(mid: str, user: str, at: int, **props: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Product Added", "messageId": mid,
            "timestamp": format_ms(at), "properties": {"category": "shoes", "price": 20, **props}}  # fmt: skip


def logged_ids(state: Path) -> list[str]:
    db = sqlite3.connect(f"file:{state / 'events.db'}?mode=ro", uri=True)
    try:
        return [orjson.loads(body)[0] for (body,) in db.execute("SELECT body FROM events")]
    finally:
        db.close()


# -- SIGKILL --------------------------------------------------------------------


def sigkill(durability: str, kills: int, store: str | None) -> dict[str, Any]:
    """Batches posted without pause; the server SIGKILLed at random moments,
    two in three of them the moment a snapshot's temporary file appears; restarted."""
    env = {"SEGFLOW_SNAPSHOT_EVERY_S": "0.3"}
    if store is not None:
        env |= {"SEGFLOW_STORE": store, "SEGFLOW_STORE_PREFIX": f"segflow-rel-{os.getpid()}:"}
    rnd = random.Random(kills)
    acked: set[str] = set()
    during_snapshot = 0
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        server = Served(state, durability, **env).start()
        k = 0
        for n in range(kills):
            stop = threading.Event()
            posting = threading.Thread(target=_post_until, args=(server.url, stop, acked, n))
            posting.start()
            at_snapshot = n % 3 != 2  # two kills in three wait for a snapshot being written
            deadline = time.monotonic() + (5.0 if at_snapshot else rnd.uniform(0.2, 1.2))
            while time.monotonic() < deadline:
                if at_snapshot and (state / "snapshot.tmp").exists():
                    break
                time.sleep(0.0005)
            caught = (state / "snapshot.tmp").exists()
            server.kill()
            during_snapshot += caught
            stop.set()
            posting.join()
            k += 1
            server = Served(state, durability, **env).start()
        ids = logged_ids(state)
        differ = _recovered_vs_rebuilt(server, Path(tmp), durability, env)
        server.stop()
    if store is not None:  # the keys this run wrote, and only those
        import redis

        client = redis.Redis.from_url(store)
        for key in client.scan_iter(match=env["SEGFLOW_STORE_PREFIX"] + "*"):
            client.delete(key)
        client.close()
    return {
        "kills": k,
        "kills_during_snapshot": during_snapshot,
        "acked": len(acked),
        "lost": len(acked - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "profiles_differing": differ,
    }


def _recovered_vs_rebuilt(server: Served, tmp: Path, durability: str, env: dict[str, str]) -> int:
    """The state recovered after the last kill (a snapshot and the log after
    it) against one rebuilt from the whole log alone: how many profiles
    differ (an event applied twice, or not at all, shows here, not in the log)."""
    rebuilt_state = tmp / "rebuilt" / "state"
    shutil.copytree(server.state, rebuilt_state, ignore=shutil.ignore_patterns("snapshot*", "store.generation"))
    rebuilt_env = {**env, "SEGFLOW_STORE_PREFIX": env.get("SEGFLOW_STORE_PREFIX", "segflow-rel:") + "rebuilt:"}
    rebuilt = Served(rebuilt_state, durability, **rebuilt_env).start()
    try:
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {READ}"}) as http:
            differ = 0
            for u in range(300):
                a = http.get(f"{server.url}/v1/profiles/u{u}")
                b = http.get(f"{rebuilt.url}/v1/profiles/u{u}")
                differ += a.status_code != b.status_code or (
                    a.status_code == 200 and a.json()["features"] != b.json()["features"]
                )
        return differ
    finally:
        rebuilt.stop()


def _post_until(url: str, stop: threading.Event, acked: set[str], round_: int) -> None:
    with httpx.Client(base_url=url, timeout=10, headers=H) as http:
        i = 0
        while not stop.is_set():
            ids = [f"r{round_}-{i}-{j}" for j in range(50)]
            body = {"batch": [_event(mid, f"u{(i * 50 + j) % 300}", T0 + i * 1000 + j) for j, mid in enumerate(ids)]}
            try:
                r = http.post("/v1/batch", json=body)
            except httpx.TransportError:
                return
            if r.status_code == 200:
                acked.update(ids)
            i += 1


# -- attacks over HTTP ------------------------------------------------------------


def poison_and_fuzz(examples: int) -> dict[str, Any]:
    """Poison values, deep nesting, broken credentials and schemathesis over
    the OpenAPI schema: how many 5xx, and whether snapshot, erasure and
    restart still work after the poison."""
    fives = requests = 0
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as server:
        with httpx.Client(base_url=server.url, timeout=30, headers=H) as http:
            batch = [_event(f"p{i}-{f}", "poisoned", T0 + i, **{f: v})
                     for i, v in enumerate(["1e999", 1e300, "Infinity", "NaN", "-inf"])
                     for f in ("price", "revenue", "quantity", "time_on_page_s")]  # fmt: skip
            batch.append(_event("good-1", "poisoned", T0 + 99))
            codes = [http.post("/v1/batch", json={"batch": batch}).status_code]
            codes.append(http.post("/v1/admin/advance", params={"to_ms": T0 + 3 * 86_400_000}).status_code)
            codes.append(http.post("/v1/admin/snapshot").status_code)
            codes.append(http.delete("/v1/profiles/poisoned").status_code)
            for depth in (40, 300, 1000):
                deep = '{"userId": "d", "event": "x", "properties": {"a": ' + "[" * depth + "]" * depth + "}}"
                codes.append(
                    http.post("/v1/track", content=deep, headers={"content-type": "application/json"}).status_code
                )
            for header in ("Basic w6nDqcOp", "Bearer", "Basic !!!"):
                codes.append(http.get("/v1/segments", headers={"authorization": header}).status_code)
            fives += sum(c >= 500 for c in codes)
            requests += len(codes)
        fuzz_fives, fuzzed = _fuzz(server.url, examples)
        fives, requests = fives + fuzz_fives, requests + fuzzed
        server.stop()
        restarted = Served(server.state).start()
        ok = httpx.get(restarted.url + "/readyz").status_code == 200
        restarted.stop()
    return {"5xx": fives, "requests": requests, "restart_ok": ok}


def _fuzz(url: str, examples: int) -> tuple[int, int]:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers={"authorization": f"Bearer {READ}"})
    fives = calls = 0

    def run_on(op: Any, key: str) -> None:
        @given(op.as_strategy())
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            nonlocal fives, calls
            response = case.call(base_url=url, headers={"authorization": f"Bearer {key}"})
            calls += 1
            fives += response.status_code >= 500

        call()

    for result in schema.get_all_operations():
        op: Any = result.ok()  # type: ignore[union-attr]
        run_on(op, ADMIN if op.method.upper() != "GET" else READ)
    return fives, calls


ROUTES = [  # method, path, the scopes that may
    ("POST", "/v1/track", {"source", "admin"}),
    ("GET", "/v1/profiles/u1", {"read", "admin"}),
    ("GET", "/v1/segments", {"read", "admin"}),
    ("GET", "/metrics", {"read", "admin"}),
    ("GET", "/openapi.json", {"read", "admin"}),
    ("DELETE", "/v1/profiles/nobody", {"admin"}),
    ("POST", "/v1/admin/snapshot", {"admin"}),
    ("GET", "/v1/admin/quarantine", {"admin"}),
    ("POST", "/v1/segments/preview", {"admin"}),
    ("GET", "/v1/profiles/u1/export", {"admin"}),
    ("POST", "/v1/admin/suppressions", {"admin"}),
    ("POST", "/v1/admin/vault/rotate", {"admin"}),
]


def auth_matrix() -> dict[str, Any]:
    """Every route with no key, each scope's key and a wrong one: answers
    that let a request through that should be refused, or the other way."""
    wrong = 0
    keys = {"source": SOURCE, "read": READ, "admin": ADMIN, "none": None, "bogus": "no-such-key-0"}
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as server, httpx.Client(base_url=server.url) as http:
        for method, path, allowed in ROUTES:
            for scope, key in keys.items():
                headers = {"authorization": f"Bearer {key}"} if key else {}
                body = _event("m-auth", "u1", T0) if path == "/v1/track" else None
                r = http.request(method, path, json=body, headers=headers)
                refused = r.status_code in (401, 403)
                wrong += refused == (scope in allowed)
    return {"wrong": wrong, "checks": len(ROUTES) * len(keys)}


def erasure_and_pii(cases: int) -> dict[str, Any]:
    """A Faker corpus of personal data sent in, half its users erased: raw
    values and erased ids found anywhere in the state directory."""
    from faker import Faker

    secrets: list[str] = []
    erased: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        with served(Path(tmp)) as server, httpx.Client(base_url=server.url, timeout=30, headers=H) as http:
            for i in range(cases):
                fake = Faker(["en_US", "de_DE", "fr_FR", "ja_JP", "pt_BR"][i % 5])
                fake.seed_instance(i)
                email, phone, ip = fake.email(), fake.phone_number(), fake.ipv4_public()
                user = f"user-{i}-{fake.user_name()}"
                traits = {"email": email, "phone": phone, "full_name": fake.name()}
                http.post("/v1/identify", json={"userId": user, "traits": traits, "messageId": f"i{i}",
                                                "timestamp": format_ms(T0 + i)})  # fmt: skip
                note = f"call {phone}, mail {email}, from {ip}"
                http.post("/v1/track", json=_event(f"t{i}", user, T0 + i, note=note))
                secrets += [email, phone, ip]
                if i % 2:
                    http.delete(f"/v1/profiles/{user}")
                    erased.append(user)
        text = "\n".join(_state_text(p) for p in (Path(tmp) / "state").iterdir() if p.is_file())
    return {
        "raw_personal": sum(s in text for s in secrets),
        "erasure_traces": sum(u in text for u in erased),
        "values": len(secrets),
        "erased": len(erased),
    }


def _state_text(path: Path) -> str:
    if path.name.startswith("snapshot") and path.suffix == ".bin":
        return orjson.dumps(snapshot.decode(path.read_bytes())).decode()
    return path.read_bytes().decode("latin-1")


def slow_clients(deadline_s: float = 2.0, limit: int = 20) -> dict[str, Any]:
    env = {"SEGFLOW_REQUEST_DEADLINE_S": str(deadline_s), "SEGFLOW_MAX_PENDING_REQUESTS": str(limit)}
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp), **env) as server:
        socks = []
        for _ in range(limit * 3):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        failures = sum(httpx.get(server.url + "/healthz", timeout=5).status_code != 200 for _ in range(50))
        started, held = time.monotonic(), 0
        for s in socks:
            s.settimeout(max(0.1, deadline_s * 3 - (time.monotonic() - started)))
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                held += s.recv(1) != b""
            s.close()
    return {"healthz_failures": failures, "slow_held_past_deadline": held, "slow": len(socks)}


def soak(seconds: float, clients: int = 20) -> dict[str, Any]:
    lat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as server:
        time.sleep(0.5)
        rss0 = server.rss_kb()
        stop = threading.Event()

        def client(c: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30, headers=H) as http:
                i = 0
                while not stop.is_set():
                    start = time.perf_counter()
                    http.post("/v1/track", json=_event(f"s{c}-{i}", f"u{(c * 7919 + i) % 5000}", T0 + i * 100))
                    lat.append((time.perf_counter() - start) * 1000)
                    i += 1

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        rss1 = server.rss_kb()
    return {
        "requests_per_s": len(lat) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rss_growth_mb": (rss1 - rss0) / 1024,
        "seconds": round(elapsed, 1),
    }


def _redis_url() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return "redis://127.0.0.1:6379/0" if s.recv(16).startswith(b"+PONG") else None
    except OSError:
        return None


def main(short: bool = False) -> None:
    redis = _redis_url()
    stores = (None, redis) if redis else (None,)
    kills = (8 if short else 24) // (2 * len(stores))  # each durability level with each store
    lost = duplicated = total_kills = during = differing = 0
    for durability in ("process", "power"):
        for store in stores:
            r = sigkill(durability, kills, store)
            lost, duplicated = lost + r["lost"], duplicated + r["duplicated"]
            differing += r["profiles_differing"]
            total_kills, during = total_kills + r["kills"], during + r["kills_during_snapshot"]
            emit("reliability", f"reliability_sigkill_{durability}_{'redis' if store else 'memory'}_lost", r["lost"],
                 "events", "0", **{k: v for k, v in r.items() if k != "lost"})  # fmt: skip
    emit("reliability", "reliability_acked_lost", lost, "events", "0", kills=total_kills, during_snapshot=during)
    emit("reliability", "reliability_duplicated", duplicated, "events", "0", kills=total_kills)
    emit("reliability", "reliability_recovered_vs_rebuilt", differing, "profiles", "0", kills=total_kills)
    r = poison_and_fuzz(20 if short else 150)
    emit(
        "reliability", "reliability_5xx", r["5xx"], "responses", "0", requests=r["requests"], restart_ok=r["restart_ok"]
    )
    r = auth_matrix()
    emit("reliability", "reliability_auth_wrong", r["wrong"], "answers", "0", checks=r["checks"])
    r = erasure_and_pii(20 if short else 100)
    emit("reliability", "reliability_raw_pii", r["raw_personal"], "values", "0", values=r["values"])
    emit("reliability", "reliability_erasure_traces", r["erasure_traces"], "ids", "0", erased=r["erased"])
    r = slow_clients()
    emit("reliability", "reliability_slow_client_healthz_failures", r["healthz_failures"], "requests", "0",
         held_past_deadline=r["slow_held_past_deadline"], slow=r["slow"])  # fmt: skip
    r = soak(10 if short else 60)
    emit("reliability", "reliability_soak_p99_ms", r["p99_ms"], "ms", None, **{k: round(v, 2) for k, v in r.items()})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the short version CI runs")
    main(parser.parse_args().short)
