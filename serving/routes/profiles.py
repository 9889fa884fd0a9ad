"""Profiles: features, scores with what moved them, cluster, segments with
reasons; one segment's why; erasure."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from fastapi import APIRouter, HTTPException, status

from features.events import Event, format_ms
from features.evidence import behind
from segments.closures import Context
from segments.config import SegmentConfig
from segments.membership import Transition
from segments.rules import Clause
from serving.engine import Engine
from serving.routes.deps import Admin, EngineDep, ParserDep, Reader, ServiceDep
from serving.service import Service

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])
# an erasure answers once a snapshot without the user is on disk; past this, the log's tombstone holds it
ERASURE_WAIT_S = 30.0


def plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def events_json(events: list[Event]) -> list[dict[str, Any]]:
    return [{"message_id": e.message_id, "type": e.type, "at": format_ms(e.ts_ms)} for e in events]


def transition_json(t: Transition, config: SegmentConfig, history: list[Event]) -> dict[str, Any]:
    """A transition with its reason; under the current config, each clause
    also names the most recent events behind its value then."""
    seg = config.segments.get(t.segment)
    rule = None
    if seg is not None and t.reason.config_id == config.config_id:
        rule = seg.exit if (t.kind == "exit" and seg.exit is not None) else seg.rule
    clauses = []
    for i, (text, value) in enumerate(t.reason.clauses):
        item: dict[str, Any] = {"clause": text, "value": plain(value)}
        if rule is not None and i < len(rule.clauses) and rule.clauses[i].text == text:
            item["events"] = events_json(_behind(rule.clauses[i], history, t.at_ms))
        clauses.append(item)
    return {
        "segment": t.segment,
        "kind": t.kind,
        "at": format_ms(t.at_ms),
        "at_ms": t.at_ms,
        "config_id": t.reason.config_id,
        "rule": t.reason.rule,
        "clauses": clauses,
    }


def _behind(clause: Clause, history: list[Event], at_ms: int) -> list[Event]:
    found: dict[str, Event] = {}
    for spec in clause.reads:
        for e in behind(spec, history, at_ms):
            found.setdefault(e.message_id, e)
    return sorted(found.values(), key=lambda e: -e.ts_ms)[:3]


def _history(service: Service, engine: Engine, pid: str) -> list[Event]:
    """The user's logged events, under every id linked to theirs."""
    return service.log.recent(engine.identity.linked(pid)) if service.log is not None else []


def _pid(engine: Engine, user_id: str, parser: ParserDep) -> str:
    """The profile a user id names (any id linked to it names it too)."""
    pid = engine.identity.resolve(parser.pseudonymizer.identifier(user_id))
    if engine.store.get(pid) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no profile for this user")
    return pid


@router.get("/{user_id}", dependencies=[Reader], responses={401: {}, 403: {}, 404: {}})
async def get_profile(user_id: str, engine: EngineDep, service: ServiceDep, parser: ParserDep) -> dict[str, Any]:
    """The profile of a user id or of any id linked to it: its linked ids (as
    kept: pseudonyms where personal), features now, scores with their top contributions, cluster, the latest
    traits (scrubbed), segments with reasons, and the user's latest deliveries to destinations with their status."""
    pid = _pid(engine, user_id, parser)
    vector = engine.vector(pid) or {}
    state = engine.users.get(pid)
    scorers = engine.scorers
    segments = []
    if state is not None and state.members.entered:
        history = _history(service, engine, pid)  # the events behind the reasons: read only when there are some
        for name, since in state.members.entered.items():
            last = state.last.get(name)
            segments.append(
                {
                    "segment": name,
                    "since": format_ms(since),
                    "reason": transition_json(last, engine.config, history) if last else None,
                }
            )
    contributions = scorers.contributions(vector)
    return {
        "user": pid,
        "ids": engine.identity.linked(pid),
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
        "traits": service.people.traits.of(pid) if service.people is not None else {},
        "segments": segments,
        "deliveries": service.ledger.recent_for(pid) if service.ledger is not None else [],
    }


@router.get("/{user_id}/segments/{segment}", dependencies=[Reader], responses={401: {}, 403: {}, 404: {}})
async def get_membership(
    user_id: str, segment: str, engine: EngineDep, service: ServiceDep, parser: ParserDep
) -> dict[str, Any]:
    """Why a user is in or out of one segment: the rule's clauses now, with
    the events behind each, and the last transition."""
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
    history = _history(service, engine, pid)
    now = max(engine.watermark, state.evaluated_ms if state else 0)
    return {
        "user": pid,
        "segment": segment,
        "member": member,
        "since": format_ms(members[segment]) if member else None,
        "rule": rule.text.strip(),
        "holds_now": rule.holds(ctx),
        "clauses_now": [
            {"clause": c.text, "value": plain(v), "events": events_json(_behind(c, history, now))}
            for c, (_, v) in zip(rule.clauses, rule.explain(ctx), strict=True)
        ],
        "last_transition": transition_json(last, engine.config, history) if last else None,
    }


@router.delete("/{user_id}", dependencies=[Admin], responses={401: {}, 403: {}})
async def erase_profile(user_id: str, service: ServiceDep, parser: ParserDep) -> dict[str, Any]:
    """Erase a user: profile, logged events, pending labels, dedup keys, outbox, quarantine;
    later events of the user are accepted, counted and dropped."""
    pid = parser.pseudonymizer.identifier(user_id)
    erased = service.erase(pid, wait=False)  # a snapshot without the user is written in the background
    deadline = time.monotonic() + ERASURE_WAIT_S
    while service.erasures_pending and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    if service.erasures_pending:  # no snapshot yet: the log's tombstone holds the erasure, and it is retried
        return {"erased": erased, "pending": "snapshot"}
    return {"erased": erased}
