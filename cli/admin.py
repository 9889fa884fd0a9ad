"""``segflow keys`` (the keys file: list, add, rotate, revoke; a running
service picks changes up within a second) and ``segflow quarantine`` (events
refused at the edge, through a running service's admin routes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from serving.backup import restore
from serving.keys import SCOPES, ApiKey, new_key, read_keys_file, write_keys_file
from serving.settings import Settings, admin_key, keys_path

keys_app = typer.Typer(help="API keys in the keys file: list, add, rotate, revoke.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Events refused at the edge: list, show, replay, drop.", no_args_is_help=True)


def _keys() -> tuple[Any, list[ApiKey]]:
    path = keys_path(Settings())
    return path, read_keys_file(path) if path.exists() else []


@keys_app.command("list")
def keys_list() -> None:
    """Every key in the keys file: id, scope, origins, rate (never the secret)."""
    path, keys = _keys()
    typer.echo(json.dumps({"file": str(path), "keys": [k.public() for k in keys]}, indent=1))


@keys_app.command("add")
def keys_add(
    scope: Annotated[str, typer.Argument(help="source, read or admin")],
    key_id: Annotated[str | None, typer.Option("--id", help="a name for the key (default: scope and random)")] = None,
    origin: Annotated[list[str] | None, typer.Option(help="an allowed origin (source keys; repeatable)")] = None,
    rate: Annotated[float | None, typer.Option(help="requests a second (default: the scope's)")] = None,
) -> None:
    """Add a key; prints it once (it is kept only in the keys file, mode 0600)."""
    if scope not in SCOPES:
        raise typer.BadParameter(f"scope must be one of {', '.join(SCOPES)}", param_hint="SCOPE")
    path, keys = _keys()
    if key_id is not None and any(k.id == key_id for k in keys):
        raise typer.BadParameter(f"a key named {key_id!r} exists; rotate it instead", param_hint="--id")
    key = new_key(scope, key_id, origins=tuple(origin or ()), rate_per_s=rate)  # type: ignore[arg-type]
    write_keys_file(path, [*keys, key])
    typer.echo(json.dumps({**key.public(), "key": key.secret}))


@keys_app.command("rotate")
def keys_rotate(key_id: Annotated[str, typer.Argument(help="the key's id")]) -> None:
    """Give a key a new secret (same id, scope, origins and rate); the old one stops working."""
    path, keys = _keys()
    old = next((k for k in keys if k.id == key_id), None)
    if old is None:
        raise typer.BadParameter(f"no key named {key_id!r} in {path}", param_hint="KEY_ID")
    fresh = new_key(old.scope, old.id, origins=old.origins, rate_per_s=old.rate_per_s, burst=old.burst)
    write_keys_file(path, [fresh if k.id == key_id else k for k in keys])
    typer.echo(json.dumps({**fresh.public(), "key": fresh.secret}))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id")]) -> None:
    """Remove a key; a running service refuses it within a second."""
    path, keys = _keys()
    kept = [k for k in keys if k.id != key_id]
    if len(kept) == len(keys):
        raise typer.BadParameter(f"no key named {key_id!r} in {path}", param_hint="KEY_ID")
    write_keys_file(path, kept)
    typer.echo(json.dumps({"revoked": key_id}))


def call(method: str, path: str, url: str, key: str | None, json: Any = None, **params: Any) -> Any:
    headers = {"authorization": f"Bearer {key or admin_key(Settings())}"}
    r = httpx.request(method, url.rstrip("/") + path, params=params, headers=headers, json=json, timeout=600)
    if r.status_code >= 400:
        typer.echo(r.text, err=True)
        raise typer.Exit(1)
    return r.json()


URL_OPTION = typer.Option(help="the running server")
KEY_OPTION = typer.Option(envvar="SEGFLOW_ADMIN_KEY", help="admin key (default: keys.json)")


@quarantine_app.command("list")
def quarantine_list(
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
    after: Annotated[int, typer.Option(min=0, help="entries after this id")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Quarantined events with their problems, oldest first."""
    typer.echo(json.dumps(call("GET", "/v1/admin/quarantine", url, key, after=after, limit=limit), indent=1))


@quarantine_app.command("show")
def quarantine_show(
    held_id: Annotated[int, typer.Argument(min=1)],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
) -> None:
    """One quarantined event with its (scrubbed) payload."""
    typer.echo(json.dumps(call("GET", f"/v1/admin/quarantine/{held_id}", url, key), indent=1))


@quarantine_app.command("replay")
def quarantine_replay(
    held_id: Annotated[int, typer.Argument(min=1)],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
) -> None:
    """Parse a quarantined event again; ingest and drop it if it now passes (exit 1 with its problems if not)."""
    typer.echo(json.dumps(call("POST", f"/v1/admin/quarantine/{held_id}/replay", url, key)))


def backup_command(
    to: Annotated[Path, typer.Argument(help="a new or empty directory (on the server's machine)")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    key: Annotated[str | None, KEY_OPTION] = None,
) -> None:
    """A consistent backup of a running service's state (snapshot, log, quarantine, config)."""
    typer.echo(json.dumps(call("POST", "/v1/admin/backup", url, key, json={"to": str(to.resolve())})))


def restore_command(
    source: Annotated[Path, typer.Argument(help="a backup directory")],
    state_dir: Annotated[Path, typer.Option(help="a new or empty state directory")],
) -> None:
    """Put a backup into a fresh state directory; `segflow serve --state-dir` then starts from it."""
    try:
        doc = restore(source.resolve(), state_dir.resolve())
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps(doc))
