"""The adapters speak the platforms' public APIs, and the emulators are
faithful: every request segflow's Klaviyo and Mailchimp adapters make is
made again through the official Python SDK (``klaviyo-api``,
``mailchimp-marketing``) against a second emulator fed alike; the SDK takes
the same body (its models validate it), and both requests have the same
method, path, query, auth scheme, headers and body shape, and are accepted."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import mailchimp_marketing
import pytest
from klaviyo_api import KlaviyoAPI

from features.contacts import Contact, subscriber_hash
from serving.destinations.config import Destinations
from serving.destinations.http import Retryable
from serving.destinations.klaviyo import Klaviyo
from serving.destinations.mailchimp import Mailchimp
from serving.destinations.sync import Member, Person
from tests.emulators import Emulator, KlaviyoEmulator, MailchimpEmulator, Recorded

KEY, MC_KEY = "pk_" + "f" * 30, "c" * 32 + "-us6"
CONTACTS = {
    "u1": Contact("Ann@Example.com", "+15550100001", subscriber_hash("Ann@Example.com")),
    "u2": Contact(None, None, subscriber_hash("bo@example.com")),  # the vault off: only the hash
    "u3": None,
}


def shape(value: Any) -> Any:
    """A JSON value's structure: keys and value types, list items by their first."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def delivery(user: str, segment: str, kind: str, key: str) -> dict[str, Any]:
    return {"key": key, "user": user, "segment": segment, "kind": kind, "at": "2026-05-01T10:00:00.000Z",
            "reason": {"config_id": "c1", "rule": "count(add_to_cart, 1h) >= 1", "clauses": []},
            "scores": {"intent": 0.7}, "cluster": None, "fields": {"cart": {"items": [], "value": 0.0}}}  # fmt: skip


def lookup(ids: Any) -> dict[str, Contact]:
    return {u: c for u in ids if (c := CONTACTS.get(u)) is not None}


def same_request(ours: Recorded, sdk: Recorded, headers: tuple[str, ...]) -> None:
    where = f"{ours.method} {ours.path}"
    assert (sdk.method, sdk.path) == (ours.method, ours.path), where
    lowered = {k: [v.lower() for v in vs] for k, vs in sdk.query.items()}  # the Mailchimp SDK writes True for true
    assert lowered == {k: [v.lower() for v in vs] for k, vs in ours.query.items()}, where
    for h in headers:
        assert sdk.headers.get(h) == ours.headers.get(h), (where, h)
    assert shape(sdk.body) == shape(ours.body), where
    assert 200 <= ours.status < 300 and 200 <= sdk.status < 300, (where, ours.status, sdk.status)


def replay_with(sdk_calls: dict[tuple[str, str], Callable[[Recorded], Any]], ours: list[Recorded],
                twin: Emulator) -> list[Recorded]:  # fmt: skip
    """Each of our requests again through the SDK, against the twin emulator; the twin's record."""
    for r in ours:
        kind = next(k for k in sdk_calls if r.method == k[0] and k[1] in r.path)
        sdk_calls[kind](r)
    return twin.requests


