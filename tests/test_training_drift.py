"""Drift and scheduled retraining: the PSI the service counts live equals the
offline one, `segflow drift` finds a shifted period, `segflow retrain` gives
a scheduler one JSON line and refuses to run twice at once."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli.main import app
from models.drift import SCORE, Monitor, Reference
from training.synthetic import generate

runner = CliRunner()
values = st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=1, max_size=200)


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


@settings(max_examples=100, deadline=None)
@given(train=values, live=values)
def test_live_counting_gives_the_offline_psi(train: list[float], live: list[float]) -> None:
    reference = Reference.of({"x": np.array(train), SCORE: np.array(train[::-1])})
    monitor = Monitor(reference)
    for a, b in zip(live, live[::-1], strict=True):
        monitor.observe({"x": a}, b)
    report = monitor.report()
    assert report["x"] == reference.psi("x", live) >= 0.0
    assert report[SCORE] == reference.psi(SCORE, live[::-1])


def test_drift_finds_a_shifted_period_and_retrain_suits_a_scheduler(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    history = generate(users=300, days=10, seed=4)
    history.write(tmp_path / "events.parquet")
    first = runner.invoke(app, ["retrain", "--table", str(tmp_path / "events.parquet"), "--tracking-uri", uri])
    assert first.exit_code == 0, first.output
    done = last_json(first.output)
    assert all(done["promoted"].values()) and set(done["reasons"]) == set(done["versions"])

    same = runner.invoke(app, ["drift", "--table", str(tmp_path / "events.parquet"), "--days", "3",
                               "--tracking-uri", uri, "--json"])  # fmt: skip
    assert same.exit_code == 0, same.output
    calm = last_json(same.output)
    assert calm["events"] > 1000 and set(calm["psi"]) == set(calm["status"])
    # the scores of the data trained on are not shifted (recencies do move as a young history ages)
    assert calm["status"][SCORE] != "shifted" and sum(v == "stable" for v in calm["status"].values()) >= 5, calm

    # the last three days: every price ten times higher, every view doubled in the cart
    events = history.events
    ts = pc.cast(events.column("ts"), pa.int64())
    late = pc.greater_equal(ts, pc.subtract(pc.max(ts), pa.scalar(3 * 86_400_000, pa.int64())))
    price = pc.if_else(late, pc.multiply(events.column("price"), 10.0), events.column("price"))
    kinds = pc.if_else(pc.and_(late, pc.equal(events.column("type"), "product_view")), "add_to_cart",
                       events.column("type"))  # fmt: skip
    shifted = events.set_column(events.schema.get_field_index("price"), "price", price)
    shifted = shifted.set_column(shifted.schema.get_field_index("type"), "type", kinds)
    import pyarrow.parquet as pq

    pq.write_table(shifted, tmp_path / "shifted.parquet")
    moved = runner.invoke(app, ["drift", "--table", str(tmp_path / "shifted.parquet"), "--days", "3",
                                "--tracking-uri", uri, "--json"])  # fmt: skip
    assert moved.exit_code == 0, moved.output
    report = last_json(moved.output)
    assert report["status"][SCORE] == "shifted" and report["psi"][SCORE] > calm["psi"][SCORE] + 0.25

    # a champion moved but the service could not be reloaded: said in the JSON line, exit 3
    other = f"sqlite:///{tmp_path}/other.db"
    unreachable = runner.invoke(app, ["retrain", "--table", str(tmp_path / "events.parquet"), "--tracking-uri", other,
                                      "--reload-url", "http://127.0.0.1:9", "--key", "k"])  # fmt: skip
    assert unreachable.exit_code == 3, unreachable.output
    assert "error" in last_json(unreachable.output)["reload"] and "Traceback" not in unreachable.output

    with open(tmp_path / "mlflow.retrain.lock", "w") as held:  # a retrain still running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = runner.invoke(app, ["retrain", "--table", str(tmp_path / "events.parquet"), "--tracking-uri", uri])
    assert busy.exit_code == 2 and "another retrain" in last_json(busy.output)["error"]
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    wrong = runner.invoke(app, ["retrain", "--table", str(tmp_path / "t.csv"), "--tracking-uri", uri])
    assert wrong.exit_code == 1 and "not a Parquet event table" in last_json(wrong.output)["error"]
    negative = runner.invoke(app, ["train", "--table", str(tmp_path / "events.parquet"), "--margin", "-1"])
    assert negative.exit_code == 2
