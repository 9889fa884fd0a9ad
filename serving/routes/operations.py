"""Operations: liveness, readiness, Prometheus metrics (routed by the app,
behind the read key unless made public), reload, the event clock."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import ORJSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from features.limits import EARLIEST_MS, LATEST_MS
from segments.config import ConfigError
from serving import backup
from serving.routes.deps import Admin, MetricsDep, ServiceDep
from serving.routes.events import change_json

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {}})
async def readyz(service: ServiceDep) -> Any:
    """Ready once state is recovered; says which models are in use and what is missing."""
    r = service.readiness
    engine = service.engine
    body = {
        "ready": r.ready,
        "notes": r.notes,
        "models": engine.scorers.versions if engine else {},
        "intent": {"mode": engine.scorers.intent, "source": engine.scorers.intent_source} if engine else None,
        "config_id": engine.config.config_id if engine else None,
        "clock": service.settings.clock,
        "durability": service.settings.durability,
    }
    return ORJSONResponse(body, status_code=200 if r.ready else 503)


async def metrics(m: MetricsDep) -> Response:
    """Prometheus metrics (behind the read key unless ``public_metrics``)."""
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/admin/reload", dependencies=[Admin], responses={401: {}, 403: {}, 409: {}, 422: {}})
async def reload(service: ServiceDep) -> dict[str, Any]:
    """Load the segment config and the registered models again. Under another
    config the state is rebuilt from the log in a worker thread while ingest
    goes on, then swapped in; under the same one the new models are swapped in."""
    if service.reloading:
        raise HTTPException(status.HTTP_409_CONFLICT, "a reload is in progress")
    service.reloading = True
    try:
        rebuild = await run_in_threadpool(service.prepare_reload)
        return service.finish_reload(rebuild)
    except ConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, exc.problems) from None
    except OSError as exc:  # the config file went missing or unreadable: nothing was changed
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, [f"cannot read the config: {exc}"]) from None
    finally:
        service.reloading = False


@router.post("/v1/admin/advance", dependencies=[Admin], responses={401: {}, 403: {}, 409: {}})
async def advance(service: ServiceDep, to_ms: Annotated[int, Query(ge=EARLIEST_MS, le=LATEST_MS)]) -> dict[str, Any]:
    """Event clock only: move time to ``to_ms`` so every timer due by then fires
    (the end of a replay, a demo, a test); the transitions it caused."""
    if service.settings.clock != "event" or service.engine is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "time only moves by hand on the event clock")
    changes = service.advance(to_ms)
    return {
        "watermark_ms": service.engine.watermark,
        "transitions": [change_json(c) for c in changes],
    }


@router.post("/v1/admin/snapshot", dependencies=[Admin], responses={401: {}, 403: {}})
async def take_snapshot(service: ServiceDep) -> dict[str, Any]:
    """Start a snapshot now, written in the background (one at a time)."""
    engine = service.engine
    busy = service.snapshot_busy
    if engine is not None and not busy:
        service.save_snapshot(background=True)
    return {"started": not busy, "seq": engine.seq if engine else None}


class BackupRequest(BaseModel):
    to: str = Field(min_length=2, max_length=4096, description="an absolute directory on the server, new or empty")


@router.post("/v1/admin/backup", dependencies=[Admin], responses={401: {}, 403: {}, 422: {}})
async def take_backup(body: BackupRequest, service: ServiceDep) -> dict[str, Any]:
    """A consistent copy of the state (snapshot, log, quarantine, config) into
    a directory on the server, taken while the service goes on; ``segflow
    restore`` puts it into a fresh state directory."""
    target = Path(body.to)
    try:
        writer = backup.start(service, target)
        return await run_in_threadpool(backup.finish, service, target, writer)
    except (ValueError, OSError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, [str(exc)]) from None
