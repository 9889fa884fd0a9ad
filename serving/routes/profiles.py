"""Profiles: features, scores with what moved them, cluster, segments with
reasons; one segment's why; erasure."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, HTTPException, status

from features.events import format_ms, profile_key
from segments.membership import Transition
from segments.rules import Context
from serving.engine import Engine
from serving.routes.deps import EngineDep, ParserDep, Reader, ServiceDep, Writer

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])


def plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def transition_json(t: Transition) -> dict[str, Any]:
    return {
        "segment": t.segment,
        "kind": t.kind,
        "at": format_ms(t.at_ms),
        "at_ms": t.at_ms,
        "config_id": t.reason.config_id,
        "rule": t.reason.rule,
        "clauses": [{"clause": c, "value": plain(v)} for c, v in t.reason.clauses],
    }


def _pid(engine: Engine, user_id: str, parser: ParserDep) -> str:
    pid = profile_key(user_id, parser.pseudonymizer)
    if engine.store.get(pid) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no profile for this user")
    return pid


@router.get("/{user_id}", dependencies=[Reader], responses={401: {}, 404: {}})
def get_profile(user_id: str, engine: EngineDep, parser: ParserDep) -> dict[str, Any]:
    """Features now, scores with their top contributions, cluster, segments with reasons."""
    pid = _pid(engine, user_id, parser)
    vector = engine.vector(pid) or {}
    state = engine.users.get(pid)
    scorers = engine.scorers
    segments = []
    if state is not None:
        for name, since in state.members.entered.items():
            last = state.last.get(name)
            segments.append(
                {"segment": name, "since": format_ms(since), "reason": transition_json(last) if last else None}
            )
    contributions = scorers.contributions(vector)
    return {
        "user": pid,
        "evaluated_at": format_ms(state.evaluated_ms) if state and state.evaluated_ms >= 0 else None,
        "features": {k: plain(v) for k, v in vector.items()},
        "scores": {
            name: {
                "value": plain(value),
                "top_contributions": [{"feature": f, "value": plain(c)} for f, c in contributions.get(name, [])],
            }
            for name, value in (state.scores if state else {}).items()
        },
        "cluster": {"name": state.cluster, "description": scorers.cluster_description(state.cluster)}
        if state and state.cluster
        else None,
        "segments": segments,
    }


@router.get("/{user_id}/segments/{segment}", dependencies=[Reader], responses={401: {}, 404: {}})
def get_membership(user_id: str, segment: str, engine: EngineDep, parser: ParserDep) -> dict[str, Any]:
    """Why a user is in or out of one segment: the rule's clauses now and the last transition."""
    seg = engine.config.segments.get(segment)
    if seg is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no segment named {segment!r}")
    pid = _pid(engine, user_id, parser)
    state = engine.users.get(pid)
    vector = engine.vector(pid) or {}
    members = state.members.entered if state else {}
    ctx = Context(
        vector, state.scores if state else {}, state.cluster if state else None, set(members), engine.config.thresholds
    )
    member = segment in members
    rule = seg.exit if (member and seg.exit is not None) else seg.rule
    last = state.last.get(segment) if state else None
    return {
        "user": pid,
        "segment": segment,
        "member": member,
        "since": format_ms(members[segment]) if member else None,
        "rule": rule.text.strip(),
        "holds_now": rule.holds(ctx),
        "clauses_now": [{"clause": c, "value": plain(v)} for c, v in rule.explain(ctx)],
        "last_transition": transition_json(last) if last else None,
    }


@router.delete("/{user_id}", dependencies=[Writer], responses={401: {}})
def erase_profile(user_id: str, service: ServiceDep, parser: ParserDep) -> dict[str, Any]:
    """Erase a user: profile, logged events, pending labels, dedup keys, outbox;
    later events of the user are accepted, counted and dropped."""
    pid = profile_key(user_id, parser.pseudonymizer)
    return {"erased": service.erase(pid)}
