"""``segflow demo``, which ``make run`` runs: the whole product on embedded defaults.

Train on a synthetic history if no champion is registered; start the server
on 127.0.0.1 on the event clock; replay a fresh synthetic day against it over
HTTP with a live display; move the clock to the day's end so due exits and
deadlines fire; print segment sizes, the busiest transitions and one user's
full explanation; stop cleanly. Beside it, the local webhook receiver of the
tests (``tests/receiver.py``, in a process of its own) is a destination:
every segment change is delivered to it, signed, and the summary ends with
what it received and how fast. The tests' Klaviyo and Mailchimp emulators
(``tests/emulators.py``) are destinations too: every shopper identifies with
an email (kept sealed in the vault), a few unsubscribe, and the summary ends
with the lists, tags and flow-triggering events each platform received.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cli.serve import replay_table
from features.events import format_ms
from features.table import table_to_events
from models import registry
from serving.app import create_app
from serving.replay import ReplayStats, parse_speed, replay
from serving.server import ServerThread, free_port
from serving.settings import Settings
from training.synthetic import DEFAULT_START, generate

console = Console(soft_wrap=True)
ROOT = Path(__file__).resolve().parent.parent


KLAVIYO_KEY, MAILCHIMP_KEY = "pk_demo_" + "0" * 24, "demo" + "0" * 28 + "-us1"
PLATFORM_SEGMENTS = {"likely_buyers": "LikelyBuy01", "ready_to_buy": "ReadyToBuy1", "browsing": "Browsing001"}


def _email(user: str) -> str:
    return f"{user}@shop.example"


@contextlib.contextmanager
def _platforms(users: list[str]) -> Iterator[Any]:
    """The tests' Klaviyo and Mailchimp emulators (None outside a checkout of the repository)."""
    if not (ROOT / "tests" / "emulators.py").exists():
        yield None
        return
    sys.path.insert(0, str(ROOT))
    from tests.emulators import KlaviyoEmulator, MailchimpEmulator

    lists = list(PLATFORM_SEGMENTS.values())
    with KlaviyoEmulator(KLAVIYO_KEY, lists) as klaviyo, MailchimpEmulator(MAILCHIMP_KEY, "demo01") as mailchimp:
        for u in users:
            mailchimp.subscribe(_email(u))
        yield klaviyo, mailchimp


def _platform_destinations(klaviyo: Any, mailchimp: Any) -> str:
    segments = ", ".join(f"{s}: {i}" for s, i in PLATFORM_SEGMENTS.items())
    return (
        f"  - name: klaviyo\n    kind: klaviyo\n    url: {klaviyo.url}\n    api_key: {KLAVIYO_KEY}\n"
        f"    lists: {{{segments}}}\n    events: [likely_buyers]\n    fields: [cart, top_categories_7d]\n"
        f"  - name: mailchimp\n    kind: mailchimp\n    url: {mailchimp.url}/3.0\n    api_key: {MAILCHIMP_KEY}\n"
        f"    audience: demo01\n    segments: [{', '.join(PLATFORM_SEGMENTS)}]\n    concurrency: 10\n"
    )


@contextlib.contextmanager
def _receiver(secret: str) -> Iterator[Any]:
    """The tests' webhook receiver in a process of its own (None outside a checkout of the repository)."""
    if not (ROOT / "tests" / "receiver.py").exists():
        console.print("no tests/receiver.py here: the demo runs without a webhook destination")
        yield None
        return
    sys.path.insert(0, str(ROOT))
    from tests.receiver import Spawned

    with Spawned(secret) as receiver:
        yield receiver


