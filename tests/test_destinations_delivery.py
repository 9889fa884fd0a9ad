"""Every change leaves segflow: a real server delivers its outbox to a real
local webhook receiver that fails on demand. Every key arrives, again only
after a failed attempt, in per-user order, never before ``Retry-After``,
never more requests at once than the limit; a frequency cap and a flap guard
cancel what they must, with reasons; dead letters can be replayed."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from cli.main import app as app_cli
from features.events import Event, to_payload
from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.settings import Settings
from tests.receiver import Receiver, fail

SECRET = "whsec_" + "d" * 24
ADMIN, READ = ("delivery-admin", ""), ("delivery-read", "")
T0 = 1_790_000_000_000 - 1_790_000_000_000 % 3_600_000
MIN = 60_000
RULES = """
version: 1
segments:
  - name: carted_1h
    description: added to cart in the last hour
    rule: count(add_to_cart, 1h) >= 1
  - name: viewed_30m
    rule: count(product_view, 30m) >= 1
"""


def destinations(url: str, **extra: object) -> str:
    lines = [
        "destinations:",
        "  - name: crm",
        "    kind: webhook",
        f"    url: {url}",
        f"    secret: {SECRET}",
        "    concurrency: 3",
        "    batch_size: 100",
        "    rate_per_s: 200",
        "    backoff_initial_s: 0.2",
        "    backoff_max_s: 1",
        "    fields: [cart, top_categories_7d, intent_band, description]",
    ]
    lines += [f"    {k}: {orjson.dumps(v).decode()}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def settings(tmp_path: Path, url: str, **extra: object) -> Settings:
    (tmp_path / "segments.yaml").write_text(RULES)
    (tmp_path / "destinations.yaml").write_text(destinations(url, **extra))
    return Settings(
        state_dir=tmp_path / "state", clock="event", segments=tmp_path / "segments.yaml",
        destinations=tmp_path / "destinations.yaml", admin_keys=[SecretStr(ADMIN[0])], read_keys=[SecretStr(READ[0])],
    )  # fmt: skip


NAMES = {"product_view": "Product Viewed", "add_to_cart": "Product Added"}


def ev(mid: str, kind: str, user: str, t: int, props: dict | None = None) -> Event:
    return Event(mid, kind, user, None, t, t, name=NAMES[kind], properties=props or {})


def history(users: int) -> list[Event]:
    """Each user views, carts, views again: enters and (an hour later, time-driven) exits."""
    events = []
    for u in range(users):
        t = T0 + (u % 50) * MIN
        props = {"product_id": f"p{u % 7}", "price": 20.0, "category": ["shoes", "books"][u % 2]}
        events += [
            ev(f"v{u}", "product_view", f"u{u}", t, props),
            ev(f"c{u}", "add_to_cart", f"u{u}", t + MIN, props),
            ev(f"w{u}", "product_view", f"u{u}", t + 50 * MIN, props),
        ]
    return sorted(events, key=lambda e: e.ts_ms)


def post(http: httpx.Client, events: list[Event], auth: tuple[str, str] = ADMIN) -> None:
    for i in range(0, len(events), 500):
        body = orjson.dumps({"batch": [to_payload(e) for e in events[i : i + 500]]})
        r = http.post("/v1/batch", content=body, auth=auth, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def outbox_keys(http: httpx.Client, auth: tuple[str, str] = READ) -> list[dict]:
    out, after = [], 0
    while page := http.get("/v1/transitions", params={"after": after, "limit": 1000}, auth=auth).json()["transitions"]:
        out += page
        after = page[-1]["cursor"]
    return out


def delivered(http: httpx.Client) -> int:
    return int(http.get("/v1/admin/destinations", auth=ADMIN).json()["destinations"][0]["counts"]["delivered"])


def dead_count(http: httpx.Client) -> int:
    return int(http.get("/v1/admin/destinations", auth=ADMIN).json()["destinations"][0]["counts"]["dead"])


def wait_for(check: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as r:
        yield r


def test_every_key_arrives_through_500s_and_429s_in_order_and_within_limits(tmp_path: Path, receiver: Receiver) -> None:
    endpoint = "/hooks/crm"
    receiver.script(endpoint, [fail(500)] * 3 + [fail(429, retry_after=2)] * 2)
    app = create_app(settings(tmp_path, receiver.url + endpoint), Scorers(OnlineIntentModel(), intent_feature_names()))
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        post(http, history(300))
        r = http.post("/v1/admin/advance", params={"to_ms": T0 + 6 * 3_600_000}, auth=ADMIN)
        assert r.status_code == 200
        decided = outbox_keys(http)
        causes = {t["cause"] for t in decided}
        assert len(decided) >= 1000 and causes == {"event", "time"}
        wait_for(lambda: delivered(http) == len(decided))
        status = http.get("/v1/admin/destinations", auth=ADMIN).json()["destinations"][0]
        metrics = http.get("/metrics", auth=READ).text
    assert f'segflow_destination_delivered_total{{destination="crm"}} {len(decided)}.0' in metrics
    assert 'segflow_destination_queued{destination="crm"}' in metrics
    got = receiver.received
    assert {d["key"] for d in got.deliveries} == {t["key"] for t in decided}
    assert len(got.deliveries) == len(decided)  # each key accepted once: sent again only after a failure
    assert status["counts"]["delivered"] == len(decided) and status["retries"] >= 5
    # per-user order: each user's deliveries arrive in the order they were decided
    order = {t["key"]: t["cursor"] for t in decided}
    per_user: dict[str, list[int]] = defaultdict(list)
    for d in got.deliveries:
        per_user[d["user"]].append(order[d["key"]])
    assert all(seq == sorted(seq) for seq in per_user.values())
    # no retry before its Retry-After
    first_seen: dict[str, int] = {}
    for q in got.requests:
        for key in q.keys:
            first_seen.setdefault(key, q.received_ms)
    throttled = [q for q in got.requests if q.answered == 429]
    assert len(throttled) == 2
    for q in throttled:
        later = [r.received_ms for r in got.requests if r.received_ms > q.received_ms and set(r.keys) & set(q.keys)]
        assert later and min(later) >= q.received_ms + 2000
    assert sum(q.answered == 500 for q in got.requests) == 3
    assert got.max_in_flight[endpoint] <= 3
    assert all(q.signature == "ok" for q in got.requests)
    sample = next(d for d in got.deliveries if d["segment"] == "carted_1h" and d["kind"] == "enter")
    assert sample["fields"]["description"] == "added to cart in the last hour"
    assert sample["fields"]["cart"]["value"] == 20.0 and sample["fields"]["cart"]["items"][0]["quantity"] == 1
    assert sample["reason"]["rule"] == "count(add_to_cart, 1h) >= 1" and sample["reason"]["clauses"]


def test_a_frequency_cap_cancels_with_its_reason(tmp_path: Path, receiver: Receiver) -> None:
    endpoint = "/hooks/capped"
    extra = {"segments": ["carted_1h"], "transitions": ["enter"], "frequency_cap": {"count": 1, "per": "24h"}}
    app = create_app(
        settings(tmp_path, receiver.url + endpoint, **extra), Scorers(OnlineIntentModel(), intent_feature_names())
    )
    later = T0 + 3 * 3_600_000
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        # u1 enters, exits an hour later, enters again two hours after: one enter a day gets through
        post(http, [ev("a", "add_to_cart", "u1", T0), ev("b", "add_to_cart", "u1", later),
                    ev("c", "add_to_cart", "u2", later)])  # fmt: skip
        wait_for(lambda: len(receiver.keys(endpoint)) == 2)
        cancelled = http.get("/v1/admin/destinations/crm/deliveries", params={"status": "cancelled"}, auth=ADMIN)
    assert sorted((d["user"], d["at_ms"]) for d in receiver.received.deliveries) == [("u1", T0), ("u2", later)]
    [capped] = cancelled.json()["deliveries"]
    assert capped["profile_id"] == "u1" and capped["at_ms"] == later and "frequency cap" in capped["reason"]


FLAPPY = """
version: 1
segments:
  - name: quick
    rule: since(product_view) < 1s
  - name: lasting
    rule: since(product_view) < 4s
