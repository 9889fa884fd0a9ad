"""Ingest: Segment Spec bodies on /v1/track, /v1/page, /v1/identify and
/v1/batch. Each event is logged before the answer, which lists the segment
transitions the request caused."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import ORJSONResponse

from features.events import EventError, PayloadTooLarge
from serving.engine import Change
from serving.routes.deps import MetricsDep, ParserDep, ServiceDep, Writer

router = APIRouter(prefix="/v1", tags=["ingest"], dependencies=[Writer])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}


def change_json(change: Change) -> dict[str, Any]:
    t = change.transition
    return {"user": change.profile_id, "segment": t.segment, "kind": t.kind, "at_ms": t.at_ms}


async def _ingest(kind: str, request: Request, service: ServiceDep, parser: ParserDep, metrics: MetricsDep) -> Any:
    limit = service.settings.max_batch_bytes if kind == "batch" else service.settings.max_event_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        metrics.rejects.labels("too_large").inc()
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"body over the {limit}-byte limit")
    body = await request.body()
    received_ms = time.time_ns() // 1_000_000
    try:
        events = parser.body(body, received_ms=received_ms, kind=kind)
    except PayloadTooLarge as exc:
        metrics.rejects.labels("too_large").inc()
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, _problems(exc)) from None
    except EventError as exc:
        metrics.rejects.labels("invalid").inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, _problems(exc)) from None
    outcome = service.ingest(events)
    decided = time.time_ns() / 1e9
    for e in events:
        metrics.latency.observe(max(decided - e.received_ms / 1000, 0.0))
    return ORJSONResponse(
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "suppressed": outcome.suppressed,
            "late": outcome.late,
            "transitions": [change_json(c) for c in outcome.changes],
        }
    )


def _problems(exc: EventError) -> list[dict[str, str]]:
    return [{"field": f, "problem": p} for f, p in exc.problems]


def _route(kind: str) -> None:
    async def endpoint(request: Request, service: ServiceDep, parser: ParserDep, metrics: MetricsDep) -> Any:
        return await _ingest(kind, request, service, parser, metrics)

    endpoint.__name__ = f"ingest_{kind}"
    router.add_api_route(
        f"/{kind}",
        endpoint,
        methods=["POST"],
        summary=f"Ingest a Segment Spec {kind} {'envelope' if kind == 'batch' else 'event'}",
        openapi_extra=_BODY,
        responses={400: {"description": "invalid body"}, 401: {"description": "no write key"}, 413: {}},
    )


for _kind in ("track", "page", "identify", "batch"):
    _route(_kind)
