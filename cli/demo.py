"""``segflow demo``, which ``make run`` runs: the whole product on embedded defaults.

Train on a synthetic history if no champion is registered; start the server
on 127.0.0.1 on the event clock; replay a fresh synthetic day against it over
HTTP with a live display; move the clock to the day's end so due exits and
deadlines fire; print segment sizes, the busiest transitions and one user's
full explanation; stop cleanly. Beside it, the local webhook receiver of the
tests (``tests/receiver.py``, in a process of its own) is a destination:
every segment change is delivered to it, signed, and the summary ends with
what it received and how fast.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import tempfile
import time
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
from features.table import table_to_events
from models import registry
from serving.app import create_app
from serving.replay import ReplayStats, parse_speed, replay
from serving.server import ServerThread, free_port
from serving.settings import Settings
from training.synthetic import DEFAULT_START, generate

console = Console(soft_wrap=True)
ROOT = Path(__file__).resolve().parent.parent


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
    with tempfile.TemporaryDirectory(prefix="segflow-demo-") as state, _receiver(secret) as receiver:
        write, read = "sfw_" + secrets.token_urlsafe(16), "sfr_" + secrets.token_urlsafe(16)
        destinations = Path(state) / "destinations.yaml"
        if receiver is not None:
            fields = "[cart, top_categories_7d, intent_band, cluster_words, description]"
            destinations.write_text(
                f"destinations:\n  - name: demo_webhook\n    kind: webhook\n    url: {receiver.url}/hooks/demo\n"
                f"    secret: {secret}\n    fields: {fields}\n"
            )
        settings = Settings(
            state_dir=Path(state) / "state", clock="event", write_keys=[SecretStr(write)],
            read_keys=[SecretStr(read)], tracking_uri=uri, port=free_port(), destinations=destinations,
        )  # fmt: skip
        with ServerThread(create_app(settings), settings.port) as url:
            stats = _replay(events, url, write, pace)
            end = max(e.ts_ms for e in events)
            with httpx.Client(base_url=url, timeout=60.0) as http:
                advanced = http.post("/v1/admin/advance", params={"to_ms": end + 1}, auth=(write, "")).json()
                for t in advanced["transitions"]:
                    stats.transitions[(t["segment"], t["kind"])] += 1
                _summary(http, read, stats)
                if receiver is not None:
                    _deliveries(http, write, receiver)
    console.print("the server has stopped.")


def _deliveries(http: httpx.Client, admin: str, receiver: Any) -> None:
    """Wait (up to a minute) for every change to reach the webhook receiver, then say what it received."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = http.get("/v1/admin/destinations", auth=(admin, "")).json()["destinations"][0]
        if status["counts"]["pending"] == 0 and status["cursor"] >= status["outbox_last"]:
            break
        time.sleep(0.2)
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
