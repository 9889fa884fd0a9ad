"""Identity merge cost: an ``identify`` that joins an anonymous profile of 50
events into a known one (state merged, the anonymous memberships exited,
the merged profile evaluated), against an ``identify`` that joins nothing;
and the offline features of a history with such links against the same
history without them."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pandas as pd

from bench.report import best_of, emit
from features.events import Event
from features.offline import OfflineFeatures
from features.table import events_to_table
from models.intent_online import OnlineIntentModel
from segments.config import load
from serving.engine import Engine
from serving.regime import BASE_SPECS, build_features, intent_feature_names
from serving.scorers import Scorers

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000_000
PAIRS = 400
EVENTS = 50
KINDS = ["product_view"] * 6 + ["add_to_cart", "page_view", "search", "wishlist_add"]


def _history() -> tuple[list[Event], list[Event], list[Event]]:
    """Each pair's events (an anonymous visitor's 50 and a known user's 50), then the
    identify calls that merge each pair, and identify calls of other users that merge nothing."""
    events = []
    for n in range(PAIRS):
        for i in range(EVENTS):
            at = T0 + (n * EVENTS + i) * 1_000
            props = {"price": 10.0 + i % 7, "category": f"c{i % 5}", "product_id": f"p{i % 11}"}
            kind = KINDS[i % len(KINDS)]
            events.append(Event(f"a{n}-{i}", kind, None, f"anon-{n}", at, at, properties=props))
            events.append(Event(f"u{n}-{i}", kind, f"user-{n}", None, at + 1, at + 1, properties=props))
    end = events[-1].ts_ms + 1_000
    merges = [
        Event(f"m{n}", "identify", f"user-{n}", f"anon-{n}", end + n, end + n, kind="identify") for n in range(PAIRS)
    ]
    plain = [Event(f"p{n}", "identify", f"user-{n}", None, end + n, end + n, kind="identify") for n in range(PAIRS)]
    return events, merges, plain


def _engine(events: list[Event]) -> Engine:
    config = load(ROOT / "config/segments.yaml", BASE_SPECS)
    engine = Engine(config, build_features(config), Scorers(OnlineIntentModel(), intent_feature_names()))
    engine.ingest(events)
    return engine


def _per_call(engine: Engine, calls: list[Event]) -> float:
    gc.collect()
    start = time.perf_counter()
    for e in calls:
        engine.ingest([e])
    return (time.perf_counter() - start) / len(calls)


def main() -> None:
    events, merges, plain = _history()
    merge_s = min(_per_call(_engine(events), merges) for _ in range(3))
    plain_s = min(_per_call(_engine(events), plain) for _ in range(3))
    emit("identity", "identity_merge_us", merge_s * 1e6, "us", events_per_profile=EVENTS, merges=PAIRS)
    emit("identity", "identity_merge_vs_identify_ratio", merge_s / plain_s, "x", identify_us=round(plain_s * 1e6, 1))

    fs = _engine([]).features
    linked, alone = events_to_table(events + merges), events_to_table(events + plain)
    cutoffs = pd.DataFrame({"profile_id": [f"user-{n}" for n in range(PAIRS)], "at": merges[-1].ts_ms})
    with_links = best_of(3, lambda: OfflineFeatures(fs, linked).at(cutoffs))
    without = best_of(3, lambda: OfflineFeatures(fs, alone).at(cutoffs))
    emit("identity", "offline_with_links_ratio", with_links / without, "x", links=PAIRS, events=len(events))


if __name__ == "__main__":
    main()
