"""What segflow holds about people beside events, for admins: a
data-subject access export, the email suppression list, vault key rotation."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field

from features.events import to_payload
from serving.people import People
from serving.routes.deps import Admin, EngineDep, ParserDep, ServiceDep
from serving.routes.profiles import get_profile

router = APIRouter(tags=["people"], dependencies=[Admin])
EXPORT_EVENTS = 100_000  # the retention bounds a user's log far below this


def _people(service: ServiceDep) -> People:
    if service.people is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "segflow is starting")
    return service.people


PeopleDep = Annotated[People, Depends(_people)]


@router.get("/v1/profiles/{user_id}/export", responses={401: {}, 403: {}, 404: {}})
async def export_profile(
    user_id: str, engine: EngineDep, service: ServiceDep, parser: ParserDep, people: PeopleDep
) -> dict[str, Any]:
    """Everything segflow holds about a user, for a data-subject access request:
    the profile, every logged event, deliveries, the vault's contact (the one
    place it is ever returned), consent, deletion requests; under every id
    linked to the user's."""
    pid = engine.identity.resolve(parser.pseudonymizer.identifier(user_id))
    ids = engine.identity.linked(pid)
    held = people.export(pid)
    events = service.log.recent(ids, EXPORT_EVENTS) if service.log is not None else []
    known = engine.store.get(pid) is not None
    if not known and not events and held["contact"] is None and not held["deletion_requests"]:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "segflow holds nothing about this user")
    ledger = service.ledger
    return {
        "user": pid,
        "profile": await get_profile(user_id, engine, service, parser) if known else None,
        "events": [to_payload(e) for e in reversed(events)],
        "deliveries": [d for i in ids for d in ledger.recent_for(i, EXPORT_EVENTS)] if ledger is not None else [],
        **held,
        "linked": {i: people.export(i) for i in ids[1:]},  # what each linked id brought (a contact, traits)
    }


class Suppressions(BaseModel):
    add: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default=[], max_length=100_000)
    remove: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default=[], max_length=100_000)
    reason: str = Field(default="suppression list", max_length=200)


@router.post("/v1/admin/suppressions", responses={401: {}, 403: {}})
async def suppressions(body: Suppressions, people: PeopleDep, service: ServiceDep) -> dict[str, Any]:
    """Add user ids or email addresses to the email suppression list (kept as
    pseudonyms), or remove them (a renewed consent)."""
    added = people.consent.suppress(body.add, f"list: {body.reason}", time.time_ns() // 1_000_000)
    lifted = people.consent.lift(body.remove)
    return {"added": added, "removed": lifted, "size": len(people.consent)}


@router.post("/v1/admin/vault/rotate", responses={401: {}, 403: {}})
async def rotate_vault(people: PeopleDep) -> dict[str, Any]:
    """A new vault key; every contact sealed again under it (with
    ``$SEGFLOW_VAULT_KEYS``: put the new key first, restart, then call this)."""
    return people.vault.rotate()
