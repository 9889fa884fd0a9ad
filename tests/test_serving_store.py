"""The state-store contract, run against every implementation; and the
engine over Redis equals the engine in memory."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import pytest

from features import codec
from features.defaults import RULE_SPECS
from features.events import Event
from features.online import FeatureSet, Profile
from features.table import table_to_events
from models.intent_online import OnlineIntentModel
from serving.engine import Engine
from serving.regime import build_features, intent_feature_names, load_config
from serving.scorers import Scorers
from serving.store import MemoryStore, RedisStore, StateStore, open_store
from training.synthetic import generate


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[FeatureSet], StateStore]]:
    made: list[StateStore] = []

    def make(features: FeatureSet) -> StateStore:
        if request.param == "memory":
            store: StateStore = MemoryStore()
        else:
            client = request.getfixturevalue("redis_client")
            store = RedisStore(client, features, prefix=f"segflow-test:{uuid.uuid4().hex}:")
        made.append(store)
        return store

    yield make
    for store in made:
        store.clear()  # only this test's keys


def test_store_contract(make_store: Callable[[FeatureSet], StateStore]) -> None:
    fs = FeatureSet(RULE_SPECS)
    store = make_store(fs)
    assert store.get("u") is None and store.delete("u") is False
    p = fs.new_profile()
    fs.update(p, Event("m", "add_to_cart", "u", None, 1_700_000_000_000, 0, properties={"price": 5.0}))
    store.put("u", p)
    assert store.get("u") == p
    store.put("v", fs.new_profile())
    assert sorted(pid for pid, _ in store.items()) == ["u", "v"]
    assert store.delete("u") is True and store.get("u") is None
    store.put_many({"w": p, "x": fs.new_profile()})
    assert store.get_many(["w", "x", "nobody"]) == {"w": p, "x": fs.new_profile()} and store.get_many([]) == {}
    store.clear()
    assert list(store.items()) == []


def test_engine_over_any_store_gives_the_same_state(make_store: Callable[[FeatureSet], StateStore]) -> None:
    config = load_config("config/segments.yaml")
    events = sorted(table_to_events(generate(40, 2, 13).events), key=lambda e: e.ts_ms)

    def run(store: StateStore | None) -> tuple[list[tuple[str, str, str, int]], dict[str, bytes]]:
        fs = build_features(config)
        engine = Engine(config, fs, Scorers(OnlineIntentModel(), intent_feature_names()), store=store)
        changes = [c for i in range(0, len(events), 100) for c in engine.ingest(events[i : i + 100]).changes]
        changes += engine.advance(events[-1].ts_ms + 1)
        got = [(c.profile_id, c.transition.segment, c.transition.kind, c.transition.at_ms) for c in changes]
        return got, {pid: codec.encode(fs, p) for pid, p in engine.store.items()}

    assert run(make_store(build_features(config))) == run(None)


def test_open_store_refuses_unknown_urls() -> None:
    with pytest.raises(ValueError, match="memory"):
        open_store("postgres://x", FeatureSet(RULE_SPECS))


class CountingRedisStore(RedisStore):
    """The real Redis store, counting its round trips."""

    calls: Counter[str]

    def get(self, profile_id: str) -> Profile | None:
        self.calls["get"] += 1
        return super().get(profile_id)

    def get_many(self, profile_ids: Collection[str]) -> dict[str, Profile]:
        self.calls["get_many"] += 1
        return super().get_many(profile_ids)

    def put(self, profile_id: str, profile: Profile) -> None:
        self.calls["put"] += 1
        super().put(profile_id, profile)

    def put_many(self, profiles: Mapping[str, Profile]) -> None:
        self.calls["put_many"] += 1
        super().put_many(profiles)


def test_a_batch_reads_and_writes_redis_once(redis_client: Any) -> None:
    config = load_config("config/segments.yaml")
    fs = build_features(config)
    store = CountingRedisStore(redis_client, fs, prefix=f"segflow-test:{uuid.uuid4().hex}:")
    store.calls = Counter()
    try:
        engine = Engine(config, fs, Scorers(OnlineIntentModel(), intent_feature_names()), store=store)
        t = 1_790_000_000_000
        batch = [Event(f"m{i}", "product_view", f"u{i % 7}", None, t + i * 1000, t) for i in range(50)]
        engine.ingest(batch)
        assert store.calls == Counter({"get_many": 1, "put_many": 1})
        assert sorted(pid for pid, _ in store.items()) == [f"u{i}" for i in range(7)]
        assert store.get_many(["u3", "nobody"]).keys() == {"u3"}
    finally:
        store.clear()
