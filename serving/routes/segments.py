"""Segments: definitions with live sizes, members page by page."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from segments.config import ConfigError
from serving.preview import preview
from serving.regime import loads_config
from serving.routes.deps import Admin, EngineDep, Reader, ServiceDep

router = APIRouter(prefix="/v1/segments", tags=["segments"], dependencies=[Reader])


@router.get("", responses={401: {}})
async def list_segments(engine: EngineDep) -> dict[str, Any]:
    """Every segment's definition and its size now."""
    config = engine.config
    sizes = engine.sizes()
    return {
        "config_id": config.config_id,
        "version": config.version,
        "thresholds": dict(config.thresholds),
        "segments": [
            {
                "name": name,
                "description": seg.description,
                "rule": seg.rule.text.strip(),
                "exit": seg.exit.text.strip() if seg.exit is not None else None,
                "min_dwell_ms": seg.min_dwell_ms or None,
                "group": g.name if (g := config.group_of(name)) else None,
                "size": sizes.get(name, 0),
            }
            for name, seg in config.segments.items()
        ],
    }


class PreviewRequest(BaseModel):
    config: str = Field(min_length=1, max_length=200_000, description="the new segments.yaml, as text")
    limit: int = Field(default=100, ge=0, le=10_000, description="transitions listed per segment")


@router.post("/preview", dependencies=[Admin], responses={401: {}, 403: {}, 422: {}})
async def preview_change(body: PreviewRequest, service: ServiceDep) -> dict[str, Any]:
    """Replay the stored history under the current and the proposed config;
    who would enter and leave, when, and each day's sizes. Nothing is saved."""
    engine = service.engine
    if engine is None or service.log is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "segflow is starting")
    try:
        new = loads_config(body.config, "preview.yaml")
    except ConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, exc.problems) from None
    old, scorers, log = engine.config, service.fresh_scorers(), service.log  # the models as loaded, not as learned live

    def run() -> dict[str, Any]:
        return preview(old, new, log.read_apart(), scorers, log.links_beyond(apart=True)).as_dict(body.limit)

    return await run_in_threadpool(run)


@router.get("/{name}/members", responses={401: {}, 404: {}})
async def members(
    name: str,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> dict[str, Any]:
    """Members in id order, ``limit`` at a time; pass ``next_cursor`` back for the next page."""
    if name not in engine.config.segments:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no segment named {name!r}")
    after = ""
    if cursor:
        try:
            after = base64.urlsafe_b64decode(cursor.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "cursor: not a cursor this API returned") from None
    ids = sorted(p for p in engine.members_of[name] if p > after)
    page = ids[:limit]
    more = len(ids) > limit
    return {
        "segment": name,
        "size": len(engine.members_of[name]),
        "members": page,
        "next_cursor": base64.urlsafe_b64encode(page[-1].encode()).decode() if more else None,
    }
