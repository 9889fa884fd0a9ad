"""The in-process engine: events per second at ``process`` durability, and
against the sum of its parts' costs measured in the same run."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

from bench.report import emit
from features.table import table_to_events
from models.intent_online import OnlineIntentModel
from segments.membership import Memberships, evaluate, next_due
from serving.engine import Engine
from serving.log import EventLog
from serving.scorers import Scorers
from serving.service import build_features, intent_feature_names, load_config
from training.synthetic import generate

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    config = load_config(ROOT / "config/segments.yaml")
    events = sorted(table_to_events(generate(users=1500, days=3, seed=4).events), key=lambda e: e.ts_ms)
    batches = [events[i : i + 500] for i in range(0, len(events), 500)]
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(Path(tmp) / "events.db", "process")
        engine = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()), log=log)
        start = time.perf_counter()
        for batch in batches:
            engine.ingest(batch)
        engine_s = time.perf_counter() - start
        evaluations = sum(engine.stats.transitions.values())
        log.close()

        # the parts, each alone over the same events, evaluated once per event
        parts: dict[str, float] = {}
        log = EventLog(Path(tmp) / "parts.db", "process")
        t = time.perf_counter()
        for batch in batches:
            log.append(batch)
        parts["log"] = time.perf_counter() - t
        log.close()
        fs = build_features(config)
        profiles: dict = {}
        t = time.perf_counter()
        for e in events:
            p = profiles.get(e.profile_id)
            if p is None:
                p = profiles[e.profile_id] = fs.new_profile()
            fs.update(p, e)
        parts["features"] = time.perf_counter() - t
        vectors = []
        t = time.perf_counter()
        for e in events:
            vectors.append(fs.read(profiles[e.profile_id], e.ts_ms))
        parts["read"] = time.perf_counter() - t
        scorers = Scorers(OnlineIntentModel(), intent_feature_names())
        t = time.perf_counter()
        scores = [scorers.scores(e.profile_id, v, e.ts_ms, True) for e, v in zip(events, vectors, strict=True)]
        parts["scores"] = time.perf_counter() - t
        members = Memberships()
        t = time.perf_counter()
        for e, v, s in zip(events, vectors, scores, strict=True):
            evaluate(config, v, s, None, members, e.ts_ms)
        parts["rules"] = time.perf_counter() - t
        t = time.perf_counter()
        for e in events:
            next_due(config, fs, profiles[e.profile_id], members, e.ts_ms)
        parts["next_due"] = time.perf_counter() - t
    gc.unfreeze()
    n = len(events)
    emit("serving", "engine_events_per_s", n / engine_s, "events/s", ">= 15k", events=n, transitions=evaluations)
    emit(
        "serving",
        "engine_vs_parts_ratio",
        sum(parts.values()) / engine_s,
        "x",
        ">= 0.7",
        parts_us_per_event={k: round(v / n * 1e6, 1) for k, v in parts.items()},
        engine_us_per_event=round(engine_s / n * 1e6, 1),
    )


if __name__ == "__main__":
    main()
