"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from features.events import SegmentParser
from serving import auth
from serving.engine import Engine
from serving.metrics import Metrics
from serving.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def get_engine(request: Request) -> Engine:
    engine = get_service(request).engine
    if engine is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "segflow is starting")
    return engine


def get_parser(request: Request) -> SegmentParser:
    parser: SegmentParser = request.app.state.parser
    return parser


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def require_write(request: Request) -> None:
    try:
        auth.check(request, get_service(request).settings.write_keys, "write")
    except HTTPException:
        get_metrics(request).rejects.labels("unauthorized").inc()
        raise


def require_read(request: Request) -> None:
    auth.check(request, get_service(request).settings.read_keys, "read")


ServiceDep = Annotated[Service, Depends(get_service)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ParserDep = Annotated[SegmentParser, Depends(get_parser)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Writer = Depends(require_write)
Reader = Depends(require_read)
