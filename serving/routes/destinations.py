"""Destinations, for admins: status, dead letters, replay."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from serving.destinations.ledger import STATUSES
from serving.destinations.pool import Dispatchers
from serving.destinations.reconcile import reconcile
from serving.routes.deps import Admin, EngineDep, ServiceDep

router = APIRouter(prefix="/v1/admin/destinations", tags=["destinations"], dependencies=[Admin])
Name = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="a configured destination")]


def _dispatchers(request: Request, name: str | None = None) -> Dispatchers:
    pool: Dispatchers | None = getattr(request.app.state, "dispatchers", None)
    if pool is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "segflow is starting")
    if name is not None and name not in pool.by_name:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no destination named {name!r} (see config/destinations.yaml)")
    return pool


@router.get("", responses={401: {}, 403: {}})
async def destinations_status(request: Request) -> dict[str, Any]:
    """Each destination: deliveries by status, attempts, retries, the oldest undelivered change."""
    return {"destinations": _dispatchers(request).status()}


@router.get("/{name}/deliveries", responses={401: {}, 403: {}, 404: {}})
async def deliveries(
    request: Request,
    name: Name,
    state: Annotated[str, Query(alias="status", pattern="^(" + "|".join(STATUSES) + ")$")] = "dead",
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A destination's deliveries in one status (by default the dead letters), oldest first."""
    pool = _dispatchers(request, name)
    return {"deliveries": pool.ledger.listing(name, state, after, limit)}


class ReplayRequest(BaseModel):
    status: Literal["dead", "cancelled"] = "dead"
    keys: list[str] | None = Field(default=None, max_length=10_000)


@router.post("/{name}/replay", responses={401: {}, 403: {}, 404: {}})
async def replay(request: Request, name: Name, body: ReplayRequest) -> dict[str, Any]:
    """Send again, from a first attempt: the dead letters (or the cancelled deliveries, or only these keys)."""
    pool = _dispatchers(request, name)
    n = pool.ledger.replay(name, body.status, body.keys)
    pool.wake()
    return {"requeued": n}


@router.post("/{name}/reconcile", responses={401: {}, 403: {}, 404: {}, 409: {}})
async def reconcile_destination(
    request: Request,
    name: Name,
    engine: EngineDep,
    service: ServiceDep,
    dry_run: Annotated[bool, Query(description="only say what would change")] = False,
) -> dict[str, Any]:
    """Make an email platform's lists or tags hold exactly segflow's members
    who may get email: read its membership, remove who should not be there,
    add who is missing (a dry run changes nothing)."""
    pool = _dispatchers(request, name)
    try:
        platform = pool.platform(name)
    except KeyError:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{name} is a webhook: only email platforms reconcile") from None
    assert service.people is not None
    d = pool.by_name[name].destination
    segments = d.segments if d.segments is not None else sorted(engine.members_of)
    unknown = [s for s in segments if s not in engine.members_of]
    if unknown:
        raise HTTPException(status.HTTP_409_CONFLICT, f"segments not in the config in force: {unknown}")
    dispatcher = pool.by_name[name]
    drifts = await reconcile(
        platform, segments, lambda s: list(engine.members_of[s]), service.people, dispatcher.unsettled, dry_run
    )
    return {"destination": name, "dry_run": dry_run, "segments": [x.as_dict() for x in drifts]}