def demo(
    users: Annotated[int, typer.Option(help="shoppers in the replayed day")] = 3000,
    train_users: Annotated[int, typer.Option(help="shoppers in the training history, if training is needed")] = 4000,
    train_days: Annotated[int, typer.Option(help="days of training history")] = 21,
    speed: Annotated[str, typer.Option(help="replay speed: 60x, 1440x or max")] = "max",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    seed: Annotated[int, typer.Option(help="random seed of the replayed day")] = 101,
) -> None:
    """Train if needed, serve, replay a synthetic day, summarize, stop."""
    try:
        pace = parse_speed(speed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--speed") from None
    for noisy in ("alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = registry.configure(tracking_uri)
    if registry.champion_version(registry.INTENT_BATCH) is None:
        _train(train_users, train_days)
    else:
        console.print(f"using the registered champions at {uri}")
    day = generate(users, 1, seed, start=DEFAULT_START + timedelta(days=train_days + 1))
    events = list(table_to_events(day.events))
    console.print(f"replaying a fresh synthetic day: {len(events):,} events of {users:,} shoppers")
    secret = "whsec_" + secrets.token_urlsafe(24)
    shoppers = sorted({e.profile_id for e in events})
    with (
        tempfile.TemporaryDirectory(prefix="segflow-demo-") as state,
        _receiver(secret) as receiver,
        _platforms(shoppers) as platforms,
    ):
        write, read = "sfw_" + secrets.token_urlsafe(16), "sfr_" + secrets.token_urlsafe(16)
        destinations = Path(state) / "destinations.yaml"
        text = "destinations:\n"
        if receiver is not None:
            fields = "[cart, top_categories_7d, intent_band, cluster_words, description]"
            text += f"  - name: demo_webhook\n    kind: webhook\n    url: {receiver.url}/hooks/demo\n"
            text += f"    secret: {secret}\n    fields: {fields}\n"
        if platforms is not None:
            text += _platform_destinations(*platforms)
        destinations.write_text(text)
        settings = Settings(
            state_dir=Path(state) / "state", clock="event", write_keys=[SecretStr(write)],
            read_keys=[SecretStr(read)], tracking_uri=uri, port=free_port(), destinations=destinations,
            vault_key_file=Path(state) / "vault.key",
        )  # fmt: skip
        with ServerThread(create_app(settings), settings.port) as url:
            if platforms is not None:
                _identify(url, write, shoppers, min(e.ts_ms for e in events))
            stats = _replay(events, url, write, pace)
            end = max(e.ts_ms for e in events)
            with httpx.Client(base_url=url, timeout=60.0) as http:
                advanced = http.post("/v1/admin/advance", params={"to_ms": end + 1}, auth=(write, "")).json()
                for t in advanced["transitions"]:
                    stats.transitions[(t["segment"], t["kind"])] += 1
                _summary(http, read, stats)
                if receiver is not None or platforms is not None:
                    _settle(http, write)
                if receiver is not None:
                    _deliveries(http, write, receiver)
                if platforms is not None:
                    _platform_summary(http, write, *platforms)
    console.print("the server has stopped.")


def _identify(url: str, admin: str, users: list[str], first_ms: int) -> None:
    """Every shopper identifies with an email; one in twenty unsubscribes."""
    at = format_ms(first_ms - 60_000)
    batch: list[dict[str, Any]] = [  # the unsubscribes first: no destination sees anybody before their consent
        {"type": "track", "event": "Email Unsubscribed", "userId": u, "messageId": f"demo-un-{u}", "timestamp": at}
        for u in users[::20]
    ]
    batch += [
        {"type": "identify", "userId": u, "messageId": f"demo-id-{u}", "timestamp": at, "traits": {"email": _email(u)}}
        for u in users
    ]
    with httpx.Client(base_url=url, timeout=60.0, auth=(admin, "")) as http:
        for i in range(0, len(batch), 500):
            http.post("/v1/batch", json={"batch": batch[i : i + 500]}).raise_for_status()
    console.print(
        f"{len(users):,} shoppers identified with an email (sealed in the vault); {len(users[::20])} unsubscribed"
    )


def _settle(http: httpx.Client, admin: str) -> list[dict[str, Any]]:
    """Wait (up to a minute) for every destination to have sent what it owes; their status."""
    deadline = time.monotonic() + 60
    while True:
        status = http.get("/v1/admin/destinations", auth=(admin, "")).json()["destinations"]
        done = all(d["counts"]["pending"] == 0 and d["cursor"] >= d["outbox_last"] for d in status)
        if done or time.monotonic() > deadline:
            return list(status)
        time.sleep(0.2)


def _platform_summary(http: httpx.Client, admin: str, klaviyo: Any, mailchimp: Any) -> None:
    """What each emulated platform received, and where its lists and tags stand."""
    status = {d["name"]: d for d in _settle(http, admin)}
    console.rule("deliveries to the email platforms (local emulators)")
    adds = sum(len(r.body["data"]) for r in klaviyo.calls("POST /api/lists/"))
    removes = sum(len(r.body["data"]) for r in klaviyo.calls("DELETE /api/lists/"))
    console.print(
        f"Klaviyo at {klaviyo.url}: {len(klaviyo.calls('POST /api/profile-import'))} profile imports, "
        f"{adds:,} list adds and {removes:,} removes, {len(klaviyo.events):,} flow-triggering events"
    )
    for segment, list_id in PLATFORM_SEGMENTS.items():
        console.print(f"  list {list_id} ({segment}): {len(klaviyo.members(list_id)):,} profiles now")
    for metric, n in sorted(Counter(e["metric"] for e in klaviyo.events).items()):
        console.print(f"  event {metric!r}: {n:,}")
    active = sum(n for k, n in mailchimp.tag_changes.items() if k.endswith(":active"))
    inactive = sum(n for k, n in mailchimp.tag_changes.items() if k.endswith(":inactive"))
    console.print(f"Mailchimp at {mailchimp.url}: {active:,} tags added and {inactive:,} removed on audience members")
    for segment in PLATFORM_SEGMENTS:
        console.print(f"  tag {segment}: {len(mailchimp.tagged(segment)):,} members now")
    for name in ("klaviyo", "mailchimp"):
        c = status[name]["counts"]
        console.print(
            f"{name}: {c['delivered']:,} delivered, {c['suppressed']:,} suppressed (unsubscribed), "
            f"{c['skipped']:,} skipped, {c['dead']} dead letters"
        )


def _deliveries(http: httpx.Client, admin: str, receiver: Any) -> None:
    """Say what the webhook receiver received."""
    status = next(d for d in _settle(http, admin) if d["name"] == "demo_webhook")
    got = receiver.summary()
    console.rule("deliveries to the webhook receiver")
    console.print(
        f"{got['unique']:,} segment changes delivered to {receiver.url}/hooks/demo, signed "
        f"({got['refused_signatures']} refused signatures), in {got['requests']:,} requests; "
        f"from decision to receipt: p50 {got['latency_ms_p50']} ms, p99 {got['latency_ms_p99']} ms"
    )
    for label, n in sorted(got["by_segment"].items(), key=lambda kv: -kv[1])[:5]:
        console.print(f"  {label}: {n:,}")
    console.print(f"dead letters: {status['counts']['dead']}; pending: {status['counts']['pending']}")


def _train(users: int, days: int) -> None:
    from training.pipelines import train_all

    console.print(f"no champion registered: training on a synthetic history ({users:,} shoppers, {days} days)")
    history = generate(users, days, 7)
    started = time.perf_counter()
    train_all(
        history.events,
        history.users.to_pandas(),
        history.intent.to_pandas(),
        register=True,
        progress=lambda msg: console.print(f"  {msg}"),
    )
    console.print(f"trained and registered in {time.perf_counter() - started:.0f}s")


def _replay(events: list[Any], url: str, write: str, pace: float | None) -> ReplayStats:
    with Live(replay_table(ReplayStats(), len(events)), console=console, refresh_per_second=4) as live:
        return replay(events, url, write, pace, progress=lambda s: live.update(replay_table(s, len(events))))


def _summary(http: httpx.Client, read: str, stats: ReplayStats) -> None:
    auth = (read, "")
    segments = http.get("/v1/segments", auth=auth).json()["segments"]
    sizes = Table("segment", "members", "what it means", title="segment sizes at the end of the day")
    for seg in sorted(segments, key=lambda s: -s["size"]):
        sizes.add_row(seg["name"], f"{seg['size']:,}", seg["description"])
    console.print(sizes)
    busiest = Table("segment", "kind", "count", title="busiest transitions")
    for (segment, kind), n in stats.transitions.most_common(8):
        busiest.add_row(segment, kind, f"{n:,}")
    console.print(busiest)
    biggest = max(segments, key=lambda s: s["size"])
    if biggest["size"] == 0:
        console.print("no segment has members")
        return
    users = http.get(f"/v1/segments/{biggest['name']}/members", params={"limit": 50}, auth=auth).json()["members"]
    profiles = [http.get(f"/v1/profiles/{u}", auth=auth).json() for u in users]
    user = max(profiles, key=lambda p: len(p["segments"]))
    console.rule(f"why user {user['user']} is where they are")
    scores = ", ".join(f"{k} {v['value']:.3f}" for k, v in user["scores"].items())
    console.print(f"scores: {scores}")
    for name, score in user["scores"].items():
        if not score["top_contributions"]:
            continue
        pushes = ", ".join(f"{c['feature']} {c['value']:+.2f}" for c in score["top_contributions"][:3])
        console.print(f"  {name} moved most by: {pushes}")
    if user["cluster"]:
        console.print(f"cluster {user['cluster']['name']}: {user['cluster']['description']}")
    for seg in user["segments"]:
        reason = seg["reason"]
        console.print(f"[bold]{seg['segment']}[/bold] since {seg['since']}")
        if reason:
            for clause in reason["clauses"]:
                behind = ", ".join(f"{e['type']} at {e['at'][11:19]}" for e in clause.get("events", []))
                console.print(f"    {clause['clause']}  →  {clause['value']}" + (f"  ({behind})" if behind else ""))
    console.print(f"{stats.sent:,} events replayed at {stats.events_per_s:,.0f}/s.")
