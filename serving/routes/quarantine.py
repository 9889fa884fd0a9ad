"""The quarantine, for admins: events refused at the edge, scrubbed; list,
show, replay (parse again as received then; ingested and removed if it now
passes), drop."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, status

from features.limits import EventError
from features.payloads import TOO_DEEP
from serving.routes.deps import Admin, ParserDep, QuarantineDep, ServiceDep
from serving.routes.events import change_json

MAX_ID = 2**62
HeldId = Annotated[int, Path(ge=1, le=MAX_ID, description="a quarantined event's id")]
router = APIRouter(prefix="/v1/admin/quarantine", tags=["quarantine"], dependencies=[Admin])


@router.get("", responses={401: {}, 403: {}})
async def list_held(
    quarantine: QuarantineDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="list entries after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Quarantined events, oldest first, with their problems."""
    held = quarantine.list(after, limit)
    return {"count": quarantine.count(), "held": [h.summary() for h in held]}


@router.get("/{held_id}", responses={401: {}, 403: {}, 404: {}})
async def show_held(held_id: HeldId, quarantine: QuarantineDep) -> dict[str, Any]:
    """One quarantined event, with its (scrubbed) payload."""
    held = quarantine.get(held_id)
    if held is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"nothing quarantined under id {held_id}")
    return held.json()


@router.post("/{held_id}/replay", responses={401: {}, 403: {}, 404: {}, 422: {}})
async def replay_held(
    held_id: HeldId, quarantine: QuarantineDep, parser: ParserDep, service: ServiceDep
) -> dict[str, Any]:
    """Parse a quarantined event again, as received then: if it now passes
    (a config now allows it, or the payload was fixed at the source), ingest
    it and drop it from the quarantine; else answer 422 with its problems."""
    held = quarantine.get(held_id)
    if held is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"nothing quarantined under id {held_id}")
    if TOO_DEEP in orjson.dumps(held.payload).decode():
        problem = "this event was cut when it was quarantined (nested too deep): it cannot be replayed as sent"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, [{"field": "$", "problem": problem}])
    try:
        event = parser.event(held.payload, received_ms=held.received_ms, kind=held.kind)
    except EventError as exc:
        problems = [{"field": f, "problem": p} for f, p in exc.problems]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, problems) from None
    outcome = service.ingest([event])
    quarantine.remove(held_id)
    return {
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "transitions": [change_json(c) for c in outcome.changes],
    }


@router.delete("/{held_id}", responses={401: {}, 403: {}})
async def drop_held(held_id: HeldId, quarantine: QuarantineDep) -> dict[str, bool]:
    """Drop a quarantined event for good."""
    return {"dropped": quarantine.remove(held_id)}
