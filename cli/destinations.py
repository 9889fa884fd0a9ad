"""``segflow destinations``: where segment changes go, through a running
service's admin routes: status, dead letters (or any status), replay."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.admin import KEY_OPTION, URL_OPTION, call

app = typer.Typer(help="Destinations: status, dead letters, replay.", no_args_is_help=True)


@app.command("status")
def status(
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
) -> None:
    """Each destination: deliveries by status, attempts, retries, the oldest undelivered change."""
    typer.echo(json.dumps(call("GET", "/v1/admin/destinations", url, key), indent=1))


@app.command("dead-letters")
def dead_letters(
    name: Annotated[str, typer.Argument(help="a configured destination")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
    state: Annotated[str, typer.Option("--status", help="dead, cancelled, pending or delivered")] = "dead",
    after: Annotated[int, typer.Option(min=0, help="deliveries after this outbox id")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """A destination's dead letters (or its deliveries in another status) with their reasons, oldest first."""
    path = f"/v1/admin/destinations/{name}/deliveries"
    typer.echo(json.dumps(call("GET", path, url, key, status=state, after=after, limit=limit), indent=1))


@app.command("replay")
def replay(
    name: Annotated[str, typer.Argument(help="a configured destination")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
    state: Annotated[str, typer.Option("--status", help="dead or cancelled")] = "dead",
    only: Annotated[list[str] | None, typer.Option("--only", help="only this change key (repeatable)")] = None,
) -> None:
    """Send the dead letters (or the cancelled deliveries, or only some keys) again, from a first attempt."""
    body = {"status": state, "keys": only}
    typer.echo(json.dumps(call("POST", f"/v1/admin/destinations/{name}/replay", url, key, json=body)))
