"""Klaviyo and Mailchimp, end to end: a real server replays a synthetic day
and delivers to local emulators of both APIs (real HTTP servers). The lists
and tags end holding exactly segflow's members who may get email; each
enter of a triggering segment creates one Klaviyo event; unsubscribed and
suppressed people get nothing; drift behind segflow's back is reconciled;
an erasure leaves no delivery, no vault row, and a deletion request at each
platform; no raw email lands anywhere but the vault (sealed) and the admin
export."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from cli.main import app as app_cli
from features.contacts import subscriber_hash
from features.events import format_ms, to_payload
from features.table import table_to_events
from serving.app import create_app
from serving.server import ServerThread
from serving.settings import Settings
from tests.emulators import KlaviyoEmulator, MailchimpEmulator
from tests.test_destinations_delivery import RULES  # carted_1h, viewed_30m
from training.synthetic import DEFAULT_START, generate

ADMIN, READ = ("platforms-admin", ""), ("platforms-read", "")
KLAVIYO_KEY, MAILCHIMP_KEY = "pk_" + "k" * 30, "m" * 32 + "-us6"
LISTS = {"carted_1h": "LCart1", "viewed_30m": "LView1"}
TAGS = {"carted_1h": "Carted in the last hour", "viewed_30m": "Browsing now"}


def destinations(klaviyo: str, mailchimp: str) -> str:
    return f"""
destinations:
  - name: klaviyo
    kind: klaviyo
    url: {klaviyo}
    api_key: {KLAVIYO_KEY}
    lists: {orjson.dumps(LISTS).decode()}
    events: [carted_1h]
    fields: [cart, intent_band]
    batch_size: 200
    backoff_initial_s: 0.1
    backoff_max_s: 1
  - name: mailchimp
    kind: mailchimp
    url: {mailchimp}/3.0
    api_key: {MAILCHIMP_KEY}
    audience: aud1
    tags: {orjson.dumps(TAGS).decode()}
    concurrency: 10
    backoff_initial_s: 0.1
    backoff_max_s: 1
