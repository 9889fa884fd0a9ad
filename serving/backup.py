"""Consistent backups of a running service's state, and their restore.

A backup is a directory: a snapshot (written by a forked child, as of log
position ``snapshot_seq``), the event log and the quarantine copied through
SQLite's online backup (each a consistent image, taken after the fork, so
the log holds everything the snapshot covers and what came after, up to
``log_seq``), the segment config in force, and ``backup.json`` naming these.
Restoring copies it into an empty state directory; the service then starts
from the snapshot and replays the log after it: the state at ``log_seq``.
No keys are copied.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving import snapshot

if TYPE_CHECKING:
    from serving.service import Service

MANIFEST = "backup.json"
FILES = ("snapshot.bin", "events.db", "quarantine.db", "segments.yaml")


def start(service: Service, target: Path) -> snapshot.Writer:
    """Begin a backup of a running service into ``target`` (new or empty): its
    snapshot is written by a forked child; :func:`finish` copies the rest."""
    engine = service.engine
    assert engine is not None
    empty_target(target).mkdir(parents=True, exist_ok=True)
    writer = snapshot.Writer(target / "snapshot.bin", target / "snapshot.prev.bin", fsync=True)
    writer.start(engine.export_state, engine.seq, background=True)
    return writer


def finish(service: Service, target: Path, writer: snapshot.Writer) -> dict[str, Any]:
    """The log, the quarantine and the config copied after the snapshot's
    fork (safe in a worker thread: connections of their own); the manifest."""
    assert service.engine is not None and writer.seq is not None
    if not writer.poll(block=True):
        raise OSError("the backup's snapshot could not be written")
    state = service.settings.state_dir
    log_seq = copy_database(state / "events.db", target / "events.db")
    copy_database(state / "quarantine.db", target / "quarantine.db")
    shutil.copy2(service.settings.segments, target / "segments.yaml")
    return manifest(target, writer.seq, log_seq, service.engine.config.config_id)


def empty_target(path: Path) -> Path:
    """``path`` as a backup or restore target: absolute, and new or empty."""
    if not path.is_absolute():
        raise ValueError(f"{path}: give an absolute path")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path}: exists and is not an empty directory")
    return path


def copy_database(source: Path, target: Path) -> int:
    """A consistent copy of a SQLite database in WAL mode (its own read
    connection: safe beside the service's writes); the last event ``seq`` in it, if a log."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        row = dst.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchone()
        return int(dst.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]) if row else 0
    finally:
        dst.close()
        src.close()


def manifest(target: Path, snapshot_seq: int, log_seq: int, config_id: str) -> dict[str, Any]:
    doc = {
        "created_ms": time.time_ns() // 1_000_000,
        "snapshot_seq": snapshot_seq,
        "log_seq": log_seq,
        "config_id": config_id,
        "snapshot_version": snapshot.VERSION,
        "files": [f for f in FILES if (target / f).exists()],
    }
    (target / MANIFEST).write_text(json.dumps(doc, indent=1))
    return doc


def restore(source: Path, state_dir: Path) -> dict[str, Any]:
    """Copy a backup into an empty state directory; its manifest."""
    doc = json.loads((source / MANIFEST).read_text())
    if doc.get("snapshot_version") != snapshot.VERSION:
        raise ValueError(
            f"{source}: a backup of snapshot version {doc.get('snapshot_version')}; this reads {snapshot.VERSION}"
        )
    empty_target(state_dir).mkdir(parents=True, exist_ok=True)
    for name in doc["files"]:
        shutil.copy2(source / name, state_dir / name)
    return dict(doc)
