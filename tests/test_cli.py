"""The ``segflow`` command: generate, import, inspect, and its exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_generate_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "h.parquet"
    result = runner.invoke(app, ["generate", "--users", "40", "--days", "2", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "events by type" in result.output and out.exists()
    result = runner.invoke(app, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["users"] <= 40 and summary["events"] == sum(summary["by_type"].values())
    assert [s["step"] for s in summary["funnel"]] == ["product_view", "add_to_cart", "checkout_start", "purchase"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["inspect", str(tmp_path / "missing.parquet")]).exit_code == 2
    assert runner.invoke(app, ["generate", "--users", "0"]).exit_code == 2
    assert runner.invoke(app, ["import", "nosuch", "x", "--out", "y"]).exit_code == 2
    src = tmp_path / "t.csv"
    src.write_text("a,b\n")
    result = runner.invoke(app, ["import", "table", str(src), "--out", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and "--mapping" in result.output


def test_data_errors_exit_1(tmp_path: Path) -> None:
    src = tmp_path / "tb.csv"
    src.write_text("1,2,3,pv,1511658000\n1,2,3,zz,1511658000\n")
    result = runner.invoke(app, ["import", "taobao", str(src), "--out", str(tmp_path / "o.parquet")])
    assert result.exit_code == 1
    assert "tb.csv:2: unknown behavior_type 'zz'" in result.output.replace("\n", "")


def test_installed_entry_point(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("segflow")
    out = tmp_path / "h.parquet"
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(
        [str(exe), "generate", "--users", "10", "--days", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_replay_feeds_a_running_server(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from features.table import write_table
    from models.intent_online import OnlineIntentModel
    from serving.app import create_app
    from serving.regime import intent_feature_names
    from serving.scorers import Scorers
    from serving.server import ServerThread
    from serving.settings import Settings
    from training.synthetic import generate

    history = generate(30, 1, 3)
    write_table(history.events, tmp_path / "day.parquet")
    settings = Settings(state_dir=tmp_path / "state", clock="event", write_keys=[SecretStr("wk-secret")],
                        read_keys=[SecretStr("rk-secret")], tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")  # fmt: skip
    with ServerThread(create_app(settings, Scorers(OnlineIntentModel(), intent_feature_names()))) as url:
        args = ["replay", str(tmp_path / "day.parquet"), "--url", url, "--speed", "max", "--key", "wk-secret"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["accepted"] == history.events.num_rows
        bad = CliRunner().invoke(app, ["replay", str(tmp_path / "day.parquet"), "--url", url, "--speed", "fast"])
        assert bad.exit_code == 2 and "speed" in bad.output
