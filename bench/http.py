"""The service over HTTP on 127.0.0.1: ``/v1/batch`` against the in-process
engine on the same events; single-event latency from a sequential client at
half its maximum rate, at ``process`` and ``power`` durability; and the
wall-clock lag of due exits."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
from pydantic import SecretStr

from bench.report import emit
from features.events import Event, to_payload
from features.table import table_to_events
from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.engine import Engine
from serving.regime import build_features, intent_feature_names, load_config
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.settings import Settings
from training.synthetic import generate

ROOT = Path(__file__).resolve().parent.parent
WRITE = "bench-write-key"


def _settings(state: Path, **kw: object) -> Settings:
    return Settings(
        state_dir=state, write_keys=[SecretStr(WRITE)], read_keys=[SecretStr("bench-read-key")],
        tracking_uri=f"sqlite:///{state / 'none.db'}", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _scorers() -> Scorers:
    return Scorers(OnlineIntentModel(), intent_feature_names())


def _body(events: list[Event]) -> bytes:
    return orjson.dumps({"batch": [to_payload(e) for e in events]})


def batch_vs_engine(events: list[Event]) -> None:
    batches = [events[i : i + 500] for i in range(0, len(events), 500)]
    config = load_config(ROOT / "config/segments.yaml")
    engine = Engine(config, build_features(config), _scorers())
    start = time.perf_counter()
    for b in batches:
        engine.ingest(b)
    engine_rate = len(events) / (time.perf_counter() - start)
    bodies = [_body(b) for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp), clock="event")
        with (
            ServerThread(create_app(settings, _scorers())) as url,
            httpx.Client(base_url=url, auth=(WRITE, "")) as http,
        ):
            start = time.perf_counter()
            for body in bodies:
                r = http.post("/v1/batch", content=body, headers={"content-type": "application/json"})
                r.raise_for_status()
            http_rate = len(events) / (time.perf_counter() - start)
    emit("http", "http_batch_events_per_s", http_rate, "events/s", batch=500)
    emit("http", "http_batch_vs_engine_ratio", http_rate / engine_rate, "x", ">= 0.8", engine_events_per_s=engine_rate)


def single_latency(events: list[Event], durability: str) -> None:
    bodies = [(f"/v1/{e.kind}", orjson.dumps(to_payload(e))) for e in events if e.kind in ("track", "page", "identify")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp), clock="event", durability=durability)
        with (
            ServerThread(create_app(settings, _scorers())) as url,
            httpx.Client(base_url=url, auth=(WRITE, "")) as http,
        ):
            headers = {"content-type": "application/json"}
            warm = 300
            start = time.perf_counter()
            for path, body in bodies[:warm]:
                http.post(path, content=body, headers=headers).raise_for_status()
            max_rate = warm / (time.perf_counter() - start)
            gap = 2.0 / max_rate  # half the maximum rate
            latencies = []
            next_at = time.perf_counter()
            for path, body in bodies[warm:]:
                now = time.perf_counter()
                if next_at > now:
                    time.sleep(next_at - now)
                t = time.perf_counter()
                http.post(path, content=body, headers=headers).raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
                next_at = t + gap
    p50, p99 = np.percentile(latencies, [50, 99])
    emit("http", f"http_single_p50_ms_{durability}", float(p50), "ms", requests=len(latencies))
    name = "http_single_p99_ms" + ("" if durability == "process" else "_power")
    goal = "<= 5" if durability == "process" else None
    emit("http", name, float(p99), "ms", goal, max_rate_per_s=round(max_rate), requests=len(latencies))


EXPIRY = """
version: 1
segments:
  - name: seen_2s
    description: any event in the last two seconds
    rule: since(any) <= 2s
"""


def expiry_lag(users: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "segments.yaml"
        config.write_text(EXPIRY)
        settings = _settings(Path(tmp) / "state", clock="wall", segments=config)
        app = create_app(settings, _scorers())
        with ServerThread(app) as url, httpx.Client(base_url=url, auth=(WRITE, "")) as http:
            now = time.time_ns() // 1_000_000
            for i in range(0, users, 200):
                batch = [Event(f"x{u}", "page_view", f"u{u}", None, now, now, kind="page") for u in range(i, i + 200)]
                r = http.post("/v1/batch", content=_body(batch), headers={"content-type": "application/json"})
                r.raise_for_status()
            service = app.state.service
            deadline = time.monotonic() + 30
            while len(service.due_lag_ms) < users and time.monotonic() < deadline:
                time.sleep(0.1)
            lags = list(service.due_lag_ms)
    p50, p99 = np.percentile(lags, [50, 99]) if lags else (float("nan"), float("nan"))
    emit("http", "expiry_lag_p99_ms", float(p99), "ms", "<= 1000", p50_ms=float(p50), exits=len(lags), users=users)


def main() -> None:
    logging.getLogger("segflow").setLevel(logging.ERROR)  # the fresh-model notes, once per server
    events = sorted(table_to_events(generate(users=1500, days=3, seed=4).events), key=lambda e: e.ts_ms)
    batch_vs_engine(events)
    single_latency(events[:2300], "process")
    single_latency(events[:2300], "power")
    expiry_lag()


if __name__ == "__main__":
    main()