"""


def email(user: str) -> str:
    return f"{user.upper()}.Shopper@Example.com"  # mixed case: Mailchimp hashes it lower-cased


@dataclass
class Shop:
    """A running segflow with both emulators, and the people in the replayed day."""

    http: httpx.Client
    url: str
    klaviyo: KlaviyoEmulator
    mailchimp: MailchimpEmulator
    state: Path
    users: list[str]
    unsubscribed: set[str]  # by an Email Unsubscribed event, before anything else
    listed: set[str]  # on the suppression list (by email address)
    events: list[Any]

    @property
    def busiest(self) -> int:
        """Where to cut the day so that the most people are browsing (viewed in the last 30 minutes)."""

        def browsing(i: int) -> int:
            t = self.events[i - 1].ts_ms
            return len({e.profile_id for e in self.events[:i] if e.type == "product_view" and e.ts_ms > t - 1_800_000})

        return max(range(len(self.events) // 10, len(self.events), len(self.events) // 20), key=browsing)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    with (
        KlaviyoEmulator(KLAVIYO_KEY, lists=list(LISTS.values())) as klaviyo,
        MailchimpEmulator(MAILCHIMP_KEY, "aud1") as mailchimp,
    ):
        (tmp_path / "segments.yaml").write_text(RULES)
        (tmp_path / "destinations.yaml").write_text(destinations(klaviyo.url, mailchimp.url))
        settings = Settings(
            state_dir=tmp_path / "state", clock="event", segments=tmp_path / "segments.yaml",
            destinations=tmp_path / "destinations.yaml", admin_keys=[SecretStr(ADMIN[0])],
            read_keys=[SecretStr(READ[0])], vault_key_file=tmp_path / "vault.key",
        )  # fmt: skip
        day = generate(120, 1, 5, start=DEFAULT_START + timedelta(days=3))
        events = sorted(table_to_events(day.events), key=lambda e: e.ts_ms)
        users = sorted({e.profile_id for e in events})
        unsubscribed, listed = set(users[::9]), set(users[4::11]) - set(users[::9])
        for u in users:
            if u not in unsubscribed and u != users[1]:  # users[1] is not in the audience
                mailchimp.subscribe(email(u))
        with ServerThread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
            yield Shop(http, url, klaviyo, mailchimp, tmp_path / "state", users, unsubscribed, listed, events)


def post(http: httpx.Client, payloads: list[dict[str, Any]]) -> None:
    for i in range(0, len(payloads), 500):
        r = http.post("/v1/batch", json={"batch": payloads[i : i + 500]}, auth=ADMIN)
        assert r.status_code == 200, r.text


def members(http: httpx.Client, segment: str) -> set[str]:
    return set(http.get(f"/v1/segments/{segment}/members", params={"limit": 1000}, auth=READ).json()["members"])


def settled(http: httpx.Client) -> bool:
    status = http.get("/v1/admin/destinations", auth=ADMIN).json()["destinations"]
    return all(d["counts"]["pending"] == 0 and d["cursor"] >= d["outbox_last"] for d in status)


def wait_for(check: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def start_day(shop: Shop) -> None:
    """Identify everybody (with an email), unsubscribe some, suppress others by address."""
    t0 = format_ms(shop.events[0].ts_ms - 60_000)
    identifies = [
        {"type": "identify", "userId": u, "messageId": f"id-{u}", "timestamp": t0,
         "traits": {"email": email(u), "phone": "+1 555 010 " + str(1000 + i)}}
        for i, u in enumerate(shop.users)
    ]  # fmt: skip
    unsubscribes = [
        {"type": "track", "event": "Email Unsubscribed", "userId": u, "messageId": f"un-{u}", "timestamp": t0}
        for u in sorted(shop.unsubscribed)
    ]
    post(shop.http, identifies + unsubscribes)
    body = {"add": [email(u).lower() for u in sorted(shop.listed)], "reason": "bounced"}
    r = shop.http.post("/v1/admin/suppressions", json=body, auth=ADMIN)
    assert r.status_code == 200 and r.json()["added"] == len(shop.listed), r.text


def mirrored(shop: Shop, segment: str) -> None:
    """The platforms hold exactly segflow's members of a segment who may get email."""
    may = members(shop.http, segment) - shop.unsubscribed - shop.listed
    assert shop.klaviyo.members(LISTS[segment]) == may
    in_audience = {u for u in may if u != shop.users[1]}
    assert shop.mailchimp.tagged(TAGS[segment]) == {email(u) for u in in_audience}


