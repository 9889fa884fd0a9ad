"""``segflow destinations``: where segment changes go, through a running
service's admin routes: status, dead letters (or any status), replay,
reconciliation of email platforms, the suppression list, vault key rotation."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.admin import KEY_OPTION, URL_OPTION, call

app = typer.Typer(help="Destinations: status, dead letters, replay, reconcile, suppress.", no_args_is_help=True)


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


@app.command("reconcile")
def reconcile(
    name: Annotated[str, typer.Argument(help="a configured Klaviyo or Mailchimp destination")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would change")] = False,
) -> None:
    """Make the platform's lists or tags hold exactly segflow's members who may get email."""
    path = f"/v1/admin/destinations/{name}/reconcile"
    found = call("POST", path, url, key, dry_run=str(dry_run).lower())
    for s in found["segments"]:
        done = "would add" if dry_run else "added"
        gone = "would remove" if dry_run else "removed"
        adds, removes = (s["missing"], s["extra"]) if dry_run else (s["added"], s["removed"])
        skipped = ", ".join(f"{n} {why}" for why, n in s["skipped"].items())
        typer.echo(
            f"{name} {s['segment']}: {s['members']} members, {s['listed']} listed; {done} {adds}, {gone} {removes}"
            + (f"; skipped: {skipped}" if skipped else "")
        )


@app.command("suppress")
def suppress(
    file: Annotated[typer.FileText, typer.Argument(help="user ids or email addresses, one a line (- for stdin)")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
    reason: Annotated[str, typer.Option(help="kept with each entry")] = "suppression list",
    lift: Annotated[bool, typer.Option("--lift", help="remove them from the list instead (a renewed consent)")] = False,
) -> None:
    """Email suppression: these people get no enter deliveries to email destinations (exits still go)."""
    who = [line.strip() for line in file if line.strip() and not line.startswith("#")]
    body: dict[str, object] = {"remove": who} if lift else {"add": who, "reason": reason}
    typer.echo(json.dumps(call("POST", "/v1/admin/suppressions", url, key, json=body)))


@app.command("rotate-vault-key")
def rotate_vault_key(
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
) -> None:
    """A new contact-vault key; every contact sealed again under it."""
    typer.echo(json.dumps(call("POST", "/v1/admin/vault/rotate", url, key)))
