"""The outbox for other consumers (read key): ``GET /v1/transitions?after=``
pages through every segment change in order; ``/v1/transitions/stream``
follows it live as server-sent events (each event's ``id`` is its cursor,
so a client that reconnects with ``Last-Event-ID`` misses nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from serving.outbox import Entry
from serving.routes.deps import Reader, ServiceDep

MAX_ID = 2**62
router = APIRouter(prefix="/v1/transitions", tags=["transitions"], dependencies=[Reader])
Cursor = Annotated[int, Query(ge=0, le=MAX_ID, description="changes after this cursor (0: from the oldest kept)")]
POLL_S = 0.1


def entry_json(e: Entry) -> dict[str, Any]:
    return {
        "cursor": e.id, "key": e.key, "user": e.profile_id, "segment": e.segment, "kind": e.kind,
        "at_ms": e.at_ms, "cause": e.cause, "decided_ms": e.recorded_ms, **e.body,
    }  # fmt: skip


@router.get("", responses={401: {}, 403: {}})
async def page(
    service: ServiceDep, after: Cursor = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """Changes after ``after``, oldest first; ``next`` is the cursor to ask with next."""
    entries = service.log.changes_after(after, limit) if service.log is not None else []
    return {"transitions": [entry_json(e) for e in entries], "next": entries[-1].id if entries else after}


@router.get("/stream", responses={401: {}, 403: {}})
async def stream(
    request: Request,
    service: ServiceDep,
    after: Cursor = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Every change after ``after`` (or ``Last-Event-ID``), then each new one as it is decided."""
    cursor = int(last_event_id) if last_event_id is not None and last_event_id.isdigit() else after

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal cursor
        while not await request.is_disconnected():
            entries = service.log.changes_after(cursor, 500) if service.log is not None else []
            for e in entries:
                yield ServerSentEvent(orjson.dumps(entry_json(e)).decode(), id=str(e.id), event="transition")
                cursor = e.id
            if not entries:
                await asyncio.sleep(POLL_S)

    return EventSourceResponse(events(), ping=15)
