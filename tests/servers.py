"""A real ``segflow serve`` (uvicorn) in a child process the test owns, for
the tests that need a server as a user runs it: SIGKILL, restarts, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serving.server import free_port

ROOT = Path(__file__).resolve().parent.parent
WRITE, READ = ("w" * 8, ""), ("r" * 8, "")
SEGMENTS = ROOT / "config" / "segments.yaml"


class Server:
    """``segflow serve`` in a child process we own (stopped by its PID)."""

    def __init__(
        self,
        state: Path,
        clock: str = "event",
        segments: Path = SEGMENTS,
        tracking_uri: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.segments = segments
        self.tracking_uri = tracking_uri or f"sqlite:///{state.parent / 'mlflow.db'}"
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        env = {
            **os.environ,
            "SEGFLOW_WRITE_KEYS": WRITE[0],
            "SEGFLOW_READ_KEYS": READ[0],
            "SEGFLOW_TRACKING_URI": self.tracking_uri,
            "SEGFLOW_PII_KEY": "00" * 32,
            **self.env,
        }
        cmd = [sys.executable, "-m", "cli", "serve", "--port", str(self.port), "--clock", self.clock,
               "--state-dir", str(self.state), "--segments", str(self.segments)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