def test_klaviyo_requests_match_the_official_sdk() -> None:
    d = Destinations.loads(
        f"destinations:\n  - {{name: k, kind: klaviyo, api_key: {KEY}, lists: {{vip: L1, carts: L2}}, events: [vip]}}"
    ).destinations[0]
    with KlaviyoEmulator(KEY, ["L1", "L2"]) as ours, KlaviyoEmulator(KEY, ["L1", "L2"]) as twin:

        async def drive() -> None:
            async with httpx.AsyncClient() as client:
                k = Klaviyo(d.model_copy(update={"url": ours.url}), client, lookup)  # type: ignore[arg-type]
                await k.send([delivery("u1", "vip", "enter", "k1"), delivery("u2", "carts", "enter", "k2"),
                              delivery("u3", "vip", "enter", "k3")])  # fmt: skip
                await k.send([delivery("u2", "carts", "exit", "k4")])
                listed = await k.members("vip")
                assert {m.profile_id for m in listed} == {"u1", "u3"}
                await k.remove("vip", [m for m in listed if m.profile_id == "u3"])
                await k.add("carts", ["u3"])
                assert await k.delete(Person("u1", CONTACTS["u1"])) == "deletion requested"
                assert await k.delete(Person("u3", None)) == "deletion requested"  # found by external id
                assert await k.delete(Person("nobody", None)) == "no such profile in Klaviyo"

        asyncio.run(drive())
        api = KlaviyoAPI(KEY, test_host=twin.url, max_retries=0)
        sdk = {
            ("POST", "/api/profile-import"): lambda r: api.Profiles.create_or_update_profile(r.body),
            ("POST", "/relationships/profiles"): lambda r: api.Lists.add_profiles_to_list(r.path.split("/")[3], r.body),
            ("DELETE", "/relationships/profiles"): lambda r: api.Lists.remove_profiles_from_list(
                r.path.split("/")[3], r.body
            ),
            ("POST", "/api/events"): lambda r: api.Events.create_event(r.body),
            ("GET", "/profiles"): lambda r: (
                api.Lists.get_profiles_for_list(
                    r.path.split("/")[3],
                    fields_profile=r.query["fields[profile]"],
                    page_size=int(r.query["page[size]"][0]),
                )
                if r.path.startswith("/api/lists/")
                else api.Profiles.get_profiles(filter=r.query["filter"][0])
            ),
            ("POST", "/api/data-privacy-deletion-jobs"): lambda r: api.Data_Privacy.request_profile_deletion(r.body),
        }
        theirs = replay_with(sdk, ours.requests, twin)
        assert len(theirs) == len(ours.requests) >= 12
        for a, b in zip(ours.requests, theirs, strict=True):
            same_request(a, b, ("authorization", "revision", "content-type", "accept"))
        assert ours.requests[0].headers["revision"] == "2026-10-15" == KlaviyoAPI._REVISION
        assert not [r for r in ours.requests if "subscri" in r.path]  # never the consent-changing endpoints
        assert ours.lists == twin.lists and ours.events == twin.events


def test_mailchimp_requests_match_the_official_sdk() -> None:
    d = Destinations.loads(
        f"destinations:\n  - {{name: m, kind: mailchimp, api_key: {MC_KEY}, audience: a1, tags: {{vip: VIP}}}}"
    ).destinations[0]
    with MailchimpEmulator(MC_KEY, "a1") as ours, MailchimpEmulator(MC_KEY, "a1") as twin:
        for e in (ours, twin):
            e.subscribe("ann@example.com")
            e.subscribe("bo@example.com")

        async def drive() -> dict[str, str]:
            async with httpx.AsyncClient() as client:
                m = Mailchimp(d.model_copy(update={"url": ours.url + "/3.0"}), client, lookup)  # type: ignore[arg-type]
                skipped = await m.send([delivery("u1", "vip", "enter", "k1"), delivery("u2", "vip", "enter", "k2"),
                                        delivery("u3", "vip", "enter", "k3")])  # fmt: skip
                listed = await m.members("vip")
                assert {x.remote_id for x in listed} == {subscriber_hash("ann@example.com"), CONTACTS["u2"].email_md5}
                await m.remove("vip", [Member(subscriber_hash("bo@example.com"), None)])
                await m.send([delivery("u1", "vip", "exit", "k4")])
                assert await m.delete(Person("u1", CONTACTS["u1"])) == "deleted permanently"
                return dict(skipped)

        skipped = asyncio.run(drive())
        assert skipped == {"k3": "no email address known for the user (no identify with an email)"}
        client = mailchimp_marketing.Client()
        client.set_config({"api_key": MC_KEY, "server": "us6"})
        client.api_client.host = twin.url + "/3.0"
        sdk = {
            ("POST", "/tags"): lambda r: client.lists.update_list_member_tags("a1", r.path.split("/")[5], r.body),
            ("GET", "/tag-search"): lambda r: client.lists.tag_search("a1", name=r.query["name"][0]),
            ("GET", "/members"): lambda r: client.lists.get_segment_members_list(
                "a1",
                r.path.split("/")[5],
                count=int(r.query["count"][0]),
                offset=int(r.query["offset"][0]),
                fields=r.query["fields"][0].split(","),
                include_cleaned=True,
                include_transactional=True,
                include_unsubscribed=True,
            ),
            ("POST", "/delete-permanent"): lambda r: client.lists.delete_list_member_permanent(
                "a1", r.path.split("/")[5]
            ),
        }
        theirs = replay_with(sdk, ours.requests, twin)
        assert len(theirs) == len(ours.requests) >= 6
        for a, b in zip(ours.requests, theirs, strict=True):
            same_request(a, b, ())
            for r in (a, b):  # HTTP basic auth, the API key as the password
                scheme, _, token = r.headers["authorization"].partition(" ")
                assert scheme == "Basic" and base64.b64decode(token).decode().endswith(":" + MC_KEY)
        tagged = {r.path.split("/")[5] for r in ours.requests if r.path.endswith("/tags")}
        assert subscriber_hash("ann@example.com") in tagged  # MD5 of the lower-cased address ("Ann@Example.com")
        assert ours.members.keys() == twin.members.keys() and ours.deleted == twin.deleted


