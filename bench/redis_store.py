"""The engine with its profiles in Redis against the embedded engine, same
run and events; and what a profile costs Redis in memory.

Needs a Redis on ``$SEGFLOW_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/0``);
keys go under a fresh prefix and are deleted afterwards. Without Redis the
figures are left out, with a line on stderr saying so.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from bench.report import emit
from features.events import Event
from features.table import table_to_events
from models.intent_online import OnlineIntentModel
from serving.engine import Engine
from serving.regime import build_features, intent_feature_names, load_config
from serving.scorers import Scorers
from serving.store import RedisStore
from training.synthetic import generate

URL = os.environ.get("SEGFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/0")
ROOT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "segments.yaml"


def _run(events: list[Event], store: RedisStore | None) -> float:
    config = load_config(ROOT_CONFIG)
    engine = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()), store=store)
    start = time.perf_counter()
    for i in range(0, len(events), 500):
        engine.ingest(events[i : i + 500])
    return time.perf_counter() - start


def main() -> None:
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"bench.redis_store: no Redis at {URL} ({exc}); install and start redis-server", file=sys.stderr)
        return
    config = load_config(ROOT_CONFIG)
    events = sorted(table_to_events(generate(users=1500, days=3, seed=4).events), key=lambda e: e.ts_ms)
    store = RedisStore(client, build_features(config), prefix=f"segflow-bench:{uuid.uuid4().hex}:")
    gc.collect()
    gc.freeze()
    try:
        embedded_s = _run(events, None)
        redis_s = _run(events, store)
        n = len(events)
        emit("redis", "redis_vs_embedded_ratio", embedded_s / redis_s, "x", ">= 0.35",
             redis_events_per_s=round(n / redis_s), embedded_events_per_s=round(n / embedded_s), events=n,
             batch=500, models="online")  # fmt: skip
        store.clear()
        month = sorted(table_to_events(generate(users=300, days=30, seed=4).events), key=lambda e: e.ts_ms)
        _run(month, store)
        sizes = np.array([client.memory_usage(key) or 0 for key in client.scan_iter(match=store.prefix + "*")])
        emit("redis", "redis_profile_bytes", float(np.percentile(sizes, 95)), "bytes", "<= 6144",
             statistic="p95 of MEMORY USAGE, users with a month of history", median=int(np.median(sizes)),
             users=len(sizes))  # fmt: skip
    finally:
        gc.unfreeze()
        store.clear()


if __name__ == "__main__":
    main()
