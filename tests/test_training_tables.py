"""``segflow train intent`` on labelled tables: data errors exit 1 naming the
file, column and rows; cross-validation with intervals; a nested search;
parameters from a file; every run logged; registration under its own name."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def table(n: int = 700, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "x": x,
            "noise": rng.normal(size=n),
            "plan": rng.choice(["gold", "basic"], n),
            "bought": np.where(x + rng.normal(scale=0.7, size=n) > 0.8, "yes", "no"),
        }
    )


def train(tmp_path: Path, *args: str) -> tuple[int, str]:
    done = runner.invoke(app, ["train", "intent", *args, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    return done.exit_code, done.output


def test_data_errors_exit_1_naming_the_file_column_and_rows(tmp_path: Path) -> None:
    typo = table()
    typo["x"] = typo["x"].astype(object)
    typo.loc[[3, 250], "x"] = "12,5"
    typo.to_csv(tmp_path / "typo.csv", index=False)
    code, output = train(tmp_path, "--table", str(tmp_path / "typo.csv"), "--label", "bought")
    assert code == 1, output
    assert "typo.csv" in output and "'x'" in output and "lines 5, 252" in output and "--categorical x" in output
    typo.astype({"x": str}).to_parquet(tmp_path / "typo.parquet")  # a text column of numbers, and two typos
    code, output = train(tmp_path, "--table", str(tmp_path / "typo.parquet"), "--label", "bought")
    assert code == 1 and "typo.parquet" in output and "rows 4, 251" in output
    # named categorical, the same column trains
    code, output = train(tmp_path, "--table", str(tmp_path / "typo.csv"), "--label", "bought", "--categorical", "x")
    assert code == 0, output

    (tmp_path / "empty.csv").write_text("")
    code, output = train(tmp_path, "--table", str(tmp_path / "empty.csv"), "--label", "bought")
    assert code == 1 and "empty.csv" in output and "empty" in output
    (tmp_path / "header.csv").write_text("x,bought\n")
    code, output = train(tmp_path, "--table", str(tmp_path / "header.csv"), "--label", "bought")
    assert code == 1 and "header.csv: no rows" in output

    labels = table()
    labels.loc[[7], "bought"] = "maybe"
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code, output = train(tmp_path, "--table", str(tmp_path / "labels.csv"), "--label", "bought")
    assert code == 1 and "labels.csv" in output and "'bought'" in output and "maybe" in output and "line 9" in output
    code, output = train(tmp_path, "--table", str(tmp_path / "labels.csv"), "--label", "nope")
    assert code == 1 and "no label column 'nope'" in output

    # `segflow train` given a CSV says what it reads, without a traceback
    done = runner.invoke(app, ["train", "--table", str(tmp_path / "labels.csv")])
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert "labels.csv" in done.output and "segflow train intent --table" in done.output


def test_cross_validation_and_a_nested_search_report_folds_mean_and_interval(tmp_path: Path) -> None:
    table().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "params.yaml").write_text("learning_rate: 0.1\nnum_leaves: 7\n")
    code, output = train(
        tmp_path, "--table", str(tmp_path / "t.csv"), "--label", "bought", "--cv", "3", "--tune", "4",
        "--params", str(tmp_path / "params.yaml"), "--json", "--register", "my-table-model",
    )  # fmt: skip
    assert code == 0, output
    shown = json.loads(output.strip().splitlines()[-1])
    for name in ("default", "tuned"):
        cv = shown["cv"][name]
        assert len(cv["folds"]) == 3 and len(cv["params"]) == 3
        lo, hi = cv["interval95"]["pr_auc"]
        folds = [f["pr_auc"] for f in cv["folds"]]
        half = stats.t.ppf(0.975, 2) * np.std(folds, ddof=1) / np.sqrt(3)  # a 95% t-interval over 3 folds
        assert (lo, hi) == pytest.approx((np.mean(folds) - half, np.mean(folds) + half)) and hi > lo
        assert cv["mean"]["pr_auc"] == pytest.approx(np.mean([f["pr_auc"] for f in cv["folds"]]))
    assert all(p["learning_rate"] == 0.1 and p["num_leaves"] == 7 for p in shown["cv"]["default"]["params"])
    assert shown["version"] == "1"

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(shown["run_id"])
    assert run.data.metrics["cv_tuned.mean.pr_auc"] == pytest.approx(shown["cv"]["tuned"]["mean"]["pr_auc"])
    assert run.data.params["label"] == "bought" and "learning_rate" in run.data.params
    assert run.data.tags["git_commit"] and run.data.tags["data_digest"]
    assert run.inputs.dataset_inputs[0].dataset.digest == run.data.tags["data_digest"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/precision_recall.png", "plots/calibration.png"} <= artifacts
    assert client.get_registered_model("my-table-model").latest_versions
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert not client.search_registered_models(filter_string="name = 'segflow-intent-batch'")

    # without --register the run is logged all the same; the service's names are refused
    code, output = train(tmp_path, "--table", str(tmp_path / "t.csv"), "--label", "bought")
    assert code == 0 and "logged run" in output
    code, output = train(tmp_path, "--table", str(tmp_path / "t.csv"), "--label", "bought",
                         "--register", "segflow-intent-batch")  # fmt: skip
    assert code == 2 and "service's model" in output


def test_a_small_imbalanced_table_trains_or_says_how_many_rows_it_needs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for seed in range(4):
        frame = table(n=400, seed=seed)
        positives = np.flatnonzero(frame["bought"] == "yes")
        frame.loc[positives[40:], "bought"] = "no"  # 40 buyers in 400 rows
        frame.to_csv(tmp_path / "small.csv", index=False)
        code, output = train(tmp_path, "--table", str(tmp_path / "small.csv"), "--label", "bought",
                             "--cv", "3", "--tune", "2", "--seed", str(seed))  # fmt: skip
        assert code == 0, output
    frame = table(n=300)
    frame["bought"] = np.where(rng.random(300) < 0.05, "yes", "no")  # about 15 buyers
    frame.to_csv(tmp_path / "tiny.csv", index=False)
    code, output = train(tmp_path, "--table", str(tmp_path / "tiny.csv"), "--label", "bought")
    assert code == 1 and "tiny.csv" in output and "at least 30 of each" in output and "Traceback" not in output


def test_parameters_lightgbm_does_not_know_or_refuses_are_data_errors(tmp_path: Path) -> None:
    table().to_csv(tmp_path / "t.csv", index=False)
    for text, said in (("num_leavs: 7\n", "no parameters ['num_leavs']"), ("num_leaves: -3\n", "LightGBM refused"),
                       ("objective: regression\n", "binary objective"), ("- 1\n", "a mapping")):  # fmt: skip
        (tmp_path / "p.yaml").write_text(text)
        code, output = train(tmp_path, "--table", str(tmp_path / "t.csv"), "--label", "bought",
                             "--params", str(tmp_path / "p.yaml"))  # fmt: skip
        assert code == 1 and said in output and "p.yaml" in output and "Traceback" not in output, output
