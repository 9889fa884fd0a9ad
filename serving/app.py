"""The HTTP app: ``create_app(settings)`` builds it; nothing happens at import.

The lifespan starts the service (log, config, models, recovery) and, on the
wall clock, a task that fires due timers and takes snapshots; at shutdown it
takes a last snapshot and closes the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse

from features.events import SegmentParser
from serving.metrics import Metrics
from serving.routes import events, operations, profiles, segments
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
        ticker = asyncio.create_task(_tick(service))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            service.close()

    app = FastAPI(
        title="segflow",
        summary="Real-time behavioral segmentation with reasons",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.service = service
    app.state.parser = SegmentParser(service.pseudonymizer)
    app.state.metrics = Metrics(lambda: service.engine)
    for router in (events.router, profiles.router, segments.router, operations.router):
        app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> ORJSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        return ORJSONResponse({"detail": problems}, status_code=422)

    return app


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
