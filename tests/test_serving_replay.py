"""The engine is a function of its log: a real ``segflow serve --clock wall``
with all three registered models (the online one learning within seconds)
and rules exact to the second lives through a stream, reloads a changed
config mid-stream, lets time-driven exits fall due, and is killed with
SIGKILL. A replay of its log, honouring the reload it records, derives
exactly the changes the live service wrote to its outbox (same keys), and
recovery adds nothing the live service did not decide."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import orjson
import pandas as pd
import pytest
from prometheus_client import generate_latest
from pydantic import SecretStr

from features.defaults import DEFAULT_SPECS
from features.events import format_ms
from features.online import FeatureSet
from models import registry
from serving.metrics import Metrics
from serving.regime import intent_feature_names
from serving.service import Service
from serving.settings import Settings
from tests.servers import WRITE, Server

RULES_A = """
version: 1
segments:
  - name: browsing_now
    rule: since(product_view) < 2s
  - name: carting
    rule: count(add_to_cart, 24h) >= 1 and since(add_to_cart) < 3s
  - name: keen
    rule: intent >= 0.3
  - name: learning
    rule: intent_online >= 0.5
  - name: first_cluster
    rule: cluster == "c0"
"""
RULES_B = """
version: 1
segments:
  - name: browsing_now
    rule: since(product_view) < 1s
  - name: carting
    rule: count(add_to_cart, 24h) >= 1 and since(add_to_cart) < 3s
  - name: keen
    rule: intent >= 0.2
  - name: learning
    rule: intent_online >= 0.5
  - name: viewers
    rule: count(product_view, 24h) >= 3
"""
KINDS = ["Product Viewed"] * 6 + ["Product Added"] * 3 + ["Order Completed"]


@pytest.fixture(scope="module")
def champions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A batch, a cluster and an online model trained on a small seeded
    history and registered in an MLflow store of the module's own; the
    online champion learns what happened within 1.5 s (so it learns live)."""
    from training.pipelines import train_all
    from training.synthetic import generate

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    here = os.getcwd()
    os.chdir(root)  # MLflow's artifacts go beside the store
    try:
        registry.configure(uri)
        history = generate(200, 6, 3)
        train_all(history.events, history.users.to_pandas(), history.intent.to_pandas(), register=True)
        online = registry.load(registry.INTENT_ONLINE)
        online.horizon_ms, online.sample_every_ms = 1500, 200
        vector = FeatureSet(DEFAULT_SPECS).read(FeatureSet(DEFAULT_SPECS).new_profile(), 0)
        example = pd.DataFrame([{name: vector[name] for name in intent_feature_names()}])
        with mlflow.start_run():
            uri_model = registry.log_model(online, example, list(intent_feature_names()))
        registry.promote(registry.INTENT_ONLINE, registry.register(uri_model, registry.INTENT_ONLINE))
    finally:
        os.chdir(here)
    yield uri


