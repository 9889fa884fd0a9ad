"""`make run`'s demo at a small size: trains, serves, replays, summarizes, stops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end_and_prints_the_summary(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "cli", "demo", "--users", "150", "--train-users", "400", "--train-days", "7",
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "trained and registered" in out
    assert "segment sizes at the end of the day" in out and "busiest transitions" in out
    assert "why user" in out and "the server has stopped" in out
    assert "segment changes delivered to" in out and "(0 refused signatures)" in out and "pending: 0" in out