def test_a_replayed_day_ends_with_lists_and_tags_mirroring_consenting_members(shop: Shop) -> None:
    start_day(shop)
    half = shop.busiest
    post(shop.http, [to_payload(e) for e in shop.events[:half]])
    wait_for(lambda: settled(shop.http))
    assert members(shop.http, "viewed_30m"), "the day has somebody browsing at its middle"
    for segment in LISTS:
        mirrored(shop, segment)
    post(shop.http, [to_payload(e) for e in shop.events[half:]])
    end = shop.events[-1].ts_ms
    r = shop.http.post("/v1/admin/advance", params={"to_ms": end - 20 * 60_000}, auth=ADMIN)
    assert r.status_code == 200
    wait_for(lambda: settled(shop.http))
    for segment in LISTS:
        mirrored(shop, segment)

    # one Klaviyo event for each enter of the triggering segment, by a user who may get email
    enters = [
        t for t in _transitions(shop.http)
        if t["segment"] == "carted_1h" and t["kind"] == "enter" and t["user"] not in shop.unsubscribed | shop.listed
    ]  # fmt: skip
    assert enters
    got = [e for e in shop.klaviyo.events if e["metric"] == "Entered segment carted_1h"]
    assert sorted(e["unique_id"] for e in got) == sorted(t["key"] for t in enters)
    assert all(e["properties"]["segment"] == "carted_1h" and "cart" in e["properties"] for e in got)

    # the unsubscribed and the suppressed: nothing of them ever reached a platform
    barred = shop.unsubscribed | shop.listed
    for r in shop.klaviyo.requests:
        text = orjson.dumps(r.body).decode()
        assert not any(f'"{u}"' in text for u in barred), (r.method, r.path)
    hashes = {subscriber_hash(email(u)) for u in barred}
    assert not any(h in r.path for r in shop.mailchimp.requests for h in hashes)
    status = {d["name"]: d for d in shop.http.get("/v1/admin/destinations", auth=ADMIN).json()["destinations"]}
    assert status["klaviyo"]["counts"]["suppressed"] > 0 and status["klaviyo"]["counts"]["dead"] == 0
    metrics = shop.http.get("/metrics", auth=READ).text
    n = status["klaviyo"]["counts"]["suppressed"]
    assert f'segflow_destination_suppressed_total{{destination="klaviyo"}} {n}.0' in metrics
    suppressed = shop.http.get(
        "/v1/admin/destinations/klaviyo/deliveries", params={"status": "suppressed", "limit": 1000}, auth=ADMIN
    ).json()["deliveries"]
    assert {d["profile_id"] for d in suppressed} <= barred
    assert {d["reason"] for d in suppressed} >= {"list: bounced"}
    assert any(d["reason"].startswith("unsubscribed: Email Unsubscribed") for d in suppressed)

    # the member outside the audience is skipped by Mailchimp, with the reason
    skipped = shop.http.get(
        "/v1/admin/destinations/mailchimp/deliveries", params={"status": "skipped", "limit": 1000}, auth=ADMIN
    ).json()["deliveries"]
    assert {d["profile_id"] for d in skipped} <= {shop.users[1]}  # (a batch may net their changes to nothing)
    assert all(d["reason"] == "not a member of the audience" for d in skipped)
    assert shop.mailchimp.max_in_flight <= 10

    _no_raw_email(shop)


def _transitions(http: httpx.Client) -> list[dict[str, Any]]:
    out, after = [], 0
    while page := http.get("/v1/transitions", params={"after": after, "limit": 1000}, auth=READ).json()["transitions"]:
        out += page
        after = page[-1]["cursor"]
    return out


def _no_raw_email(shop: Shop) -> None:
    """No raw address in the state's files (the vault's rows are ciphertext) or in any answer but the export."""
    addresses = [email(u).encode() for u in shop.users] + [email(u).lower().encode() for u in shop.users]
    for path in shop.state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(a in data for a in addresses), path
    with sqlite3.connect(shop.state / "vault.db") as db:
        rows = db.execute("SELECT profile_id, sealed FROM contacts").fetchall()
    assert len(rows) == len(shop.users) and all(b"email" not in bytes(sealed) for _, sealed in rows)
    u = shop.users[2]
    for path in (f"/v1/profiles/{u}", "/v1/transitions", "/v1/admin/destinations", "/v1/segments/carted_1h/members"):
        assert b"Example.com" not in shop.http.get(path, auth=ADMIN).content, path
    export = shop.http.get(f"/v1/profiles/{u}/export", auth=ADMIN)
    assert export.status_code == 200 and export.json()["contact"]["email"] == email(u)
    assert export.json()["events"] and all(b"Example.com" not in orjson.dumps(e) for e in export.json()["events"])
    assert shop.http.get(f"/v1/profiles/{u}/export", auth=READ).status_code == 403


