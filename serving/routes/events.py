"""Ingest: Segment Spec bodies on /v1/track, /v1/page, /v1/identify and
/v1/batch. Each event is checked on its own: the good ones are logged before
the answer, which lists the segment transitions they caused; each bad one is
listed by index with its field and problem, counted, and kept (scrubbed) in
the quarantine. A body is read no further than its size limit."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import ORJSONResponse
from starlette.requests import ClientDisconnect

from features.contacts import contacts_of
from features.events import EventError, Parsed, PayloadTooLarge, SegmentParser, load, write_key_of
from serving.engine import Change
from serving.metrics import Metrics
from serving.routes.deps import GuardDep, MetricsDep, ParserDep, ServiceDep, refusal_reason
from serving.routes.schemas import INGEST_BODIES, INGEST_RESPONSES
from serving.service import Service

router = APIRouter(prefix="/v1", tags=["ingest"])
MAX_QUARANTINED_PER_REQUEST = 100  # a request of bad events cannot push out what others left
MAX_LISTED_PER_REQUEST = 1000


def change_json(change: Change) -> dict[str, Any]:
    t = change.transition
    return {"user": change.profile_id, "segment": t.segment, "kind": t.kind, "at_ms": t.at_ms}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit``
    (a declared length is believed first; a chunked body is counted as it comes)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"body over the {limit}-byte limit")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"body over the {limit}-byte limit")
    except ClientDisconnect:  # dropped at its deadline, or gone: nothing was accepted
        raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, "the body did not arrive in time") from None
    return bytes(body)


async def _ingest(
    kind: str, request: Request, service: ServiceDep, parser: ParserDep, metrics: MetricsDep, guard: GuardDep
) -> Any:
    header = "authorization" in request.headers
    try:
        if header:
            guard.check(request, "ingest")
        limit = service.settings.max_batch_bytes if kind == "batch" else service.settings.max_event_bytes
        body = await read_body(request, limit)
        received_ms = time.time_ns() // 1_000_000
        payload = load(body, kind)
        if not header:  # the key in the body, checked before any event is
            guard.check(request, "ingest", write_key_of(payload), in_body=True)
        parsed = parser.parse_payload(payload, received_ms=received_ms, kind=kind, size=len(body))
    except PayloadTooLarge as exc:
        metrics.rejects.labels("too_large").inc()
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, _problems(exc)) from None
    except EventError as exc:
        metrics.rejects.labels("invalid").inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, _problems(exc)) from None
    except HTTPException as exc:
        metrics.rejects.labels(refusal_reason(exc.status_code)).inc()
        raise
    rejected = _quarantine(parsed, kind, received_ms, parser, service, metrics)
    outcome = service.ingest(parsed.events, contacts_of(payload, parsed, kind))
    decided = time.time_ns() / 1e9
    for e in parsed.events:
        metrics.latency.observe(max(decided - e.received_ms / 1000, 0.0))
    answer: dict[str, Any] = {
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "suppressed": outcome.suppressed,
        "late": outcome.late,
        "transitions": [change_json(c) for c in outcome.changes],
    }
    if not rejected:
        return ORJSONResponse(answer)
    n, total = len(parsed.rejected), len(parsed.rejected) + len(parsed.events)
    first = rejected[0]
    kept = min(n, MAX_QUARANTINED_PER_REQUEST)
    message = f"{n} of {total} events rejected, {kept} quarantined; first: {first['field']}: {first['problem']}"
    answer |= {"code": "events_rejected", "message": message, "rejected": rejected}
    if parsed.events:
        return ORJSONResponse(answer)
    answer["detail"] = rejected
    return ORJSONResponse(answer, status_code=status.HTTP_400_BAD_REQUEST)


def _quarantine(
    parsed: Parsed, kind: str, received_ms: int, parser: SegmentParser, service: Service, metrics: Metrics
) -> list[dict[str, Any]]:
    """Keep the rejected events (scrubbed; the first
    :data:`MAX_QUARANTINED_PER_REQUEST` of a request, none of an erased user)
    and say, by index, what was wrong with each (the first
    :data:`MAX_LISTED_PER_REQUEST` problems)."""
    if not parsed.rejected:
        return []
    assert service.quarantine is not None
    held = []
    for r in parsed.rejected[:MAX_QUARANTINED_PER_REQUEST]:
        pid = parser.profile_of(r.payload)
        if pid is None or not service.is_erased(pid):
            held.append((pid, r.problems, parser.scrubbed(r.payload)))
    service.quarantine.add(received_ms, None if kind == "batch" else kind, held)
    metrics.rejects.labels("invalid_event").inc(len(parsed.rejected))
    listed = [{"index": r.index, "field": f, "problem": p} for r in parsed.rejected for f, p in r.problems]
    return listed[:MAX_LISTED_PER_REQUEST]


def _problems(exc: EventError) -> list[dict[str, str]]:
    return [{"field": f, "problem": p} for f, p in exc.problems]


def _route(kind: str) -> None:
    async def endpoint(
        request: Request, service: ServiceDep, parser: ParserDep, metrics: MetricsDep, guard: GuardDep
    ) -> Any:
        return await _ingest(kind, request, service, parser, metrics, guard)

    endpoint.__name__ = f"ingest_{kind}"
    router.add_api_route(
        f"/{kind}",
        endpoint,
        methods=["POST"],
        summary=f"Ingest a Segment Spec {kind} {'envelope' if kind == 'batch' else 'event'}",
        openapi_extra=INGEST_BODIES[kind],
        responses=INGEST_RESPONSES,
    )


for _kind in ("track", "page", "identify", "batch"):
    _route(_kind)
