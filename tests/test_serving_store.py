"""The state-store contract, run against every implementation."""

from __future__ import annotations

import pytest

from features.events import Event
from features.online import FeatureSet
from serving.service import BASE_SPECS
from serving.store import MemoryStore, StateStore

IMPLEMENTATIONS = [MemoryStore]


@pytest.mark.parametrize("make", IMPLEMENTATIONS)
def test_store_contract(make: type[StateStore]) -> None:
    fs = FeatureSet(BASE_SPECS)
    store = make()
    assert store.get("u") is None and store.delete("u") is False
    p = fs.new_profile()
    fs.update(p, Event("m", "add_to_cart", "u", None, 1_700_000_000_000, 0, properties={"price": 5.0}))
    store.put("u", p)
    assert store.get("u") == p
    assert [pid for pid, _ in store.items()] == ["u"]
    assert store.delete("u") is True and store.get("u") is None and list(store.items()) == []
