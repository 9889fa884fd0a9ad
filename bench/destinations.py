"""Deliveries to a healthy local webhook receiver (``tests/receiver.py``, in a
process of its own): how many changes a second one destination delivers
from a backlog (batches capped at 100), and the latency from an event's
receipt, or a due instant, to the receiver's receipt while 500 events a
second arrive on the wall clock."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from pydantic import SecretStr

from bench.report import emit
from features.events import Event, to_payload
from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.service import Service
from serving.settings import Settings
from tests.receiver import Spawned

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "bench-destinations-admin"
SECRET = "whsec_bench_" + "0" * 20
T0 = 1_788_775_200_000
BACKLOG_USERS = 5_000
RATE, SECONDS = 500, 10
BACKLOG_RULES = """
version: 1
segments:
  - name: carted_1h
    rule: count(add_to_cart, 1h) >= 1
  - name: viewed_30m
    rule: count(product_view, 30m) >= 1
"""
LIVE_RULES = """
version: 1
segments:
  - name: seen_3s
    rule: since(product_view) < 3s
"""


def _settings(tmp: Path, rules: str, clock: str, receiver: str | None) -> Settings:
    (tmp / "segments.yaml").write_text(rules)
    destinations = tmp / "destinations.yaml"
    if receiver is not None:
        destinations.write_text(
            "destinations:\n  - name: bench\n    kind: webhook\n"
            f"    url: {receiver}/hooks/bench\n    secret: {SECRET}\n"
            "    batch_size: 100\n    concurrency: 8\n    rate_per_s: 1000\n    start: oldest\n"
        )
    return Settings(
        state_dir=tmp / "state", clock=clock, segments=tmp / "segments.yaml", destinations=destinations,  # type: ignore[arg-type]
        admin_keys=[SecretStr(ADMIN)], read_keys=[SecretStr("bench-destinations-read")], snapshot_every_s=3600,
    )  # fmt: skip


def _scorers() -> Scorers:
    return Scorers(OnlineIntentModel(), intent_feature_names())


def throughput() -> None:
    """A backlog of changes in the outbox, then a dispatcher started: changes delivered a second."""
    with tempfile.TemporaryDirectory() as tmp, Spawned(SECRET) as receiver:
        warm = Service(_settings(Path(tmp), BACKLOG_RULES, "event", None), _scorers()).start()
        events = []
        for u in range(BACKLOG_USERS):
            t = T0 + (u % 60) * 60_000
            events += [
                Event(f"v{u}", "product_view", f"u{u}", None, t, t),
                Event(f"c{u}", "add_to_cart", f"u{u}", None, t, t),
            ]
        for i in range(0, len(events), 2000):
            warm.ingest(events[i : i + 2000])
        warm.advance(T0 + 6 * 3_600_000)
        assert warm.log is not None
        backlog = len(warm.log.changes_after(0, 10**7))
        warm.close()
        app = create_app(_settings(Path(tmp), BACKLOG_RULES, "event", receiver.url), _scorers())
        started = time.perf_counter()
        with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            while _delivered(http) < backlog:
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
    emit("destinations", "destination_deliveries_per_s", backlog / elapsed, "changes/s", ">= 1000",
         changes=backlog, batch=100, concurrency=8)  # fmt: skip


def _delivered(http: httpx.Client) -> int:
    status = http.get("/v1/admin/destinations", auth=(ADMIN, "")).json()["destinations"][0]
    return int(status["counts"]["delivered"])


def latency() -> None:
    """500 events a second for 10 s on the wall clock, each a new user's view: an
    enter at its receipt, an exit 3 s later with no new event; from either
    instant to the receiver's receipt."""
    with tempfile.TemporaryDirectory() as tmp, Spawned(SECRET) as receiver:
        app = create_app(_settings(Path(tmp), LIVE_RULES, "wall", receiver.url), _scorers())
        with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            n = int(RATE * 0.05)  # every 50 ms
            start = time.perf_counter()
            sent = 0
            while time.perf_counter() - start < SECONDS:
                now = time.time_ns() // 1_000_000
                batch = [Event(f"m{sent + i}", "product_view", f"u{sent + i}", None, now, now, name="Product Viewed")
                         for i in range(n)]  # fmt: skip
                body = orjson.dumps({"batch": [to_payload(e) for e in batch]})
                r = http.post("/v1/batch", content=body, auth=(ADMIN, ""), headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text[:300]
                sent += n
                time.sleep(max(start + (sent / RATE) - time.perf_counter(), 0))
            deadline = time.monotonic() + 30
            while receiver.summary()["deliveries"] < 2 * sent and time.monotonic() < deadline:
                time.sleep(0.2)
        summary = receiver.summary()
    emit("destinations", "destination_latency_p99_ms", summary["instant_latency_ms_p99"], "ms", "<= 250",
         p50_ms=summary["instant_latency_ms_p50"], deliveries=summary["deliveries"], events=sent,
         rate_per_s=RATE)  # fmt: skip


def main() -> None:
    logging.getLogger("segflow").setLevel(logging.WARNING)
    throughput()
    latency()


if __name__ == "__main__":
    main()