"""


def test_the_flap_guard_cancels_an_enter_and_exit_within_it_and_holds_the_rest(
    tmp_path: Path, receiver: Receiver
) -> None:
    endpoint = "/hooks/flap"
    s = settings(tmp_path, receiver.url + endpoint, flap_guard=2)
    (tmp_path / "segments.yaml").write_text(FLAPPY)
    app = create_app(s.model_copy(update={"clock": "wall"}), Scorers(OnlineIntentModel(), intent_feature_names()))
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        now = time.time_ns() // 1_000_000
        post(http, [ev("v", "product_view", "u1", now)])
        wait_for(lambda: len(receiver.keys(endpoint)) == 2, timeout=30)
        cancelled = http.get("/v1/admin/destinations/crm/deliveries", params={"status": "cancelled"}, auth=ADMIN)
    got = [(d["segment"], d["kind"]) for d in receiver.received.deliveries]
    assert got == [("lasting", "enter"), ("lasting", "exit")]  # held 2 s, then sent; its exit came after the guard
    enter = receiver.received.deliveries[0]
    assert enter["received_ms"] >= enter["decided_ms"] + 2000
    flapped = cancelled.json()["deliveries"]
    assert sorted((d["segment"], d["kind"]) for d in flapped) == [("quick", "enter"), ("quick", "exit")]
    assert all("flap" in d["reason"] for d in flapped)


def test_dead_letters_are_kept_and_replayed(tmp_path: Path, receiver: Receiver) -> None:
    endpoint = "/hooks/dead"
    receiver.script(endpoint, [fail(500)] * 2 + [fail(400)])
    app = create_app(
        settings(tmp_path, receiver.url + endpoint, max_attempts=2, concurrency=1),
        Scorers(OnlineIntentModel(), intent_feature_names()),
    )
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        post(http, [ev("a", "add_to_cart", "u1", T0)])
        wait_for(lambda: dead_count(http) == 1)
        post(http, [ev("b", "add_to_cart", "u2", T0 + MIN)])  # refused (400): dead at once
        wait_for(lambda: dead_count(http) == 2)
        dead = http.get("/v1/admin/destinations/crm/deliveries", auth=ADMIN).json()["deliveries"]
        assert [d["attempts"] for d in dead] == [2, 1] and "HTTP 400" in dead[1]["reason"]
        assert "{}" not in dead[1]["reason"]  # the receiver's answer is not kept
        assert not receiver.keys(endpoint)
        cli = CliRunner().invoke(app_cli, ["destinations", "dead-letters", "crm", "--url", url, "--key", ADMIN[0]])
        assert cli.exit_code == 0 and len(orjson.loads(cli.output)["deliveries"]) == 2
        cli = CliRunner().invoke(app_cli, ["destinations", "replay", "crm", "--url", url, "--key", ADMIN[0]])
        assert cli.exit_code == 0 and orjson.loads(cli.output) == {"requeued": 2}, cli.output
        wait_for(lambda: len(receiver.keys(endpoint)) == 2)
        why = http.get("/v1/profiles/u1", auth=READ).json()
    assert sorted(d["user"] for d in receiver.received.deliveries) == ["u1", "u2"]
    assert why["deliveries"][0]["status"] == "delivered"


def test_transitions_page_and_stream_live(tmp_path: Path, receiver: Receiver) -> None:
    app = create_app(
        settings(tmp_path, receiver.url + "/hooks/any"), Scorers(OnlineIntentModel(), intent_feature_names())
    )
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        post(http, history(4))
        decided = outbox_keys(http)
        got: list[dict] = []
        with http.stream("GET", "/v1/transitions/stream", params={"after": decided[2]["cursor"]}, auth=READ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("data:"):
                    got.append(orjson.loads(line[5:]))
                if len(got) == len(decided) - 3:
                    break
            late = T0 + 10 * 3_600_000  # a new cart, and the exits due before it: followed live
            threading.Thread(target=post, args=(http, [ev("late", "add_to_cart", "u9", late)])).start()
            for line in lines:
                if line.startswith("data:"):
                    got.append(orjson.loads(line[5:]))
                    if got[-1]["user"] == "u9":
                        break
        before = outbox_keys(http)
        r = http.post("/v1/segments/preview", json={"config": RULES.replace("1h", "2h")}, auth=ADMIN)
        assert r.status_code == 200 and r.json()["segments"]
        assert outbox_keys(http) == before  # a preview replays history in engines of its own: nothing is decided
    assert [g["key"] for g in got[: len(decided) - 3]] == [d["key"] for d in decided[3:]]
    assert (
        got[-1]["segment"] == "carted_1h" and got[-1]["kind"] == "enter" and got[-1]["cursor"] > decided[-1]["cursor"]
    )
    assert [g["cursor"] for g in got] == sorted(g["cursor"] for g in got)
