"""``segflow tune --target precision=0.8`` rewrites the likely-buyer pair in a
copy of the config, comments intact; checked independently on the evaluation
set, the entry threshold reaches the precision and is the lowest that does;
its preview, with the champion models, shows the membership change."""

from __future__ import annotations

import dataclasses
import difflib
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
from typer.testing import CliRunner

from cli.main import app
from features.defaults import DEFAULT_SPECS
from features.offline import OfflineFeatures
from features.online import FeatureSet
from models import registry
from serving.regime import intent_feature_names
from serving.scorers import load_scorers
from training.datasets import build
from training.pipelines import train_all
from training.synthetic import generate
from training.tuning import AS_REGISTERED, REPLAYED

ROOT = Path(__file__).resolve().parent.parent
DAY_MS = 86_400_000


def test_tune_rewrites_the_likely_buyer_pair_for_a_precision_and_previews_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    registry.configure(uri)
    history = generate(users=600, days=12, seed=17)
    train_all(history.events, seed=0)
    events = tmp_path / "events.parquet"
    history.write(events)
    config = tmp_path / "segments.yaml"
    shutil.copy(ROOT / "config/segments.yaml", config)
    before = config.read_text()

    args = ["tune", "--target", "precision=0.8", "--events", str(events), "--config", str(config),
            "--tracking-uri", uri, "--json"]  # fmt: skip
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert config.read_text() == before  # a dry run writes nothing
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    shown = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    entry, exit_ = shown["chosen"]["likely_buyer"], shown["chosen"]["likely_buyer_exit"]
    assert set(shown["chosen"]) == {"likely_buyer", "likely_buyer_exit"}
    assert exit_ == round(entry - 0.05, 4)  # the exit keeps the config's margin below the entry

    after = config.read_text()
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]  # fmt: skip
    assert changed[:2] == [
        "-  likely_buyer: 0.35       # intent score above which a user is a likely buyer",
        "-  likely_buyer_exit: 0.30  # ... and below which a likely buyer stops being one (hysteresis)",
    ]
    assert len(changed) == 4  # those two lines and nothing else: other thresholds, rules, comments as they were
    assert changed[2].startswith(f"+  likely_buyer: {entry} ") and changed[2].endswith(
        " # intent score above which a user is a likely buyer"
    )
    assert changed[3].startswith(f"+  likely_buyer_exit: {exit_} ") and changed[3].endswith(
        " # ... and below which a likely buyer stops being one (hysteresis)"
    )

    # independently, on the evaluation set: the later part, a horizon's gap before it, scored by the champions
    data = build(history.events, FeatureSet(DEFAULT_SPECS), horizon_ms=DAY_MS)
    _, evaluation = data.split_by_time(gap_ms=DAY_MS)
    scorers = load_scorers(intent_feature_names(), tracking_uri=uri)
    scores, _ = dataclasses.replace(scorers, clusters=None).score_columns(evaluation.X)
    p, y = np.asarray(scores["intent"]), evaluation.y

    def precision(t: float) -> float:
        return float(y[p >= t].mean()) if (p >= t).any() else 0.0

    assert precision(entry) >= 0.8
    lower = np.unique(np.floor(p * 10_000) / 10_000)
    assert all(precision(u) < 0.8 for u in lower[lower < entry])  # the lowest written value that reaches it
    assert shown["at_chosen"]["likely_buyer"]["precision"] == precision(entry)

    seg = shown["preview"]["likely_buyers"]  # the champions' scores, replayed under both configs
    assert seg["would_enter"] + seg["would_leave"] > 0 and seg["status"] == "changed"
    run = mlflow.tracking.MlflowClient(uri).get_run(shown["run_id"])
    assert float(run.data.params["threshold.likely_buyer"]) == entry and run.data.params["target"] == "precision=0.8"
    # no model scored a moment it learned: the batch champion was fitted before the period, the online one
    # learned it all, so its settings are replayed from scratch (intent is the batch score here)
    assert shown["scored"] == {"intent_batch": AS_REGISTERED, "intent_online": REPLAYED}
    assert run.data.tags["scored.intent_online"] == REPLAYED

    # size=N: the lowest threshold whose mean number of daily members is at most N
    sized = CliRunner().invoke(app, ["tune", "--target", "size=40", "--events", str(events), "--config", str(config),
                                     "--tracking-uri", uri, "--json", "--dry-run"])  # fmt: skip
    assert sized.exit_code == 0, sized.output
    chosen = json.loads(sized.stdout.splitlines()[-1])["chosen"]["likely_buyer"]
    users, at = evaluation.cutoffs["profile_id"].to_numpy(), evaluation.cutoffs["at"].to_numpy()
    whole = [d for d in range(at.min() // DAY_MS, at.max() // DAY_MS + 1)
             if d * DAY_MS >= at.min() and (d + 1) * DAY_MS - 1 <= at.max()]  # fmt: skip
    assert whole  # the part-days at each end of the period are left out

    def daily(t: float) -> float:  # the mean over whole days of the distinct users flagged that day
        return float(np.mean([len(set(users[(at // DAY_MS == d) & (p >= t)])) for d in whole]))

    assert daily(chosen) <= 40
    assert all(daily(u) > 40 for u in lower[lower < chosen])

    # a threshold compared with a feature is tuned only when named: the highest cart value catching 30% of buyers
    where = ["--events", str(events), "--config", str(config), "--tracking-uri", uri]
    named = CliRunner().invoke(
        app,
        ["tune", "--target", "recall=0.3", "--threshold", "high_value_cart", *where, "--json"],
    )
    assert named.exit_code == 0, named.output
    cart = json.loads(named.stdout.splitlines()[-1])["chosen"]
    assert set(cart) == {"high_value_cart"}
    tuned = config.read_text()
    assert [line for line in difflib.unified_diff(after.splitlines(), tuned.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))][1].startswith(
        f"+  high_value_cart: {cart['high_value_cart']} ")  # fmt: skip
    value = OfflineFeatures(FeatureSet(DEFAULT_SPECS), history.events).at(evaluation.cutoffs)["cart_value_7d"]
    v = value.to_numpy(dtype=float)

    def recall(t: float) -> float:
        return float(y[v >= t].sum() / y.sum())

    assert recall(cart["high_value_cart"]) >= 0.3
    grid = np.unique(np.floor(v[np.isfinite(v)] * 10_000) / 10_000)
    assert all(recall(u) < 0.3 for u in grid[grid > cart["high_value_cart"]])  # the highest that catches them
    bad = CliRunner().invoke(app, ["tune", "--target", "recall=0.3", "--threshold", "repeated_checkouts_x", *where])
    assert bad.exit_code == 2 and "no threshold ['repeated_checkouts_x']" in bad.output


def test_tune_refuses_what_it_cannot_tune_honestly(tmp_path: Path) -> None:
    """No champion to score with, a threshold used in several places: refused, the file untouched."""
    events = tmp_path / "events.parquet"
    generate(users=200, days=6, seed=3).write(events)
    config = tmp_path / "segments.yaml"
    shutil.copy(ROOT / "config/segments.yaml", config)
    before = config.read_text()
    args = ["tune", "--target", "precision=0.8", "--events", str(events), "--config", str(config),
            "--tracking-uri", f"sqlite:///{tmp_path}/empty.db"]  # fmt: skip
    empty = CliRunner().invoke(app, args)
    assert empty.exit_code == 1 and "no registered champion" in empty.output and config.read_text() == before
    shared = before.replace("    exit: intent < thresholds.likely_buyer_exit",
                            "    exit: intent < thresholds.likely_buyer_exit\n\n  - name: keen_too\n"
                            "    rule: intent >= thresholds.likely_buyer")  # fmt: skip
    assert shared != before
    config.write_text(shared)
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "several places" in refused.output and config.read_text() == shared
    # a threshold read where tune cannot follow it (under a not) is refused; an exit partner is tuned by its entry
    config.write_text(before.replace("cart_value_7d >= thresholds.high_value_cart and",
                                     "not (cart_value_7d < thresholds.high_value_cart) and"))  # fmt: skip
    assert config.read_text() != before
    negated = CliRunner().invoke(app, [*args, "--threshold", "high_value_cart"])
    assert negated.exit_code == 2 and "under not" in negated.output
    config.write_text(before)
    partner = CliRunner().invoke(app, [*args, "--threshold", "likely_buyer_exit"])
    assert partner.exit_code == 2 and "name its entry threshold" in partner.output
