"""``segflow serve`` (the long-running service) and ``segflow replay`` (feed
an event table to a running server)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from features.table import read_table, table_to_events
from serving.replay import ReplayStats, parse_speed, replay
from serving.settings import Settings, admin_key, with_keys


def serve(
    host: Annotated[str | None, typer.Option(help="interface to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    clock: Annotated[str | None, typer.Option(help="wall (live) or event (replays, demos, tests)")] = None,
    durability: Annotated[str | None, typer.Option(help="process or power")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="where the event log and snapshots live")] = None,
    segments: Annotated[Path | None, typer.Option(help="segment config")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Run the service: ingest, profiles, segments, metrics (settings from SEGFLOW_* and config/segflow.yaml)."""
    import uvicorn

    from serving.app import create_app
    from serving.connections import deadline_protocol

    given = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "clock": clock,
            "durability": durability,
            "state_dir": state_dir,
            "segments": segments,
            "tracking_uri": tracking_uri,
        }.items()
        if v is not None
    }
    try:
        settings, keys = with_keys(Settings(**given))  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if keys is not None:
        logging.getLogger("segflow").info("API keys are in %s", keys)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        http=deadline_protocol(settings.request_deadline_s, settings.max_pending_requests),
    )


def replay_command(
    file: Annotated[Path, typer.Argument(help="event table (Parquet, as `segflow generate` or `import` write)")],
    url: Annotated[str, typer.Option(help="the running server")] = "http://127.0.0.1:8000",
    speed: Annotated[str, typer.Option(help="event time per wall time, e.g. 60x, or max")] = "60x",
    key: Annotated[str | None, typer.Option(envvar="SEGFLOW_WRITE_KEY", help="admin key (default: keys.json)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 500,
) -> None:
    """Feed an event table to a running server in event-time order, with a live display."""
    try:
        pace = parse_speed(speed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--speed") from None
    if not file.exists():
        raise typer.BadParameter(f"{file} does not exist", param_hint="FILE")
    write_key = key or _default_write_key()
    events = list(table_to_events(read_table(file)))
    with Live(replay_table(ReplayStats(), len(events)), console=Console(stderr=True), refresh_per_second=4) as live:
        stats = replay(events, url, write_key, pace, batch_size, lambda s: live.update(replay_table(s, len(events))))
    typer.echo(json.dumps({"sent": stats.sent, "accepted": stats.accepted, "events_per_s": round(stats.events_per_s)}))


def _default_write_key() -> str:
    return admin_key(Settings())


def replay_table(stats: ReplayStats, total: int) -> Table:
    """Events sent so far and each segment's enters and exits (the live display of a replay)."""
    table = Table(title=f"replay: {stats.sent:,}/{total:,} events, {stats.events_per_s:,.0f}/s over HTTP")
    table.add_column("segment")
    table.add_column("enters", justify="right")
    table.add_column("exits", justify="right")
    names = sorted({s for s, _ in stats.transitions})
    for name in names:
        table.add_row(name, f"{stats.transitions[(name, 'enter')]:,}", f"{stats.transitions[(name, 'exit')]:,}")
    return table
