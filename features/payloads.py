"""Walks over a payload as sent: how deep it nests, and a copy with every
personal field and value pseudonymized (the policy itself is
:mod:`features.pseudonyms`), cut at the nesting limit.

>>> from features.pseudonyms import Pseudonymizer
>>> p = Pseudonymizer(b"k" * 32)
>>> scrub_mapping({"plan": "gold", "contact": {"name": "Ann"}}, p, person=False)["contact"]["name"][:4]
'pii_'
>>> depth_problem({"a": [[[]]]}, limit=3)
('a[0][0]', 'nests more than 3 levels deep (at most 3 are allowed)')
"""

from __future__ import annotations

from typing import Any

import orjson

from features.pseudonyms import PERSON_KEYS, Pseudonymizer, normal_key, personal_key

MAX_DEPTH = 32  # containers nested in one event, the event itself counting as one
_KEY_CLASS: dict[tuple[str, bool], bool] = {}
TOO_DEEP = "<nested too deep>"


def _personal(key: str, person: bool) -> bool:
    """Whether a field name is personal (cached: field names repeat)."""
    known = _KEY_CLASS.get((key, person))
    if known is None:
        known = personal_key(key, person)
        if len(_KEY_CLASS) < 50_000:
            _KEY_CLASS[(key, person)] = known
    return known


def scrub_mapping(data: dict[str, Any], scrub: Pseudonymizer, person: bool, depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``data`` with every personal field pseudonymized (its whole value, at
    any depth) and every personal value inside a string replaced; ``data``
    itself when nothing in it is personal. ``person``: the fields describe a
    person (traits), so a plain ``name`` is theirs. Containers deeper than
    ``depth`` become :data:`TOO_DEEP` (the edge has refused such an event;
    this keeps a quarantined copy bounded)."""
    out: dict[str, Any] | None = None
    for key, value in data.items():
        name = scrub.scrub_text(key)  # {"bob@x.io": 1}; a clean name comes back as it is (and is remembered)
        kind = type(value)
        if value is None or kind is bool or kind is int or kind is float:
            new: Any = (
                scrub(canonical(value)) if value is not None and kind is not bool and _personal(key, person) else value
            )
        elif _personal(key, person):
            new = scrub(value) if kind is str else scrub(canonical(value))
        elif kind is str:
            new = scrub.scrub_text(value)
        elif kind is dict:
            inner = person or normal_key(key) in PERSON_KEYS
            new = TOO_DEEP if depth <= 1 else scrub_mapping(value, scrub, inner, depth - 1)
        elif kind is list:
            new = TOO_DEEP if depth <= 1 else _scrub_list(value, scrub, person, depth - 1)
        else:
            new = value
        if new is not value or name is not key:
            if out is None:
                out = {k: v for k, v in data.items()}
            if name is not key:
                del out[key]
            out[name] = new
    return data if out is None else out


def _scrub_list(items: list[Any], scrub: Pseudonymizer, person: bool, depth: int) -> list[Any]:
    out = [scrub_mapping({"": v}, scrub, person, depth)[""] if v is not None else None for v in items]
    return items if all(a is b for a, b in zip(out, items, strict=True)) else out


def identify_traits(payload: dict[str, Any]) -> dict[str, Any]:
    """An identify call's traits: at its root (Segment's SDKs) and under
    ``context.traits`` (where RudderStack's put them); the root's win where
    both name one. Non-mappings count as none (the parser names them).

    >>> identify_traits({"traits": {"plan": "gold"}, "context": {"traits": {"plan": "x", "email": "a@b.io"}}})
    {'plan': 'gold', 'email': 'a@b.io'}
    """
    root, context = payload.get("traits"), payload.get("context")
    inner = context.get("traits") if isinstance(context, dict) else None
    if not isinstance(inner, dict) or not inner:
        return root if isinstance(root, dict) else {}
    return {**inner, **root} if isinstance(root, dict) else dict(inner)


def canonical(value: Any) -> str:
    """A value as canonical JSON text (sorted keys; its repr when JSON cannot hold it), for hashing."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return repr(value)


def _deeper_than(node: Any, budget: int) -> bool:
    """Whether containers nest more than ``budget`` levels below ``node``
    (two levels a call: most events hold containers two deep at most)."""
    if budget <= 0:
        return True
    for value in node.values() if type(node) is dict else node:
        kind = type(value)
        if kind is dict or kind is list:
            if budget <= 1:
                return True
            for inner in value.values() if kind is dict else value:
                inner_kind = type(inner)
                if (inner_kind is dict or inner_kind is list) and _deeper_than(inner, budget - 2):
                    return True
    return False


def depth_problem(payload: Any, limit: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first container nested more than ``limit`` levels deep in a
    payload (the payload itself is level 1), as (field, problem); None when
    the nesting is within the limit. Any depth is safe to check: the quick
    look recurses at most ``limit`` deep, the search for the field is iterative."""
    if not _deeper_than(payload, limit):
        return None
    stack: list[tuple[Any, int, str]] = [(payload, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return path or "$", f"nests more than {limit} levels deep (at most {limit} are allowed)"
        children = node.items() if type(node) is dict else enumerate(node)
        for key, value in children:
            kind = type(value)
            if kind is dict or kind is list:
                where = f"{path}[{key}]" if type(key) is int else (f"{path}.{key}" if path else str(key))
                stack.append((value, depth + 1, where[:200]))
    return None
