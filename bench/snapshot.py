"""``/healthz`` while the state is saved and rebuilt: a service of 20,000
profiles on 127.0.0.1, a sequential client on ``/healthz``, its latency while
a snapshot is written (a forked child) and while a reload under a new config
rebuilds the state from the log (a worker thread)."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from pydantic import SecretStr

from bench.report import emit
from features.events import Event
from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.service import Service
from serving.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "bench-admin-key"
USERS = 20_000
T0 = 1_788_775_200_000
TYPES = ("product_view", "add_to_cart", "page_view", "email_open", "purchase")


def _events(now: int) -> list[Event]:
    """Five events a user, 20,000 users, received now (within retention)."""
    out = []
    for i in range(USERS * 5):
        user, k = i % USERS, i // USERS
        props = {"category": f"c{user % 17}", "price": 5.0 + user % 40, "product_id": f"p{(user * 7 + k) % 900}"}
        out.append(Event(f"m{i}", TYPES[(user + k) % 5], f"u{user}", None, T0 + i * 600, now, properties=props))
    return out


def _watch(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            start = time.perf_counter()
            http.get("/healthz")
            out.append((time.perf_counter() - start) * 1000)


def _during(url: str, action: threading.Thread) -> list[float]:
    """``/healthz`` latencies (ms) from a sequential client while ``action`` runs."""
    stop, lat = threading.Event(), list[float]()
    watcher = threading.Thread(target=_watch, args=(url, stop, lat))
    watcher.start()
    time.sleep(0.2)
    action.start()
    action.join()
    stop.set()
    watcher.join()
    return lat


def main() -> None:
    logging.getLogger("segflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "segments.yaml"
        rules.write_text((ROOT / "config" / "segments.yaml").read_text())
        settings = Settings(
            state_dir=Path(tmp) / "state", clock="event", admin_keys=[SecretStr(ADMIN)],
            read_keys=[SecretStr("bench-read-key")], segments=rules, snapshot_every_s=3600,
        )  # fmt: skip
        scorers = Scorers(OnlineIntentModel(), intent_feature_names())
        warm = Service(settings, scorers).start()
        events = _events(time.time_ns() // 1_000_000)
        for i in range(0, len(events), 5000):
            warm.ingest(events[i : i + 5000])
        warm.close()
        app = create_app(settings, scorers)
        service: Service = app.state.service
        with ServerThread(app) as url, httpx.Client(base_url=url, timeout=300) as http:
            admin = {"authorization": f"Bearer {ADMIN}"}
            assert service.engine is not None
            profiles = len(service.engine.users)

            def snapshot() -> None:
                assert http.post("/v1/admin/snapshot", headers=admin).json()["started"]
                while service.snapshot_busy:
                    time.sleep(0.01)

            def reload() -> None:
                text = rules.read_text().replace("likely_buyer: 0.35", "likely_buyer: 0.3")
                rules.write_text(text)
                assert http.post("/v1/admin/reload", headers=admin).status_code == 200

            started = time.perf_counter()
            during_snapshot = _during(url, threading.Thread(target=snapshot))
            snapshot_s = time.perf_counter() - started
            started = time.perf_counter()
            during_reload = _during(url, threading.Thread(target=reload))
            reload_s = time.perf_counter() - started
    p_snap, p_reload = (float(np.percentile(x, 99)) for x in (during_snapshot, during_reload))
    emit(
        "snapshot", "snapshot_healthz_p99_ms", max(p_snap, p_reload), "ms", "<= 50", profiles=profiles,
        while_snapshot_p99_ms=round(p_snap, 2), snapshot_s=round(snapshot_s, 2), while_reload_p99_ms=round(p_reload, 2),
        reload_s=round(reload_s, 2), requests=len(during_snapshot) + len(during_reload),
    )  # fmt: skip


if __name__ == "__main__":
    main()