def test_reconcile_repairs_drift_both_ways_and_a_dry_run_changes_nothing(shop: Shop) -> None:
    start_day(shop)
    post(shop.http, [to_payload(e) for e in shop.events[: shop.busiest]])
    wait_for(lambda: settled(shop.http))
    browsing = sorted(members(shop.http, "viewed_30m") - shop.unsubscribed - shop.listed - {shop.users[1]})
    assert len(browsing) >= 2
    browsing_now = members(shop.http, "viewed_30m")
    stranger = next(u for u in shop.users if u not in browsing_now | shop.unsubscribed and u != shop.users[1])
    shop.klaviyo.drift(LISTS["viewed_30m"], add=["someone-else", stranger], remove=browsing[:2])
    shop.mailchimp.drift(TAGS["viewed_30m"], add=[email(stranger)], remove=[email(browsing[0])])
    shop.mailchimp.subscribe("gone@example.com", status="unsubscribed")  # listed only with include_unsubscribed
    shop.mailchimp.drift(TAGS["viewed_30m"], add=["gone@example.com"])

    runner = CliRunner()
    dry = runner.invoke(app_cli, ["destinations", "reconcile", "klaviyo", "--dry-run", "--url", shop.url,
                                  "--key", ADMIN[0]])  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "viewed_30m" in dry.output and "would add 2, would remove 2" in dry.output
    assert "someone-else" in shop.klaviyo.members(LISTS["viewed_30m"])  # untouched

    for name in ("klaviyo", "mailchimp"):
        done = runner.invoke(app_cli, ["destinations", "reconcile", name, "--url", shop.url, "--key", ADMIN[0]])
        assert done.exit_code == 0, done.output
    for segment in LISTS:
        mirrored(shop, segment)
    again = runner.invoke(app_cli, ["destinations", "reconcile", "klaviyo", "--url", shop.url, "--key", ADMIN[0]])
    assert "added 0, removed 0" in again.output


def test_erasure_leaves_no_delivery_no_vault_row_and_asks_each_platform_to_delete(shop: Shop) -> None:
    start_day(shop)
    post(shop.http, [to_payload(e) for e in shop.events[: shop.busiest]])
    wait_for(lambda: settled(shop.http))
    gone = sorted(members(shop.http, "viewed_30m") - shop.unsubscribed - shop.listed - {shop.users[1]})[0]
    assert gone in shop.klaviyo.members(LISTS["viewed_30m"])
    shop.klaviyo.fail("POST /api/data-privacy-deletion-jobs", [429], retry_after=0.2)  # retried

    assert shop.http.delete(f"/v1/profiles/{gone}", auth=ADMIN).json()["erased"] is True
    wait_for(lambda: shop.klaviyo.deletions and shop.mailchimp.deleted)
    assert subscriber_hash(email(gone)) in shop.mailchimp.deleted
    assert gone not in shop.klaviyo.members(LISTS["viewed_30m"])
    assert [d["by"] for d in shop.klaviyo.deletions] == [["email"]]  # exactly one identifier
    with sqlite3.connect(shop.state / "vault.db") as db:
        assert db.execute("SELECT count(*) FROM contacts WHERE profile_id = ?", (gone,)).fetchone()[0] == 0
        wait_for(lambda: _sealed_left(shop.state, gone) == 0)
        statuses = db.execute("SELECT destination, status FROM deletion_requests WHERE profile_id = ?", (gone,))
        assert sorted(statuses) == [("klaviyo", "sent"), ("mailchimp", "sent")]
    with sqlite3.connect(shop.state / "events.db") as db:
        assert db.execute("SELECT count(*) FROM deliveries WHERE profile_id = ?", (gone,)).fetchone()[0] == 0
    export = shop.http.get(f"/v1/profiles/{gone}/export", auth=ADMIN).json()
    assert export["contact"] is None and export["events"] == [] and len(export["deletion_requests"]) == 2

    # later events of the erased user: accepted, dropped, never delivered
    klaviyo_before, mailchimp_before = len(shop.klaviyo.requests), len(shop.mailchimp.requests)
    later_events = [to_payload(e) for e in shop.events[shop.busiest :] if e.profile_id == gone]
    assert later_events
    post(shop.http, later_events)
    post(shop.http, [to_payload(e) for e in shop.events[shop.busiest :] if e.profile_id != gone])
    wait_for(lambda: settled(shop.http))
    assert len(shop.klaviyo.requests) > klaviyo_before  # others' changes went on
    assert not any(f'"{gone}"' in orjson.dumps(r.body).decode() for r in shop.klaviyo.requests[klaviyo_before:])
    assert not any(subscriber_hash(email(gone)) in r.path for r in shop.mailchimp.requests[mailchimp_before:])


def _sealed_left(state: Path, profile_id: str) -> int:
    with sqlite3.connect(state / "vault.db") as db:
        row = db.execute(
            "SELECT count(*) FROM deletion_requests WHERE profile_id = ? AND sealed IS NOT NULL", (profile_id,)
        ).fetchone()
    return int(row[0])


