"""River state as explicit values, and back: no pickle.

A River estimator keeps its learned state in plain attributes (dicts of
weights, counts, means, seen values, an optimizer's counters). :func:`state_of`
writes them out as JSON-ready values, walking into the River objects a
pipeline is made of; :func:`fill` writes such values back into a *fresh*
estimator of the same construction, checking that each attribute exists there
with the same kind, so nothing in the data decides which class is built.
ADWIN keeps its window in a compiled helper, whose state is read and written
through the helper's own state tuple (its scalars and buckets).

>>> from river import linear_model
>>> a = linear_model.LogisticRegression()
>>> for i in range(20):
...     a.learn_one({"x": float(i % 3)}, i % 2 == 0)
>>> b = linear_model.LogisticRegression()
>>> fill(b, state_of(a))
>>> b.predict_proba_one({"x": 1.0}) == a.predict_proba_one({"x": 1.0})
True
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
from river import base, drift, optim
from river.utils import VectorDict

from features.values import exact_json, from_exact_json

_SKIP = frozenset({"_y_name"})


def _isfrom_exact_json(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def state_of(obj: Any) -> dict[str, Any]:
    """The learned state of a River object (and the River objects inside it)."""
    out: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if name in _SKIP:
            continue
        out[name] = _value_of(value)
    return out


def _value_of(value: Any) -> Any:
    if _isfrom_exact_json(value):
        return exact_json(value)
    if isinstance(value, VectorDict):
        value = value.to_dict() if hasattr(value, "to_dict") else dict(value)
    if isinstance(value, Mapping):
        return {"map": [[exact_json(k), _value_of(v)] for k, v in value.items()]}
    if isinstance(value, set | frozenset):
        return {"set": sorted((exact_json(v) for v in value), key=repr)}
    if isinstance(value, list | tuple):
        if any(isinstance(v, type) for v in value):  # construction (SelectType's types): the fresh object's stands
            return {"kept": "types"}
        return {"list": [_value_of(v) for v in value]}
    if isinstance(value, drift.ADWIN):
        return {"adwin": {**state_of_adwin(value)}}
    if isinstance(value, base.Base | optim.base.Scheduler | optim.base.Optimizer):
        return {"object": type(value).__name__, "state": state_of(value)}
    if isinstance(value, type) or callable(value):
        return {"kept": type(value).__name__}  # construction (a type list, a factory): the fresh object's stands
    raise TypeError(f"no explicit state for {type(value).__name__}")


def fill(obj: Any, state: Mapping[str, Any]) -> None:
    """Write ``state`` (from :func:`state_of`) into ``obj``, a fresh object of the same construction."""
    for name, value in state.items():
        if not hasattr(obj, name):
            raise ValueError(f"{type(obj).__name__} has no attribute {name!r} to restore")
        current = getattr(obj, name)
        restored = _restore(current, value, f"{type(obj).__name__}.{name}")
        if restored is not current:
            setattr(obj, name, restored)


def _restore(current: Any, value: Any, where: str) -> Any:
    if not isinstance(value, dict) or set(value) == {"float"}:
        return from_exact_json(value)
    if "kept" in value:
        return current
    if "map" in value:
        inner = current if isinstance(current, Mapping) else {}
        items = [
            (from_exact_json(k), _restore(inner.get(from_exact_json(k)), v, f"{where}[{k}]")) for k, v in value["map"]
        ]
        if isinstance(current, VectorDict):
            return VectorDict(dict(items))
        if isinstance(current, MutableMapping):  # defaultdict and Counter keep their kind
            current.clear()
            current.update(dict(items))  # a mapping: Counter.update adds counts to the cleared zeros
            return current
        return dict(items)
    if "set" in value:
        return {from_exact_json(v) for v in value["set"]}
    if "list" in value:
        items = [_restore(None, v, where) for v in value["list"]]
        return tuple(items) if isinstance(current, tuple) else items
    if "adwin" in value:
        if not isinstance(current, drift.ADWIN):
            raise ValueError(f"{where}: saved an ADWIN, found {type(current).__name__}")
        fill_adwin(current, value["adwin"])
        return current
    if "object" in value:
        if current is None or type(current).__name__ != value["object"]:
            raise ValueError(f"{where}: saved a {value['object']}, found {type(current).__name__}")
        fill(current, value["state"])
        return current
    raise ValueError(f"{where}: unknown saved value {sorted(value)}")


# -- ADWIN ----------------------------------------------------------------------


def _reduced(obj: Any) -> Any:
    """A compiled object's own (rebuild, arguments, state) triple."""
    return obj.__reduce__()


def state_of_adwin(detector: drift.ADWIN) -> dict[str, Any]:
    """ADWIN's window: its compiled helper's scalars and buckets, and the detector's flag."""
    _, _, helper_state = _reduced(detector._helper)
    *scalars, attrs = helper_state
    buckets = []
    for bucket in attrs["bucket_deque"]:
        _, _, (current, size, totals, variances) = _reduced(bucket)
        buckets.append([current, size, np.asarray(totals).tolist(), np.asarray(variances).tolist()])
    return {"scalars": [exact_json(s) for s in scalars], "buckets": buckets, "drift": detector._drift_detected}


def fill_adwin(detector: drift.ADWIN, state: Mapping[str, Any]) -> None:
    """Restore an ADWIN detector's window from :func:`state_of_adwin`'s values."""
    helper = detector._helper
    rebuild, args, fresh = _reduced(helper)
    bucket_rebuild, bucket_args, _ = _reduced(fresh[-1]["bucket_deque"][0])
    buckets: deque[Any] = deque()
    for current, size, totals, variances in state["buckets"]:
        bucket = bucket_rebuild(*bucket_args)
        bucket.__setstate_cython__((current, size, np.array(totals, dtype=float), np.array(variances, dtype=float)))
        buckets.append(bucket)
    restored = rebuild(*args)
    restored.__setstate_cython__((*(from_exact_json(s) for s in state["scalars"]), {"bucket_deque": buckets}))
    detector._helper = restored
    detector._drift_detected = bool(state["drift"])
