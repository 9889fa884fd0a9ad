"""Snapshots of the engine's state, so recovery replays only the log's tail.

A snapshot holds, as of one log sequence number, everything the engine
keeps: every profile (as its codec's JSON), memberships and last transitions
with their reasons, dedup keys, the online model (weights, scaler, one-hot
values, ADWIN's window, pending samples, its random state), the watermark and
counters. The format is explicit values, never pickle (reading a snapshot
runs no code from it): ``SFSNAP``, a version byte, then zlib-compressed JSON.
It is written to a temporary file and renamed into place (fsynced first
under ``power`` durability), so a crash while writing leaves the previous
snapshot whole. A snapshot of another version, or one that cannot be read,
raises ValueError; the service then rebuilds from the log.
"""

from __future__ import annotations

import os
import signal
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

MAGIC = b"SFSNAP"
VERSION = 2  # 1 was a pickle, which is never read: such a state is rebuilt from the log


def encode(state: dict[str, Any]) -> bytes:
    """An exported engine state as snapshot bytes."""
    return MAGIC + bytes([VERSION]) + zlib.compress(orjson.dumps(state), 1)


def decode(data: bytes) -> dict[str, Any]:
    """Snapshot bytes as a state to restore; ValueError naming what is wrong."""
    if not data.startswith(MAGIC) or len(data) <= len(MAGIC):
        raise ValueError("not a segflow snapshot of this format (an older or foreign file)")
    version = data[len(MAGIC)]
    if version != VERSION:
        raise ValueError(f"snapshot version {version}; this segflow reads {VERSION}")
    try:
        state = orjson.loads(zlib.decompress(data[len(MAGIC) + 1 :]))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise ValueError(f"snapshot damaged: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError("snapshot damaged: not a state")
    return state


def write(data: bytes, path: Path, fsync: bool = False) -> None:
    """Write snapshot bytes atomically: a temporary file, then a rename."""
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read(path: Path) -> dict[str, Any] | None:
    """A saved state, or None when there is no snapshot."""
    if not path.exists():
        return None
    return decode(path.read_bytes())


def _die_with(parent: int) -> None:
    """Make this (forked) process end when its parent does: a snapshot left
    writing by a killed service could otherwise rename an older state over
    what the restarted service wrote since (Linux; elsewhere it checks once)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(1)


class Writer:
    """Writes snapshots without stalling the service, as Redis's BGSAVE does:
    a forked child holds a copy-on-write image of the state as of the fork,
    encodes and writes it, and exits; the service goes on serving and polls
    for the outcome. The snapshot before is kept as ``previous``. Where fork
    is not available, the write happens in the caller."""

    def __init__(self, path: Path, previous: Path, fsync: bool) -> None:
        self.path, self.previous, self.fsync = path, previous, fsync
        self._child: int | None = None
        self.seq: int | None = None  # the log position the snapshot being written covers
        self.failures = 0

    @property
    def busy(self) -> bool:
        return self._child is not None

    def start(self, state: Callable[[], dict[str, Any]], seq: int, background: bool = True) -> bool:
        """Begin a snapshot of ``state()`` (covering the log up to ``seq``);
        False when one is being written already. In the foreground, it is
        written when this returns."""
        if self._child is not None:
            return False
        self.seq = seq
        if not background or not hasattr(os, "fork"):
            self._write(state())
            return True
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: write, and leave without running anything of the parent's
            code = 1
            try:
                _die_with(parent)
                self._write(state())
                code = 0
            finally:
                os._exit(code)
        self._child = pid
        return True

    def _write(self, state: dict[str, Any]) -> None:
        data = encode(state)
        if self.path.exists():
            os.replace(self.path, self.previous)
        write(data, self.path, self.fsync)

    def poll(self, block: bool = False) -> bool | None:
        """None while a child is writing (or none was started), else whether it succeeded."""
        if self._child is None:
            return None
        pid, status = os.waitpid(self._child, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        self._child = None
        ok = os.waitstatus_to_exitcode(status) == 0
        self.failures += not ok
        return ok
