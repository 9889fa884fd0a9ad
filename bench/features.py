"""Feature throughput: online updates, against rescans, offline; profile size."""

from __future__ import annotations

import gc
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from bench.report import best_of, emit
from features.codec import encode
from features.defaults import DEFAULT_SPECS
from features.events import Event
from features.offline import OfflineFeatures
from features.online import FeatureSet, Profile
from features.table import table_to_events
from training.synthetic import generate


def online_rate(fs: FeatureSet, events: list[Event]) -> float:
    def run() -> None:
        profiles: dict[str, Profile] = {}
        for e in events:
            p = profiles.get(e.profile_id)
            if p is None:
                p = profiles[e.profile_id] = fs.new_profile()
            fs.update(p, e)

    return len(events) / best_of(3, run)


def rescan_ratio(fs: FeatureSet, events: list[Event], per_user: int = 300) -> tuple[float, float, float]:
    """Per event: update and read the vector, against rebuilding the user's
    profile from their whole history and reading it."""
    by_user: dict[str, list[Event]] = {}
    for e in events:
        by_user.setdefault(e.profile_id, []).append(e)
    users = [evs[:per_user] for evs in by_user.values() if len(evs) >= per_user][:4]
    stream = [e for evs in users for e in evs]

    def online() -> None:
        profiles: dict[str, Profile] = {}
        for e in stream:
            p = profiles.get(e.profile_id) or profiles.setdefault(e.profile_id, fs.new_profile())
            fs.update(p, e)
            fs.read_vector(p, e.ts_ms)

    def rescan() -> None:
        for evs in users:
            for i in range(len(evs)):
                p = fs.new_profile()
                for e in evs[: i + 1]:
                    fs.update(p, e)
                fs.read_vector(p, evs[i].ts_ms)

    t_online = best_of(3, online)
    t_rescan = best_of(3, rescan)  # as many repeats as the online run: the best of each, alike
    n = len(stream)
    return t_rescan / t_online, n / t_online, n / t_rescan


def main() -> None:
    fs = FeatureSet(DEFAULT_SPECS)
    month = generate(users=3000, days=30, seed=4)
    events = list(table_to_events(month.events))
    gc.collect()
    gc.freeze()  # the loaded input is not garbage; a server freezes its loaded state the same way
    emit(
        "features",
        "features_online_events_per_s",
        online_rate(fs, events),
        "events/s",
        ">= 50000",
        features=len(fs.names),
        events=len(events),
    )

    ratio, online, rescan = rescan_ratio(fs, events)
    emit(
        "features",
        "features_vs_rescan_ratio",
        ratio,
        "x",
        ">= 30",
        online_events_per_s=round(online),
        rescan_events_per_s=round(rescan),
        events_per_user=300,
    )

    profiles: dict[str, Profile] = {}
    for e in events:
        p = profiles.get(e.profile_id) or profiles.setdefault(e.profile_id, fs.new_profile())
        fs.update(p, e)
    sizes = np.array([len(encode(fs, p)) for p in profiles.values()])
    emit(
        "features",
        "profile_bytes",
        float(np.percentile(sizes, 95)),
        "bytes",
        "<= 4096",
        statistic="p95 of users with a month of history",
        median=int(np.median(sizes)),
        max=int(sizes.max()),
        users=len(sizes),
    )

    big = generate(users=32_000, days=14, seed=5).events
    n = 1_000_000
    table = big.slice(0, min(n, big.num_rows))
    cutoffs = pd.DataFrame(
        {
            "profile_id": table.column("profile_id").to_numpy(zero_copy_only=False),
            "at": table.column("ts").cast(pa.int64()).to_numpy(),
        }
    )
    start = time.perf_counter()
    OfflineFeatures(fs, table).at(cutoffs)
    seconds = time.perf_counter() - start
    emit(
        "features",
        "features_offline_events_per_s",
        table.num_rows / seconds,
        "events/s",
        ">= 200000",
        events=table.num_rows,
        cutoffs=len(cutoffs),
        seconds=round(seconds, 2),
    )


if __name__ == "__main__":
    main()
