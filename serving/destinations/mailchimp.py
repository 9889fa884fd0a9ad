"""Mailchimp: a segment is a tag on the members of one audience.

Requests follow the Marketing API 3.0 (HTTP basic auth with the API key,
its data center in the host):

- enter and exit: ``POST /lists/{audience}/members/{subscriber_hash}/tags``
  with ``{"tags": [{"name": tag, "status": "active" | "inactive"}]}``, one
  call per member for all their changes in a batch (204). The member id is
  the MD5 of the lower-cased email (from the vault, which keeps at least
  that hash). A user with no known address, or not a member of the
  audience (404), or whose tags Mailchimp refuses (another 4xx), is *skipped*
  with that reason: segflow never adds
  members, which would be a consent decision.
- at most :data:`~serving.destinations.config.MAILCHIMP_CONNECTIONS`
  requests at once per destination, as Mailchimp allows.
- erasure: ``POST /lists/{audience}/members/{hash}/actions/delete-permanent``.
- reconciliation: ``GET /lists/{audience}/tag-search`` finds the tag's id,
  ``GET /lists/{audience}/segments/{id}/members`` pages through its members,
  whatever their status (unsubscribed and cleaned ones included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from serving.destinations.config import MAILCHIMP_CONNECTIONS, MailchimpDestination
from serving.destinations.http import Refused, Retryable, call
from serving.destinations.sync import Lookup, Member, Person, keys_of, net

PAGE_SIZE = 1000
EVERY_STATUS = {"include_cleaned": "true", "include_transactional": "true", "include_unsubscribed": "true"}
NO_ADDRESS = "no email address known for the user (no identify with an email)"
NOT_A_MEMBER = "not a member of the audience"


class Mailchimp:
    def __init__(
        self,
        destination: MailchimpDestination,
        client: httpx.AsyncClient,
        contacts: Lookup,
        connections: asyncio.Semaphore | None = None,
    ) -> None:
        """``connections``: shared by every destination of one Mailchimp account (its limit is the account's)."""
        self.destination = destination
        self.client = client
        self.contacts = contacts
        self.base = f"{destination.base_url()}/lists/{destination.audience}"
        self.auth = httpx.BasicAuth("segflow", destination.key())
        self._connections = connections or asyncio.Semaphore(MAILCHIMP_CONNECTIONS)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with self._connections:
            return await call(
                self.client, method, self.base + path, self.destination.timeout_s, auth=self.auth, **kwargs
            )

    async def _tag(self, member: str, tags: list[dict[str, str]]) -> str | None:
        """Set a member's tags; why not, when Mailchimp has no such member or refuses this one."""
        body = {"tags": tags, "is_syncing": self.destination.is_syncing}
        try:
            r = await self._call("POST", f"/members/{member}/tags", json=body, ok=(404,))
        except Refused as exc:
            return f"Mailchimp refused the member's tags: {exc}"
        return NOT_A_MEMBER if r.status_code == 404 else None

    async def _tag_all(self, changes: Sequence[tuple[str, list[dict[str, str]]]]) -> list[str | None]:
        """Tags for several members at once (within the account's connections). A failure
        that may pass cancels the rest, and is raised as it came: the batch is retried whole."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._tag(member, tags)) for member, tags in changes]
        except* Retryable as failed:
            raise failed.exceptions[0] from None
        return [t.result() for t in tasks]

    async def send(self, deliveries: Sequence[dict[str, Any]]) -> Mapping[str, str]:
        d = self.destination
        by_user: dict[str, list[dict[str, str]]] = {}
        for (user, segment), change in net(deliveries).items():
            status = "active" if change["kind"] == "enter" else "inactive"
            by_user.setdefault(user, []).append({"name": d.tag(segment), "status": status})
        contacts = self.contacts(by_user)
        skipped: dict[str, str] = {}
        no_address = {u for u in by_user if (c := contacts.get(u)) is None or not c.email_md5}
        skipped |= dict.fromkeys(keys_of(deliveries, no_address), NO_ADDRESS)
        users = [u for u in by_user if u not in no_address]
        outcomes = await self._tag_all([(contacts[u].email_md5 or "", by_user[u]) for u in users])
        for user, why in zip(users, outcomes, strict=True):
            if why is not None:
                skipped |= dict.fromkeys(keys_of(deliveries, {user}), why)
        return skipped

    # -- reconciliation ------------------------------------------------------------

    async def _tag_id(self, segment: str) -> int | None:
        name = self.destination.tag(segment)
        found = (await self._call("GET", "/tag-search", params={"name": name})).json().get("tags", [])
        return next((int(t["id"]) for t in found if t["name"] == name), None)

    async def members(self, segment: str) -> list[Member]:
        """The tag's members, every page (their subscriber hashes; segflow's ids are matched by the caller)."""
        tag = await self._tag_id(segment)
        if tag is None:
            return []
        found: list[Member] = []
        while True:
            params = {"count": PAGE_SIZE, "offset": len(found), "fields": "members.id,total_items", **EVERY_STATUS}
            page = (await self._call("GET", f"/segments/{tag}/members", params=params)).json()
            found += [Member(str(m["id"]), None) for m in page["members"]]
            if not page["members"] or len(found) >= int(page["total_items"]):
                return found

    async def add(self, segment: str, profile_ids: Sequence[str]) -> Mapping[str, str]:
        contacts = self.contacts(profile_ids)
        tag = [{"name": self.destination.tag(segment), "status": "active"}]
        skipped: dict[str, str] = {}
        known = [p for p in profile_ids if (c := contacts.get(p)) is not None and c.email_md5]
        skipped |= dict.fromkeys((p for p in profile_ids if p not in set(known)), NO_ADDRESS)
        outcomes = await self._tag_all([(contacts[p].email_md5 or "", tag) for p in known])
        skipped |= {p: why for p, why in zip(known, outcomes, strict=True) if why is not None}
        return skipped

    async def remove(self, segment: str, members: Sequence[Member]) -> None:
        tag = [{"name": self.destination.tag(segment), "status": "inactive"}]
        await self._tag_all([(m.remote_id, tag) for m in members])

    # -- erasure -------------------------------------------------------------------

    async def delete(self, person: Person) -> str:
        md5 = person.contact.email_md5 if person.contact is not None else None
        if not md5:
            return NO_ADDRESS
        r = await self._call("POST", f"/members/{md5}/actions/delete-permanent", ok=(404,))
        return NOT_A_MEMBER if r.status_code == 404 else "deleted permanently"
