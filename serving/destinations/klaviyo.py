"""Klaviyo: a segment is a list; an enter may also create an event a flow triggers on.

Requests follow Klaviyo's REST API (JSON:API bodies,
``Authorization: Klaviyo-API-Key …``, the ``revision`` header):

- enter: ``POST /api/profile-import`` creates or updates the profile (the
  user id as ``external_id``, the vault's email and phone when it keeps
  them) and answers its id; ``POST /api/lists/{id}/relationships/profiles``
  adds it to the list (at most 1,000 profiles a call). Never the subscribe
  endpoint: segflow does not change anybody's marketing consent.
- exit: ``DELETE /api/lists/{id}/relationships/profiles``, the profile found
  by its external id (``GET /api/profiles?filter=…``; never imported, so a
  leaving user's contact is not sent again).
- a profile Klaviyo refuses (a 4xx on import) skips that user's changes,
  with why; the rest of the batch goes on.
- trigger: ``POST /api/events`` (not the bulk job: it refuses a whole request
  when one ``unique_id`` repeats, as a retry after a lost answer does) for each enter (one its exit follows in the
  same batch too) with the metric ``Entered segment {segment}``,
  the change's key as ``unique_id`` (Klaviyo keeps the first of a repeated
  one, so a retried batch triggers a flow once) and the requested fields.
- erasure: ``POST /api/data-privacy-deletion-jobs`` by exactly one
  identifier (email, else phone, else the profile id), as the API requires.
- reconciliation: ``GET /api/lists/{id}/profiles`` page by page.

Retries (429 with ``Retry-After``, 5xx) are the dispatcher's; every call is
idempotent, so a batch is sent again whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from features.contacts import Contact
from serving.destinations.config import KlaviyoDestination
from serving.destinations.http import Refused, call
from serving.destinations.sync import Lookup, Member, Person, chunks, keys_of, net

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
        self._imported: dict[str, tuple[str, str]] = {}  # by profile: the digest of what was imported, Klaviyo's id

    async def _call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = self.headers if body is None else {**self.headers, "content-type": JSONAPI}
        url, timeout = self.base + path, self.destination.timeout_s
        return await call(self.client, method, url, timeout, headers=headers, json=body, **kwargs)

    async def _import(self, profile_id: str, contact: Contact | None) -> str:
        """Klaviyo's id of a user's profile, created or updated first (again only when the contact changed)."""
        attributes = profile_attributes(profile_id, contact)
        digest = hashlib.sha256(repr(sorted(attributes.items())).encode()).hexdigest()
        known = self._imported.get(profile_id)
        if known is not None and known[0] == digest:
            return known[1]
        r = await self._call("POST", "/api/profile-import", {"data": {"type": "profile", "attributes": attributes}})
        found = str(r.json()["data"]["id"])
        if len(self._imported) >= KNOWN_IDS:
            self._imported.clear()
        self._imported[profile_id] = (digest, found)
        return found

    async def _existing(self, profile_id: str) -> str | None:
        """Klaviyo's id of the profile with this external id, creating none (None: it has none)."""
        known = self._imported.get(profile_id)
        if known is not None:
            return known[1]
        quoted = profile_id.replace("\\", "\\\\").replace('"', '\\"')
        params = {"filter": f'equals(external_id,"{quoted}")'}
        found = (await self._call("GET", "/api/profiles", params=params)).json()["data"]
        return str(found[0]["id"]) if found else None

    async def _ids(self, enters: Sequence[str], exits: Sequence[str], contacts: Mapping[str, Contact]
                   ) -> tuple[dict[str, str], dict[str, str]]:  # fmt: skip
        """Klaviyo ids: an entering user's profile imported (a refused one is left
        out, with why), a leaving one's looked up (none: nothing to remove)."""
        ids: dict[str, str] = {}
        refused: dict[str, str] = {}
        for user in sorted(enters):
            try:
                ids[user] = await self._import(user, contacts.get(user))
            except Refused as exc:
                refused[user] = f"Klaviyo refused the profile: {exc}"
        for user in sorted(set(exits) - ids.keys() - refused.keys()):
            if (found := await self._existing(user)) is not None:
                ids[user] = found
        return ids, refused

    async def send(self, deliveries: Sequence[dict[str, Any]]) -> Mapping[str, str]:
        d = self.destination
        last = net(deliveries)
        enters = {u for (u, _), c in last.items() if c["kind"] == "enter"}
        triggers = [c for c in deliveries if c["kind"] == "enter" and c["segment"] in d.events]
        contacts = self.contacts(enters | {c["user"] for c in triggers})
        ids, refused = await self._ids(sorted(enters), [u for (u, _), c in last.items() if c["kind"] == "exit"],
                                       contacts)  # fmt: skip
        groups: dict[tuple[str, str], list[str]] = {}
        for (user, segment), change in last.items():
            if user in ids:
                groups.setdefault((d.lists[segment], change["kind"]), []).append(ids[user])
        for (list_id, kind), profiles in sorted(groups.items()):
            await self._relate("POST" if kind == "enter" else "DELETE", list_id, profiles)
        for change in triggers:  # every enter triggers, even one its exit follows in the batch
            user = change["user"]
            if user not in refused:
                body = event_body(change, d.metric, profile_attributes(user, contacts.get(user)))
                await self._call("POST", "/api/events", body)
        return {key: why for user, why in refused.items() for key in keys_of(deliveries, {user})}

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
        ids, refused = await self._ids(profile_ids, [], self.contacts(profile_ids))
        if ids:
            await self._relate("POST", self.destination.lists[segment], list(ids.values()))
        return refused

    async def remove(self, segment: str, members: Sequence[Member]) -> None:
        await self._relate("DELETE", self.destination.lists[segment], [m.remote_id for m in members])

    # -- erasure -------------------------------------------------------------------

    async def delete(self, person: Person) -> str:
        """Ask Klaviyo to delete the person, by one identifier as its API requires:
        the email the vault had, else the phone, else the profile its external id
        finds (none: nothing to delete)."""
        contact = person.contact
        profile: dict[str, Any] = {"type": "profile", "attributes": {}}
        if contact is not None and contact.email:
            profile["attributes"] = {"email": contact.email}
        elif contact is not None and contact.phone:
            profile["attributes"] = {"phone_number": contact.phone}
        else:
            found = await self._existing(person.profile_id)
            if found is None:
                return "no such profile in Klaviyo"
            profile["id"] = found
        body = {"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": profile}}}}
        await self._call("POST", "/api/data-privacy-deletion-jobs", body)
        self._imported.pop(person.profile_id, None)
        return "deletion requested"
