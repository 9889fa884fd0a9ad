"""The HTTP app: ``create_app(settings)`` builds it; nothing happens at import.

The lifespan starts the service (log, config, models, recovery) and, on the
wall clock, a task that fires due timers and takes snapshots, and a
dispatcher per configured destination; at shutdown the dispatchers stop
(what they had not delivered stays pending), a last snapshot is taken and
the log closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, ORJSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import Guard, ring_of
from serving.cors import IngestCors, origins_of
from serving.destinations.pool import Dispatchers
from serving.metrics import Metrics
from serving.routes import destinations, events, operations, people, profiles, quarantine, segments, transitions
from serving.routes.deps import Reader
from serving.scorers import Scorers
from serving.service import Service
from serving.settings import Settings

log = logging.getLogger("segflow.app")


def create_app(settings: Settings, scorers: Scorers | None = None) -> FastAPI:
    """The app. Every route that touches the engine is ``async``: it runs on
    the event loop, one at a time with ingest and the timer task, so the
    engine's state is never read or changed from two threads at once."""
    service = Service(settings, scorers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        assert service.ledger is not None and service.log is not None
        dispatchers = Dispatchers(service.destinations, service.ledger, service.log, service.fields(), service.people)
        app.state.dispatchers = dispatchers
        service.changed = dispatchers.wake
        dispatchers.start()
        ticker = asyncio.create_task(_tick(service))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await dispatchers.stop()  # what is not delivered stays pending in the ledger
            service.close()

    public_docs = settings.public_docs
    app = FastAPI(
        title="segflow",
        summary="Real-time behavioral segmentation with reasons",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        openapi_url="/openapi.json" if public_docs else None,
        docs_url="/docs" if public_docs else None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.guard = Guard(ring_of(settings), settings)

    def deliveries() -> list[dict[str, Any]]:
        pool = getattr(app.state, "dispatchers", None)
        return pool.status() if pool is not None else []

    app.state.metrics = Metrics(lambda: service.engine, deliveries)
    routers = (events, profiles, people, segments, quarantine, operations, transitions, destinations)
    for router in (r.router for r in routers):
        app.include_router(router)
    app.add_api_route(
        "/metrics",
        operations.metrics,
        methods=["GET"],
        dependencies=[] if settings.public_metrics else [Reader],
        tags=["operations"],
        responses={401: {}, 403: {}},
    )
    if not public_docs:
        _docs_behind_key(app)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> ORJSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error(422, problems)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> ORJSONResponse:
        return _error(exc.status_code, exc.detail, exc.headers)

    app.add_middleware(Contained)
    ring = app.state.guard.ring
    allowed = origins_of(settings.source_origins, lambda: (k.origins for k in ring.in_force() if k.scope == "source"))
    app.add_middleware(IngestCors, allowed=allowed, refuse=_error)  # outermost: errors and 500s get CORS too
    return app


class Contained:
    """Any exception a route lets out answers a 500 with ``code`` and
    ``message``, and is logged by its kind and place only: never its message
    or the request, which may be personal. (Starlette's own handler for
    ``Exception`` re-raises after answering, and the server then logs the
    whole traceback.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error(
                "request failed: %s at %s:%s", type(exc).__name__, where and where.filename, where and where.lineno
            )
            if not started:
                await _error(500, "internal error; the request was not applied")(scope, receive, send)


_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


def _error(status_code: int, detail: Any, headers: Mapping[str, str] | None = None) -> ORJSONResponse:
    """An error as the SDKs expect it: ``code`` and ``message``, with the problems in ``detail``."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        message = "; ".join(f"{d.get('field', '')}: {d.get('problem', '')}" for d in detail[:3])
    else:
        message = str(detail)
    body = {"code": _CODES.get(status_code, f"http_{status_code}"), "message": message, "detail": detail}
    return ORJSONResponse(body, status_code=status_code, headers=dict(headers) if headers else None)


def _docs_behind_key(app: FastAPI) -> None:
    """``/openapi.json`` and ``/docs`` for holders of a read key."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Reader])
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Reader])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="segflow")


async def _tick(service: Service) -> None:
    """Fire due timers (wall clock) and take snapshots, between requests."""
    while True:
        now_ms = time.time_ns() // 1_000_000
        try:
            service.tick(now_ms)
        except Exception:  # keep serving; the next tick retries
            log.exception("housekeeping failed")
        engine = service.engine
        wait = 0.05
        if engine is not None and service.settings.clock == "wall":
            due = engine.next_timer()
            if due is not None:
                wait = min(wait, max((due - time.time_ns() // 1_000_000) / 1000, 0.001))
        await asyncio.sleep(wait)
