"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, status

from features.segment_spec import SegmentParser
from serving.auth import Guard
from serving.engine import Engine
from serving.keys import ApiKey
from serving.metrics import Metrics
from serving.quarantine import Quarantine
from serving.service import Service

T = TypeVar("T")


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _started(part: T | None) -> T:
    """A part of the service that exists once it has started (503 before)."""
    if part is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "segflow is starting")
    return part


def get_engine(request: Request) -> Engine:
    return _started(get_service(request).engine)


def get_parser(request: Request) -> SegmentParser:
    return _started(get_service(request).parser)


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_guard(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


def get_quarantine(request: Request) -> Quarantine:
    return _started(get_service(request).quarantine)


def allowed(action: str) -> Any:
    """A dependency that lets a request through when its key may do ``action``."""

    async def check(request: Request) -> ApiKey:  # on the event loop, as the rate buckets are
        try:
            return get_guard(request).check(request, action)
        except HTTPException as exc:
            get_metrics(request).rejects.labels(refusal_reason(exc.status_code)).inc()
            raise

    return Depends(check)


def refusal_reason(code: int) -> str:
    """The metrics label of a refused request."""
    return {401: "unauthorized", 403: "forbidden", 413: "too_large", 429: "rate_limited"}.get(code, "refused")


ServiceDep = Annotated[Service, Depends(get_service)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ParserDep = Annotated[SegmentParser, Depends(get_parser)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
GuardDep = Annotated[Guard, Depends(get_guard)]
QuarantineDep = Annotated[Quarantine, Depends(get_quarantine)]
Reader = allowed("read")
Admin = allowed("admin")