@pytest.mark.parametrize("status", [401, 404])
def test_the_emulators_answer_errors_in_each_platform_s_shape(status: int) -> None:
    with KlaviyoEmulator(KEY, ["L1"]) as k, MailchimpEmulator(MC_KEY, "a1") as m:
        auth = "Klaviyo-API-Key wrong" if status == 401 else f"Klaviyo-API-Key {KEY}"
        r = httpx.post(k.url + "/api/lists/NOPE/relationships/profiles", headers={
            "authorization": auth, "revision": "2026-10-15", "content-type": "application/vnd.api+json",
        }, json={"data": [{"type": "profile", "id": "x"}]})  # fmt: skip
        assert r.status_code == status
        assert set(r.json()["errors"][0]) == {"id", "status", "code", "title", "detail", "source"}
        member = m.url + "/3.0/lists/a1/members/" + "0" * 32 + "/tags"
        password = MC_KEY if status == 404 else "no"
        r = httpx.post(member, auth=("x", password), json={"tags": [{"name": "t", "status": "active"}]})
        assert r.status_code == status and r.headers["content-type"] == "application/problem+json"
        assert set(r.json()) == {"type", "title", "status", "detail", "instance"}


def test_a_refused_member_is_skipped_naming_the_call_but_not_the_member() -> None:
    d = Destinations.loads(f"destinations:\n  - {{name: m, kind: mailchimp, api_key: {MC_KEY}, audience: a1}}")
    with MailchimpEmulator(MC_KEY, "a1") as m:
        m.subscribe("ann@example.com")
        m.subscribe("bo@example.com")
        m.fail("POST /3.0/lists/a1/members/" + subscriber_hash("ann@example.com"), [400])

        async def drive() -> dict[str, str]:
            async with httpx.AsyncClient() as client:
                destination = d.destinations[0].model_copy(update={"url": m.url + "/3.0"})
                adapter = Mailchimp(destination, client, lookup)  # type: ignore[arg-type]
                batch = [delivery("u1", "vip", "enter", "k1"), delivery("u2", "vip", "enter", "k2")]
                return dict(await adapter.send(batch))

        skipped = asyncio.run(drive())
        assert m.tagged("vip") == {"bo@example.com"}  # the rest of the batch went on
    assert list(skipped) == ["k1"]
    assert skipped["k1"].startswith(
        "Mailchimp refused the member's tags: POST /3.0/lists/a1/members/{member}/tags: HTTP 400"
    )
    assert subscriber_hash("ann@example.com") not in skipped["k1"]


def test_a_failure_that_may_pass_fails_the_whole_batch_for_a_retry() -> None:
    d = Destinations.loads(f"destinations:\n  - {{name: m, kind: mailchimp, api_key: {MC_KEY}, audience: a1}}")
    with MailchimpEmulator(MC_KEY, "a1") as m:
        m.subscribe("ann@example.com")
        m.fail("POST /3.0/lists/a1/members/", [503], retry_after=3)

        async def drive() -> None:
            async with httpx.AsyncClient() as client:
                destination = d.destinations[0].model_copy(update={"url": m.url + "/3.0"})
                adapter = Mailchimp(destination, client, lookup)  # type: ignore[arg-type]
                with pytest.raises(Retryable) as failed:
                    await adapter.send([delivery("u1", "vip", "enter", "k1")])
                assert failed.value.retry_after == 3.0

        asyncio.run(drive())


def test_the_emulators_refuse_a_field_the_api_does_not_define() -> None:
    with KlaviyoEmulator(KEY, ["L1"]) as k, MailchimpEmulator(MC_KEY, "a1") as m:
        headers = {"authorization": f"Klaviyo-API-Key {KEY}", "revision": "2026-10-15",
                   "content-type": "application/vnd.api+json"}  # fmt: skip
        body = {"data": {"type": "profile", "attributes": {"external_id": "u1", "emial": "a@b.io"}}}
        r = httpx.post(k.url + "/api/profile-import", headers=headers, json=body)
        assert r.status_code == 400 and "['emial']" in r.json()["errors"][0]["detail"]
        member = m.url + "/3.0/lists/a1/members/" + m.subscribe("a@b.io") + "/tags"
        r = httpx.post(member, auth=("x", MC_KEY), json={"tags": [{"name": "t", "status": "active", "color": "red"}]})
        assert r.status_code == 400 and "['color']" in r.json()["detail"]
