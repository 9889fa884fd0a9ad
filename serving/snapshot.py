"""Snapshots of the engine's state, so recovery replays only the log's tail.

A snapshot holds, as of one log sequence number: every profile (through
``features.codec``), memberships and last transitions, dedup keys, the
online model (its weights and pending samples), the watermark and counters.
It is written to a temporary file and renamed into place, so a crash while
writing leaves the previous snapshot whole. Recovery loads it and replays the
log after its sequence number through the same engine path.
"""

from __future__ import annotations

import os
import pickle
import zlib
from pathlib import Path
from typing import Any

from serving.engine import Engine

VERSION = 1


def save(engine: Engine, path: Path, fsync: bool = False) -> None:
    """Write the engine's state as of ``engine.seq``."""
    body = zlib.compress(pickle.dumps({"version": VERSION, **engine.export_state()}, pickle.HIGHEST_PROTOCOL), 1)
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(body)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any] | None:
    """A saved state, or None when there is no snapshot."""
    if not path.exists():
        return None
    state: dict[str, Any] = pickle.loads(zlib.decompress(path.read_bytes()))
    if state.get("version") != VERSION:
        raise ValueError(f"snapshot {path} has version {state.get('version')}; this segflow reads {VERSION}")
    return state
