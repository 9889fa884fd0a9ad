"""What the engine keeps beside the feature profiles (each user's
memberships, last transitions and scores; the counters), and the engine's
whole state as explicit values: what a snapshot holds and gives back."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from features import codec
from features.identity import IdentityGraph
from features.online import Profile
from features.values import exact_json, from_exact_json
from models.intent_online import OnlineIntentModel
from segments.membership import Memberships, Reason, Transition

if TYPE_CHECKING:
    from serving.engine import Engine


@dataclass(slots=True)
class Stats:
    """The engine's counters, as ``/metrics`` reads them."""

    events: int = 0
    duplicates: int = 0
    suppressed: int = 0
    late: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    scores: Counter[int] = field(default_factory=Counter)  # intent score, tenths
    score_sum: float = 0.0


@dataclass(slots=True)
class UserState:
    """What the engine keeps per user beside the feature profile."""

    members: Memberships = field(default_factory=Memberships)
    last: dict[str, Transition] = field(default_factory=dict)  # segment -> last transition
    scores: dict[str, float] = field(default_factory=dict)
    cluster: str | None = None
    evaluated_ms: int = -1
    nth: dict[str, int] = field(default_factory=dict)  # segment -> how many transitions before the last at its instant


def export_state(engine: Engine, profiles: dict[str, Profile] | None = None) -> dict[str, Any]:
    """Everything recovery needs, as of log sequence ``seq``, as explicit
    values (profiles as their codec's JSON, embedded as it is): what a
    snapshot holds, and what :func:`restore_state` takes back. ``profiles``:
    the store's, read beforehand (an external store changes under a fork)."""
    s = engine.stats
    return {
        "seq": engine.seq,
        "watermark": engine.watermark,
        "fired_to": engine.fired_to,
        "epoch": engine.epoch,
        "through": engine.through,
        "config_id": engine.config.config_id,
        "features": engine.features.digest,
        "profiles": {
            pid: orjson.Fragment(codec.body(engine.features, p))
            for pid, p in (engine.store.items() if profiles is None else profiles.items())
        },
        "users": {pid: user_out(u) for pid, u in engine.users.items()},
        "identity": engine.identity.to_state(),
        "seen": [[mid, t, pid] for mid, (t, pid) in engine._seen.items()],
        "seen_order": [[t, mid] for t, mid in engine._seen_order],
        "online": engine.scorers.online.to_state(),
        "stats": {
            "events": s.events, "duplicates": s.duplicates, "suppressed": s.suppressed, "late": s.late,
            "transitions": [[seg, kind, n] for (seg, kind), n in s.transitions.items()],
            "scores": [[tenth, n] for tenth, n in s.scores.items()], "score_sum": s.score_sum,
        },
    }  # fmt: skip


def restore_state(engine: Engine, state: dict[str, Any]) -> None:
    """Load an exported state, as a snapshot gives it back (parsed JSON),
    into this fresh engine of the same config and features."""
    if state["config_id"] != engine.config.config_id or state["features"] != engine.features.digest:
        raise ValueError("this state was saved under another config or feature set; rebuild from the log")
    engine.store.put_many({pid: codec.from_body(body, engine.features) for pid, body in state["profiles"].items()})
    engine.users = {pid: user_in(u) for pid, u in state["users"].items()}
    engine.identity = IdentityGraph.from_state(state.get("identity"))  # absent before identity
    engine._seen = {mid: (t, pid) for mid, t, pid in state["seen"]}
    engine._seen_order = deque((t, mid) for t, mid in state["seen_order"])
    engine._received_mark = max((t for t, _ in engine._seen_order), default=-1)
    engine.scorers.online = OnlineIntentModel.from_state(state["online"])
    st = state["stats"]
    engine.stats = Stats(
        st["events"], st["duplicates"], st["suppressed"], st["late"],
        Counter({(seg, kind): n for seg, kind, n in st["transitions"]}),
        Counter({int(tenth): n for tenth, n in st["scores"]}), st["score_sum"],
    )  # fmt: skip
    engine.watermark, engine.seq = state["watermark"], state["seq"]
    engine.fired_to = state.get("fired_to", -1)  # absent before the outbox
    engine.epoch = state.get("epoch", 0)
    engine.through = state.get("through", engine.epoch)
    engine.members_of = {name: set() for name in engine.config.segments}
    for pid, user in engine.users.items():
        for name in user.members.entered:
            engine.members_of[name].add(pid)
    erased = {p for p in (*engine.users, *engine.identity.ids()) if engine._tombstone(p) in engine.suppressed}
    for pid in erased:
        engine.erase(pid)  # erased after this state was saved: the log's tombstone holds
    engine.reschedule()


def user_out(u: UserState) -> list[Any]:
    """A user's state as explicit values (a snapshot's)."""
    last = {
        seg: [t.kind, t.at_ms, t.reason.config_id, t.reason.rule, [[c, exact_json(v)] for c, v in t.reason.clauses]]
        for seg, t in u.last.items()
    }
    return [u.members.entered, last, u.scores, u.cluster, u.evaluated_ms, u.nth]


def user_in(saved: list[Any]) -> UserState:
    """A user's state from a snapshot's values."""
    entered, last, scores, cluster, evaluated_ms, *nth = saved  # no nth before the outbox
    transitions = {
        seg: Transition(seg, kind, at, Reason(config_id, rule, tuple((c, from_exact_json(v)) for c, v in clauses)))
        for seg, (kind, at, config_id, rule, clauses) in last.items()
    }
    return UserState(Memberships(dict(entered)), transitions, dict(scores), cluster, evaluated_ms, dict(*nth))
