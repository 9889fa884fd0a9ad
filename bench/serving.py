"""The in-process engine: events per second at ``process`` durability, and
against the sum of its parts' costs measured in the same run."""

from __future__ import annotations

import copy
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bench.report import best_of, emit
from features.defaults import DEFAULT_SPECS
from features.events import Event
from features.offline import OfflineFeatures
from features.online import FeatureSet
from features.table import events_to_table, table_to_events
from models.clusters import ClusterModel
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel
from segments.config import SegmentConfig
from segments.membership import Memberships, evaluate, next_due
from serving.engine import Engine
from serving.log import EventLog
from serving.preview import preview
from serving.regime import build_features, intent_feature_names, load_config, loads_config
from serving.scorers import Scorers
from training.datasets import build, cluster_features, user_vectors
from training.synthetic import generate

ROOT = Path(__file__).resolve().parent.parent


def trained_scorers() -> Scorers:
    """All three models, trained quickly on a small synthetic history (no MLflow)."""
    history = generate(users=800, days=14, seed=21)
    fs = FeatureSet(DEFAULT_SPECS)
    data = build(history.events, fs, seed=0)
    batch = BatchIntentModel(random_state=0).fit(data.X, data.y)
    habits = cluster_features(history.events)
    clusters = ClusterModel(random_state=0, specs=habits.specs).fit(user_vectors(history.events, habits))
    return Scorers(OnlineIntentModel(), intent_feature_names(), batch=batch, clusters=clusters)


def main() -> None:
    config = load_config(ROOT / "config/segments.yaml")
    events = sorted(table_to_events(generate(users=1500, days=3, seed=4).events), key=lambda e: e.ts_ms)
    with_models = trained_scorers()
    batches = [events[i : i + 500] for i in range(0, len(events), 500)]
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(Path(tmp) / "events.db", "process")
        engine = Engine(config, build_features(config, with_models), copy.deepcopy(with_models), log=log)
        start = time.perf_counter()
        for batch in batches:
            engine.ingest(batch)
        engine_s = time.perf_counter() - start
        evaluations = sum(engine.stats.transitions.values())
        # a models-only reload: every profile scored again and evaluated (on the event loop)
        start = time.perf_counter()
        swapped = engine.rescore(engine.watermark + 1)
        rescore_s = time.perf_counter() - start
        profiles_held = len(engine.users)
        log.close()
        log = EventLog(Path(tmp) / "online-only.db", "process")
        online_only = Engine(
            config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()), log=log
        )
        start = time.perf_counter()
        for batch in batches:
            online_only.ingest(batch)
        online_only_s = time.perf_counter() - start
        log.close()

        # the parts, each alone over the same events, evaluated once per event
        parts: dict[str, float] = {}
        log = EventLog(Path(tmp) / "parts.db", "process")
        t = time.perf_counter()
        for batch in batches:
            log.append(batch)
        parts["log"] = time.perf_counter() - t
        log.close()
        # the other parts in one pass, as the engine runs them: each event's profile, vector,
        # scores, cluster and memberships as they stand then, each part timed on its own
        fs = build_features(config, with_models)
        scorers = copy.deepcopy(with_models)
        profiles: dict = {}
        members: dict[str, Memberships] = {}
        clock = time.perf_counter
        spent = dict.fromkeys(("features", "read", "scores", "cluster", "rules", "next_due"), 0.0)
        for e in events:
            pid = e.profile_id
            t0 = clock()
            p = profiles.get(pid)
            if p is None:
                p = profiles[pid] = fs.new_profile()
            fs.update(p, e)
            t1 = clock()
            vector = fs.read(p, e.ts_ms)
            t2 = clock()
            scores = scorers.scores(pid, vector, e.ts_ms, True)
            t3 = clock()
            cluster = scorers.cluster(vector)
            t4 = clock()
            now, _ = evaluate(config, vector, scores, cluster, members.get(pid) or Memberships(), e.ts_ms)
            members[pid] = now
            t5 = clock()
            next_due(config, fs, p, now, e.ts_ms)
            t6 = clock()
            spent["features"] += t1 - t0
            spent["read"] += t2 - t1
            spent["scores"] += t3 - t2
            spent["cluster"] += t4 - t3
            spent["rules"] += t5 - t4
            spent["next_due"] += t6 - t5
        parts.update(spent)
    gc.unfreeze()
    n = len(events)
    emit("serving", "engine_events_per_s", n / engine_s, "events/s", ">= 15k", events=n, transitions=evaluations,
         models="online, batch, clusters", online_model_only_events_per_s=round(n / online_only_s))  # fmt: skip
    emit(
        "serving",
        "engine_vs_parts_ratio",
        sum(parts.values()) / engine_s,
        "x",
        ">= 0.7",
        parts_us_per_event={k: round(v / n * 1e6, 1) for k, v in parts.items()},
        engine_us_per_event=round(engine_s / n * 1e6, 1),
    )

    emit("serving", "rescore_profiles_per_s", profiles_held / rescore_s, "profiles/s", profiles=profiles_held,
         changes=len(swapped), note="a models-only reload's pause: profiles held / this")  # fmt: skip

    recompute(config)
    freshness(config, events)
    preview_rate(config, with_models)


