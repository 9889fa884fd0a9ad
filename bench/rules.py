"""Rule evaluation cost per event for the shipped segment config."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from bench.report import best_of, emit
from features.defaults import RULE_SPECS
from features.table import table_to_events
from segments.config import load
from segments.membership import Memberships, evaluate
from segments.timeline import feature_set_for
from training.synthetic import generate

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    config = load(ROOT / "config/segments.yaml", RULE_SPECS)
    fs = feature_set_for(config, RULE_SPECS)
    events = list(table_to_events(generate(users=300, days=7, seed=2).events))[:20_000]
    profiles: dict = {}
    moments = []
    rng = np.random.default_rng(0)
    for e in events:
        p = profiles.get(e.profile_id) or profiles.setdefault(e.profile_id, fs.new_profile())
        fs.update(p, e)
        moments.append((e.profile_id, fs.read(p, e.ts_ms), {"intent": float(rng.random())}, e.ts_ms))
    gc.collect()
    gc.freeze()

    def run() -> None:
        members: dict[str, Memberships] = {}
        for user, vector, scores, at in moments:
            members[user], _ = evaluate(config, vector, scores, None, members.get(user, Memberships()), at)

    seconds = best_of(3, run)
    emit(
        "segments",
        "rules_us_per_event",
        seconds / len(moments) * 1e6,
        "us",
        "<= 5",
        segments=len(config.segments),
        events=len(moments),
    )


if __name__ == "__main__":
    main()
