"""Ingest: Segment Spec bodies on /v1/track, /v1/page, /v1/identify,
/v1/screen, /v1/alias, /v1/group and /v1/batch, and on the short paths
analytics.js posts to from a browser (/v1/t, /v1/p, /v1/i, /v1/s, /v1/a,
/v1/g, /v1/b: ``text/plain`` JSON with a source key as ``writeKey``).
Bodies may be gzip- or deflate-encoded (:mod:`serving.bodies`). Each event
is checked on its own: the good ones are logged before the answer, which
lists the segment transitions they caused; each bad one is listed by index
with its field and problem, counted, and kept (scrubbed) in the quarantine.
A body is read no further than its size limit."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import ORJSONResponse

from features.contacts import contacts_of
from features.limits import EventError, PayloadTooLarge, load
from features.segment_spec import Parsed, SegmentParser, write_key_of
from serving.bodies import read_body
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


BROWSER_PATHS = {"t": "track", "p": "page", "i": "identify", "s": "screen", "a": "alias", "g": "group", "b": "batch"}


def _route(kind: str, path: str, browser: bool = False) -> None:
    async def endpoint(
        request: Request, service: ServiceDep, parser: ParserDep, metrics: MetricsDep, guard: GuardDep
    ) -> Any:
        return await _ingest(kind, request, service, parser, metrics, guard)

    endpoint.__name__ = f"ingest_{kind}" + ("_browser" if browser else "")
    router.add_api_route(
        f"/{path}",
        endpoint,
        methods=["POST"],
        summary=f"Ingest a Segment Spec {kind} {'envelope' if kind == 'batch' else 'event'}",
        openapi_extra=INGEST_BODIES[kind],
        responses=INGEST_RESPONSES,
        include_in_schema=not browser,  # the same route under analytics.js's short name
    )


for _kind in ("track", "page", "identify", "screen", "alias", "group", "batch"):
    _route(_kind, _kind)
for _short, _kind in BROWSER_PATHS.items():
    _route(_kind, _short, browser=True)