def preview_rate(config: SegmentConfig, scorers: Scorers, users: int = 2000, days: int = 30) -> None:
    """A synthetic month previewed under the shipped config and a tuned
    threshold (as the CLI runs it: the stored table in arrival order, the
    trained models, frozen), against computing the offline features at
    every event once, the preview's floor."""
    table = generate(users=users, days=days, seed=6).events
    table = table.take(pc.sort_indices(table, [("received_at", "ascending")]))
    text = (ROOT / "config/segments.yaml").read_text().replace("likely_buyer: 0.35", "likely_buyer: 0.25")
    new = loads_config(text)
    gc.collect()
    preview_s = best_of(2, lambda: preview(config, new, table, scorers))
    features = build_features(config, scorers)
    cutoffs = pd.DataFrame({"profile_id": table.column("profile_id").to_numpy(zero_copy_only=False),
                            "at": table.column("ts").cast(pa.int64()).to_numpy()})  # fmt: skip
    offline_s = best_of(2, lambda: OfflineFeatures(features, table).at(cutoffs))
    rate = table.num_rows / preview_s
    emit("serving", "preview_events_per_s", rate, "events/s", ">= 50000", events=table.num_rows, users=users, days=days)
    emit("serving", "preview_vs_offline_features_ratio", rate / (table.num_rows / offline_s), "ratio",
         offline_features_events_per_s=round(table.num_rows / offline_s))  # fmt: skip


def recompute(config: SegmentConfig, per_user: int = 300) -> None:
    """Per event, the engine's update against the peers' per-event recompute:
    rebuild the user's features from their whole history, score, evaluate."""
    month = sorted(table_to_events(generate(users=600, days=30, seed=4).events), key=lambda e: e.ts_ms)
    by_user: dict[str, list[Event]] = {}
    for e in month:
        by_user.setdefault(e.profile_id, []).append(e)
    users = [evs[:per_user] for evs in by_user.values() if len(evs) >= per_user][:4]
    stream = sorted((e for evs in users for e in evs), key=lambda e: e.ts_ms)
    engine = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()))
    start = time.perf_counter()
    for e in stream:
        engine.ingest([e])
    engine_s = time.perf_counter() - start
    fs = build_features(config)
    scorers = Scorers(OnlineIntentModel(), intent_feature_names())
    start = time.perf_counter()
    for evs in users:
        for i, e in enumerate(evs):
            p = fs.new_profile()
            for past in evs[: i + 1]:
                fs.update(p, past)
            vector = fs.read(p, e.ts_ms)
            evaluate(config, vector, scorers.scores(e.profile_id, vector, e.ts_ms, True), None, Memberships(), e.ts_ms)
    recompute_s = time.perf_counter() - start
    n = len(stream)
    emit("serving", "engine_vs_recompute_ratio", recompute_s / engine_s, "x", ">= 100",
         engine_events_per_s=round(n / engine_s), recompute_events_per_s=round(n / recompute_s),
         events_per_user=per_user)  # fmt: skip


def freshness(config: SegmentConfig, events: list[Event]) -> None:
    """Event to segment decision: ours (each event alone through the engine)
    against a batch recompute of every user every 60 s (the peers' model):
    an event waits for the next run, then for the run to finish."""
    engine = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()))
    latencies = []
    for e in events:
        t = time.perf_counter()
        engine.ingest([e])
        latencies.append((time.perf_counter() - t) * 1000)
    fs = build_features(config)
    start = time.perf_counter()
    offline = OfflineFeatures(fs, events_to_table(events))
    users = sorted({e.profile_id for e in events})
    end = events[-1].ts_ms
    vectors = offline.at(pd.DataFrame({"profile_id": users, "at": end})).to_dict("records")
    for vector in vectors:
        evaluate(config, vector, {}, None, Memberships(), end)
    batch_s = time.perf_counter() - start
    arrivals = np.random.default_rng(0).uniform(0, 60, size=100_000)
    waits_ms = ((60 - arrivals) + batch_s) * 1000
    emit("serving", "freshness_p99_ms", float(np.percentile(latencies, 99)), "ms", "<= 5",
         p50_ms=round(float(np.percentile(latencies, 50)), 3), events=len(events))  # fmt: skip
    emit("serving", "batch_recompute_freshness_p99_ms", float(np.percentile(waits_ms, 99)), "ms",
         batch_run_s=round(batch_s, 2), users=len(users), every_s=60)  # fmt: skip


if __name__ == "__main__":
    main()