def stream(http: httpx.Client, rng: random.Random, steps: int, first: int) -> int:
    """``steps`` batches of a few events of 25 users, 60 ms apart; how many events."""
    n = first
    for _ in range(steps):
        batch = []
        for _ in range(rng.randint(1, 6)):
            n += 1
            kind = rng.choice(KINDS)
            props = {"price": rng.choice([9.5, 40.0, 120.0]), "category": rng.choice(["shoes", "books"])}
            batch.append({"type": "track", "event": kind, "userId": f"u{rng.randrange(25)}", "messageId": f"m{n}",
                          "timestamp": format_ms(time.time_ns() // 1_000_000), "properties": props})  # fmt: skip
        r = http.post("/v1/batch", content=orjson.dumps({"batch": batch}), auth=WRITE,
                      headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 200, r.text
        time.sleep(0.06)
    return n


def outbox(state: Path) -> dict[str, tuple[str, int]]:
    db = sqlite3.connect(state / "events.db")
    try:
        return {key: (cause, at) for key, cause, at in db.execute("SELECT key, cause, at_ms FROM outbox")}
    finally:
        db.close()


def last_received(state: Path) -> int:
    db = sqlite3.connect(state / "events.db")
    try:
        return int(db.execute("SELECT max(received_ms) FROM events").fetchone()[0])
    finally:
        db.close()


def in_process(state: Path, segments: Path, uri: str, clock: str = "wall", intent: str = "auto") -> Service:
    settings = Settings(
        state_dir=state, clock=clock, segments=segments, tracking_uri=uri, intent=intent,
        admin_keys=[SecretStr("replay-admin")], read_keys=[SecretStr("replay-read")],
    )  # fmt: skip
    return Service(settings).start()


@pytest.fixture
def rules_a(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A config of RULES_A and a state directory to run it in (with a fixed pseudonymization key)."""
    monkeypatch.setenv("SEGFLOW_PII_KEY", "00" * 32)
    segments = tmp_path / "segments.yaml"
    segments.write_text(RULES_A)
    return segments, tmp_path / "state"


def test_a_replay_of_the_log_derives_exactly_the_live_changes_across_a_reload_and_a_kill(
    tmp_path: Path, champions: str, rules_a: tuple[Path, Path]
) -> None:
    segments, state = rules_a
    server = Server(state, clock="wall", segments=segments, tracking_uri=champions).start()
    rng = random.Random(7)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            n = stream(http, rng, 45, 0)
            segments.write_text(RULES_B)
            reloaded = http.post("/v1/admin/reload", auth=WRITE)
            assert reloaded.status_code == 200, reloaded.text
            stream(http, rng, 45, n)
            time.sleep(3.5)  # the windows close with no new event: time-driven exits
        server.kill()
    finally:
        server.stop()
    live = outbox(state)
    causes = {cause for cause, _ in live.values()}
    assert causes == {"event", "time", "reload"}, causes
    upto = last_received(state)
    # what the log alone decides: a timer due at the last event's very instant fires in the
    # live service's next tick, but in a replay only once a later event arrives
    decided = {key for key, (_, at) in live.items() if at < upto}

    kept = tmp_path / "kept"
    shutil.copytree(state, kept)  # the state as the kill left it
    service = in_process(state, segments, champions)  # recovery: the latest snapshot and the log after it
    try:
        assert service.divergent == 0
        audit = service.audit()  # the whole log again, from its first record, through the reload
        assert audit.divergent == 0 and audit.checked >= len(decided) > 100
        assert decided <= audit.derived
        later = {key: v for key, v in outbox(state).items() if key not in live}
        assert all(cause == "time" and at > upto for cause, at in later.values())  # only what fell due while down
    finally:
        service.close()

    for name in ("snapshot.bin", "snapshot.prev.bin"):  # recovery with no snapshot: the log and its records alone
        (kept / name).unlink(missing_ok=True)
    rebuilt = in_process(kept, segments, champions)
    try:
        assert rebuilt.divergent == 0
        assert rebuilt.engine is not None and "viewers" in rebuilt.engine.config.segments
    finally:
        rebuilt.close()


def test_intent_is_made_as_settings_say_and_a_replay_makes_it_as_it_was(
    champions: str, rules_a: tuple[Path, Path]
) -> None:
    segments, state = rules_a

    def start(intent: str) -> Service:
        return in_process(state, segments, champions, clock="event", intent=intent)

    def ingest(service: Service, first: int) -> dict[str, float]:
        t = 1_790_000_000_000 + first * 60_000
        assert service.parser is not None
        events = [
            service.parser.event(
                {"type": "track", "event": kind, "userId": "u1", "messageId": f"i{first + i}",
                 "timestamp": format_ms(t + i * 1000), "properties": {"price": 40.0, "category": "shoes"}},
                received_ms=t + i * 1000,
            )
            for i, kind in enumerate(KINDS)
        ]  # fmt: skip
        service.ingest(events)
        assert service.engine is not None
        return service.engine.users["u1"].scores

    blended = start("blend:0.25")
    scores = ingest(blended, 0)
    assert scores["intent"] == pytest.approx(0.25 * scores["intent_batch"] + 0.75 * scores["intent_online"])
    assert blended.engine is not None and blended.engine.scorers.intent_source == "blend"
    blended.close()
    online = start("online")  # a changed setting is a model swap the log records
    assert online.divergent == 0  # its recovery replayed the blended stretch as it was scored
    scores = ingest(online, 100)
    assert scores["intent"] == scores["intent_online"] != scores["intent_batch"]
    assert online.log is not None and [r.models.get("intent") for r in online.log.records()][-2:] == [
        "blend:0.25",
        "online",
    ]
    audit = online.audit()  # the whole log again: each part scored as it was then
    assert audit.divergent == 0 and audit.checked > 0
    online.close()


def test_a_models_only_reload_swaps_a_new_champion_in_without_replaying_the_log(
    champions: str, rules_a: tuple[Path, Path]
) -> None:
    """A batch champion trained on the opposite labels (who was keen is not) is
    promoted; the reload swaps it in with no event replayed, scores everyone
    again, writes the net membership changes with the swap, and a restart's
    replay of the log derives exactly those changes."""
    from models.intent_batch import BatchIntentModel
    from training.datasets import build
    from training.synthetic import generate

    segments, state = rules_a
    current = registry.champion_version(registry.INTENT_BATCH)
    assert current is not None
    service = in_process(state, segments, champions, clock="event")
    try:
        assert service.parser is not None and service.engine is not None
        rng = random.Random(3)
        t = (time.time_ns() // 1_000_000 // 1000 - 3600) * 1000  # an hour ago: the log keeps it
        events = [
            service.parser.event(
                {"type": "track", "event": rng.choice(KINDS), "userId": f"u{i % 25}", "messageId": f"s{i}",
                 "timestamp": format_ms(t + i * 1000), "properties": {"price": 40.0, "category": "shoes"}},
                received_ms=t + i * 1000,
            )
            for i in range(250)
        ]  # fmt: skip
        service.ingest(events)
        before = {pid: dict(s.scores) for pid, s in service.engine.users.items()}
        scraped = generate_latest(Metrics(lambda: service.engine).registry).decode()
        assert (
            'segflow_batch_drift_psi{column="score"}' in scraped
            and "segflow_batch_drift_observed_total 250.0" in scraped
        )
        keen_before = set(service.engine.members_of["keen"])

        fit, _, _ = build(generate(200, 6, 3).events, FeatureSet(DEFAULT_SPECS)).splits(86_400_000)
        flipped = BatchIntentModel(random_state=1).fit(fit.X, 1 - fit.y)
        mlflow.set_experiment(registry.INTENT_BATCH)
        with mlflow.start_run():
            uri = registry.log_model(flipped, fit.X.head(5), list(fit.X.columns))
        version = registry.register(uri, registry.INTENT_BATCH)
        registry.promote(registry.INTENT_BATCH, version)
        done = service.reload()
        assert done["events_replayed"] == 0 and done["rebuilt"] is None
        assert done["models"][registry.INTENT_BATCH] == version
        after = {pid: dict(s.scores) for pid, s in service.engine.users.items()}
        assert after.keys() == before.keys()
        assert all(after[p]["intent_batch"] != before[p]["intent_batch"] for p in after)
        keen_after = set(service.engine.members_of["keen"])
        assert keen_after != keen_before
        swapped = {k: v for k, v in outbox(state).items() if v[0] == "reload"}
        assert len(swapped) == len(keen_after ^ keen_before) > 0
        assert service.log is not None and service.log.records()[-1].kind == "swap"
        service.close()
        restarted = in_process(state, segments, champions, clock="event")  # replays the swap from the log
        try:
            assert restarted.divergent == 0
            assert restarted.engine is not None and set(restarted.engine.members_of["keen"]) == keen_after
            audit = restarted.audit()
            assert audit.divergent == 0 and set(swapped) <= audit.derived
        finally:
            restarted.close()
    finally:
        if service.log is not None:  # not closed yet
            service.close()
        registry.promote(registry.INTENT_BATCH, current)  # the module's other tests keep their champion
