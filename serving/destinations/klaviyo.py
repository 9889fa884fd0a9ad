"""Klaviyo: a segment is a list; an enter may also create an event a flow triggers on.

Requests follow Klaviyo's REST API (JSON:API bodies,
``Authorization: Klaviyo-API-Key …``, the ``revision`` header):

- enter: ``POST /api/profile-import`` creates or updates the profile (the
  user id as ``external_id``, the vault's email and phone when it keeps
  them) and answers its id; ``POST /api/lists/{id}/relationships/profiles``
  adds it to the list (at most 1,000 profiles a call). Never the subscribe
  endpoint: segflow does not change anybody's marketing consent.
- exit: ``DELETE /api/lists/{id}/relationships/profiles``.
- trigger: ``POST /api/events`` for each enter (one its exit follows in the
  same batch too) with the metric ``Entered segment {segment}``,
  the change's key as ``unique_id`` (Klaviyo keeps the first of a repeated
  one, so a retried batch triggers a flow once) and the requested fields.
- erasure: ``POST /api/data-privacy-deletion-jobs``.
- reconciliation: ``GET /api/lists/{id}/profiles`` page by page.

Retries (429 with ``Retry-After``, 5xx) are the dispatcher's; every call is
idempotent, so a batch is sent again whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from features.contacts import Contact
from serving.destinations.config import KlaviyoDestination
from serving.destinations.http import call
from serving.destinations.sync import Lookup, Member, Person, chunks, net

JSONAPI = "application/vnd.api+json"
LIST_LIMIT = 1000  # profiles a list-relationships call takes
PAGE_SIZE = 100
KNOWN_IDS = 100_000  # Klaviyo profile ids remembered (a profile import each, otherwise)


def profile_attributes(profile_id: str, contact: Contact | None) -> dict[str, str]:
    """A profile as Klaviyo identifies it: the user id as external id, and the vault's email and phone."""
    attributes = {"external_id": profile_id}
    if contact is not None and contact.email:
        attributes["email"] = contact.email
    if contact is not None and contact.phone:
        attributes["phone_number"] = contact.phone
    return attributes


def event_body(delivery: dict[str, Any], metric: str, attributes: dict[str, str]) -> dict[str, Any]:
    properties = {
        "segment": delivery["segment"],
        "reason": delivery["reason"],
        "scores": delivery["scores"],
        "cluster": delivery["cluster"],
        **delivery["fields"],
    }
    return {
        "data": {
            "type": "event",
            "attributes": {
                "properties": properties,
                "time": delivery["at"],
                "unique_id": delivery["key"],
                "backfill": False,  # a live change: flows trigger
                "metric": {
                    "data": {"type": "metric", "attributes": {"name": metric.format(segment=delivery["segment"])}}
                },
                "profile": {"data": {"type": "profile", "attributes": attributes}},
            },
        }
    }


class Klaviyo:
    def __init__(self, destination: KlaviyoDestination, client: httpx.AsyncClient, contacts: Lookup) -> None:
        self.destination = destination
        self.client = client
        self.contacts = contacts
        self.base = destination.url.rstrip("/")
        self.headers = {
            "Authorization": f"Klaviyo-API-Key {destination.key()}",
            "revision": destination.revision,
            "accept": JSONAPI,
        }
        self._ids: dict[tuple[object, ...], str] = {}

    async def _call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = self.headers if body is None else {**self.headers, "content-type": JSONAPI}
        url, timeout = self.base + path, self.destination.timeout_s
        return await call(self.client, method, url, timeout, headers=headers, json=body, **kwargs)

    async def _profile_id(self, profile_id: str, contact: Contact | None) -> str:
        """Klaviyo's id of a user's profile, created or updated first (once a process, per contact)."""
        attributes = profile_attributes(profile_id, contact)
        known = (profile_id, *sorted(attributes.items()))
        found = self._ids.get(known)
        if found is None:
            r = await self._call("POST", "/api/profile-import", {"data": {"type": "profile", "attributes": attributes}})
            found = str(r.json()["data"]["id"])
            if len(self._ids) >= KNOWN_IDS:
                self._ids.clear()
            self._ids[known] = found
        return found

    async def send(self, deliveries: Sequence[dict[str, Any]]) -> Mapping[str, str]:
        d = self.destination
        last = net(deliveries)
        contacts = self.contacts({user for user, _ in last})
        ids = {user: await self._profile_id(user, contacts.get(user)) for user in sorted({u for u, _ in last})}
        groups: dict[tuple[str, str], list[str]] = {}
        for (user, segment), change in last.items():
            groups.setdefault((d.lists[segment], change["kind"]), []).append(ids[user])
        for (list_id, kind), profiles in sorted(groups.items()):
            await self._relate("POST" if kind == "enter" else "DELETE", list_id, profiles)
        for change in deliveries:  # every enter triggers, even one its exit follows in the batch
            if change["kind"] == "enter" and change["segment"] in d.events:
                user = change["user"]
                body = event_body(change, d.metric, profile_attributes(user, contacts.get(user)))
                await self._call("POST", "/api/events", body)
        return {}

    async def _relate(self, method: str, list_id: str, profiles: Sequence[str]) -> None:
        for part in chunks(profiles, LIST_LIMIT):
            data = [{"type": "profile", "id": p} for p in part]
            await self._call(method, f"/api/lists/{list_id}/relationships/profiles", {"data": data})

    # -- reconciliation ------------------------------------------------------------

    async def members(self, segment: str) -> list[Member]:
        """The list's members, every page."""
        url: str | None = f"/api/lists/{self.destination.lists[segment]}/profiles"
        params: dict[str, Any] | None = {"fields[profile]": "external_id", "page[size]": PAGE_SIZE}
        found: list[Member] = []
        while url:
            r = await self._call("GET", url, params=params)
            page = r.json()
            found += [Member(str(p["id"]), (p.get("attributes") or {}).get("external_id")) for p in page["data"]]
            following = (page.get("links") or {}).get("next")
            url, params = (following.removeprefix(self.base), None) if following else (None, None)
        return found

    async def add(self, segment: str, profile_ids: Sequence[str]) -> Mapping[str, str]:
        contacts = self.contacts(profile_ids)
        ids = [await self._profile_id(p, contacts.get(p)) for p in profile_ids]
        await self._relate("POST", self.destination.lists[segment], ids)
        return {}

    async def remove(self, segment: str, members: Sequence[Member]) -> None:
        await self._relate("DELETE", self.destination.lists[segment], [m.remote_id for m in members])

    # -- erasure -------------------------------------------------------------------

    async def delete(self, person: Person) -> str:
        """Ask Klaviyo to delete the person: by email or phone when the vault had
        them, else by the profile its external id finds (none: nothing to delete)."""
        attributes = profile_attributes(person.profile_id, person.contact)
        del attributes["external_id"]
        profile: dict[str, Any] = {"type": "profile", "attributes": attributes}
        if not attributes:
            quoted = person.profile_id.replace("\\", "\\\\").replace('"', '\\"')
            params = {"filter": f'equals(external_id,"{quoted}")'}
            found = (await self._call("GET", "/api/profiles", params=params)).json()["data"]
            if not found:
                return "no such profile in Klaviyo"
            profile["id"] = str(found[0]["id"])
        body = {"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": profile}}}}
        await self._call("POST", "/api/data-privacy-deletion-jobs", body)
        return "deletion requested"