def test_a_throttled_klaviyo_is_waited_for_as_it_asks(shop: Shop) -> None:
    shop.klaviyo.fail("POST /api/profile-import", [429, 429], retry_after=1)
    start_day(shop)
    post(shop.http, [to_payload(e) for e in shop.events[: shop.busiest]])
    wait_for(lambda: settled(shop.http))
    calls = shop.klaviyo.calls("POST /api/profile-import")
    assert [r.status for r in calls[:3]] == [429, 429, 201]
    assert calls[1].at - calls[0].at >= 1.0 and calls[2].at - calls[1].at >= 1.0  # as Retry-After asked
    for segment in LISTS:
        mirrored(shop, segment)
    status = {d["name"]: d for d in shop.http.get("/v1/admin/destinations", auth=ADMIN).json()["destinations"]}
    assert status["klaviyo"]["since_start"]["retries"] >= 2 and status["klaviyo"]["counts"]["dead"] == 0


def test_an_unsubscribe_stops_later_enters_but_not_the_exit_that_cleans_the_list(shop: Shop) -> None:
    start_day(shop)
    user = next(u for u in shop.users if u not in shop.unsubscribed | shop.listed | {shop.users[1]})
    t = shop.events[0].ts_ms
    view = {"type": "track", "event": "Product Viewed", "userId": user, "properties": {"product_id": "p1"}}
    post(shop.http, [{**view, "messageId": "v1", "timestamp": format_ms(t)}])
    wait_for(lambda: settled(shop.http))
    assert user in shop.klaviyo.members(LISTS["viewed_30m"]) and email(user) in shop.mailchimp.tagged(
        TAGS["viewed_30m"]
    )
    unsubscribe = {"type": "track", "event": "Email Unsubscribed", "userId": user, "messageId": "u1"}
    post(shop.http, [{**unsubscribe, "timestamp": format_ms(t + 60_000)}])
    shop.http.post("/v1/admin/advance", params={"to_ms": t + 40 * 60_000}, auth=ADMIN)  # the view ages out: exit
    wait_for(lambda: settled(shop.http))
    assert user not in shop.klaviyo.members(LISTS["viewed_30m"])  # the exit went, the list is clean
    assert email(user) not in shop.mailchimp.tagged(TAGS["viewed_30m"])
    calls = len(shop.klaviyo.requests), len(shop.mailchimp.requests)
    post(shop.http, [{**view, "messageId": "v2", "timestamp": format_ms(t + 41 * 60_000)}])  # enters again
    wait_for(lambda: settled(shop.http))
    assert user in members(shop.http, "viewed_30m")
    assert (len(shop.klaviyo.requests), len(shop.mailchimp.requests)) == calls  # nothing sent
    suppressed = shop.http.get(
        "/v1/admin/destinations/mailchimp/deliveries", params={"status": "suppressed"}, auth=ADMIN
    ).json()["deliveries"]
    assert [(d["profile_id"], d["kind"]) for d in suppressed if d["profile_id"] == user] == [(user, "enter")]


def test_a_user_outside_the_audience_is_skipped_with_the_reason(shop: Shop) -> None:
    start_day(shop)
    outsider, t = shop.users[1], shop.events[0].ts_ms
    view = {"type": "track", "event": "Product Viewed", "userId": outsider, "properties": {"product_id": "p1"}}
    post(shop.http, [{**view, "messageId": "o1", "timestamp": format_ms(t)}])
    wait_for(lambda: settled(shop.http))
    skipped = shop.http.get(
        "/v1/admin/destinations/mailchimp/deliveries", params={"status": "skipped"}, auth=ADMIN
    ).json()["deliveries"]
    assert [(d["profile_id"], d["segment"], d["reason"]) for d in skipped] == [
        (outsider, "viewed_30m", "not a member of the audience")
    ]
    assert outsider in shop.klaviyo.members(LISTS["viewed_30m"])  # Klaviyo creates the profile: no audience there
