"""``segflow train``, ``segflow train intent`` and ``segflow evaluate``: every run logged to MLflow."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pandas as pd
import typer
import yaml
from lightgbm.basic import LightGBMError

from cli.output import DEFAULT_DAYS, DEFAULT_TABLE, DEFAULT_USERS, console, data_error, out, usage
from features.table import read_table
from training.synthetic import generate as generate_history

train_app = typer.Typer(help="Train models and track them in MLflow.", invoke_without_command=True)

RELOAD_FAILED = 3
SERVING_NAMES = ("segflow-intent-batch", "segflow-intent-online", "segflow-clusters")


def history(table: Path | None, users: int, days: int, seed: int) -> Path:
    """The event table to train on: the one given, else the default synthetic
    history (generated when missing)."""
    if table is not None:
        if not table.exists():
            raise usage(f"{table}: no such event table")
        return table
    if not DEFAULT_TABLE.exists():
        console.print(f"generating a synthetic history ({users:,} users, {days} days) → {DEFAULT_TABLE}")
        generate_history(users=users, days=days, seed=seed).write(DEFAULT_TABLE)
    return DEFAULT_TABLE


def _events(path: Path) -> Any:
    """The event table at ``path``, or a data error saying what ``train`` reads."""
    try:
        return read_table(path)
    except ValueError as exc:
        hint = ""
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            hint = (
                "; `segflow train` reads an event table (Parquet, from `segflow generate` or `segflow import`). "
                f"To train on a labelled feature table: segflow train intent --table {path} --label COLUMN"
            )
        raise data_error(f"{exc}{hint}") from None


def _horizon_ms(horizon: str) -> int:
    from features.specs import parse_duration

    try:
        return parse_duration(horizon) // timedelta(milliseconds=1)
    except ValueError as exc:
        raise usage(str(exc)) from None


@train_app.callback()
def train(
    ctx: typer.Context,
    table: Annotated[Path | None, typer.Option(help="event table (default: the synthetic history)")] = None,
    horizon: Annotated[str, typer.Option(help="purchase label horizon, e.g. 24h or 30m")] = "24h",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    register: Annotated[bool, typer.Option(help="register the models (alias champion if better)")] = True,
    margin: Annotated[
        float | None, typer.Option(min=0.0, help="how much better a model must score to become champion")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object of metrics")] = False,
    users: Annotated[int, typer.Option(help="users in a generated history")] = DEFAULT_USERS,
    days: Annotated[int, typer.Option(help="days in a generated history")] = DEFAULT_DAYS,
) -> None:
    """Train the batch and online intent models and the clusters on an event table."""
    if ctx.invoked_subcommand is not None:
        return
    from models import registry
    from training.pipelines import train_all
    from training.promotion import DEFAULT_MARGINS
    from training.synthetic import truth_paths

    horizon_ms = _horizon_ms(horizon)
    path = history(table, users, days, seed)
    events = _events(path)
    users_path, intent_path = truth_paths(path)
    users_truth = pd.read_parquet(users_path) if users_path.exists() else None
    intent_truth = pd.read_parquet(intent_path) if intent_path.exists() else None
    uri = registry.configure(tracking_uri)
    console.print(f"training on {path} ({events.num_rows:,} events), tracking at {uri}")
    margins = dict.fromkeys(DEFAULT_MARGINS, margin) if margin is not None else None
    try:
        result = train_all(
            events, users_truth, intent_truth, horizon_ms=horizon_ms, seed=seed, register=register,
            progress=lambda msg: console.print(msg), source=str(path), margins=margins,
        )  # fmt: skip
    except ValueError as exc:
        raise data_error(str(exc)) from None
    if as_json:
        shown = {"metrics": result.metrics, "versions": result.versions, "promoted": result.promoted,
                 "reasons": result.reasons, "seconds": result.seconds}  # fmt: skip
        out.print_json(json.dumps(shown))
        return
    for name, metrics in result.metrics.items():
        out.print(f"[bold]{name}[/bold]: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    for name, version in result.versions.items():
        out.print(f"registered {name} v{version}: {result.reasons[name]}", highlight=False)


def _params(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.exists():
        raise usage(f"{path}: no such parameters file")
    try:
        params = yaml.safe_load(path.read_text())  # YAML, so JSON too
    except yaml.YAMLError as exc:
        raise data_error(f"{path}: not YAML or JSON ({exc})") from None
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise data_error(f"{path}: expected a mapping of LightGBM parameter names to values")
    from training.search import unknown_params

    unknown = unknown_params(params)
    if unknown:
        raise data_error(f"{path}: LightGBM has no parameters {unknown} (a typo?)")
    if params.get("objective", "binary") not in ("binary", "cross_entropy", "xentropy"):
        raise data_error(f"{path}: objective {params['objective']!r}: purchase intent is a binary objective")
    return params


@train_app.command("intent")
def train_intent(
    table: Annotated[Path, typer.Option(help="labeled feature table, CSV or Parquet")],
    label: Annotated[str, typer.Option(help="the label column")],
    seed: Annotated[int, typer.Option(help="seed of the splits, folds and search")] = 0,
    cv: Annotated[int, typer.Option(help="stratified k-fold figures with a 95% interval (0: none)")] = 0,
    tune: Annotated[int, typer.Option(help="trials of a hyperparameter search (Optuna), nested in the folds")] = 0,
    params: Annotated[Path | None, typer.Option(help="LightGBM parameters, YAML or JSON")] = None,
    categorical: Annotated[list[str] | None, typer.Option(help="a column to read as categories")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object of metrics")] = False,
    register: Annotated[str | None, typer.Option(help="register the model under this name")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Train the batch intent model on any labeled feature table; the run is logged to MLflow
    (experiment segflow-tables) with its parameters, figures and plots."""
    from training.tabular import TableError, read_features, train_on_table
    from training.tracking import log_table_run

    if cv == 1 or cv < 0:
        raise usage("--cv needs at least 2 folds")
    if tune < 0:
        raise usage("--tune is a number of trials")
    if register in SERVING_NAMES:
        raise usage(f"--register {register}: that name is the service's model; register a table's model apart")
    given = _params(params)
    try:
        frame = read_features(table)
        result = train_on_table(frame, label, seed, given, cv=cv, tune=tune, categorical=categorical or ())
    except FileNotFoundError as exc:
        raise usage(str(exc)) from None
    except ValueError as exc:  # TableError names the file; anything else the fit refused is about the data too
        raise data_error(str(exc) if isinstance(exc, TableError) else f"{table}: {exc}") from None
    except LightGBMError as exc:  # a parameter's value LightGBM refuses
        raise data_error(f"{params or 'the parameters'}: LightGBM refused them: {str(exc).splitlines()[0]}") from None
    run_id, version = log_table_run(table, label, seed, result, tracking_uri, register)
    metrics: dict[str, Any] = {k: (int(v) if k in ("n_train", "n_test") else v) for k, v in result.metrics.items()}
    shown: dict[str, Any] = {**metrics, "params": result.params, "run_id": run_id}
    if version is not None:
        shown["version"] = version
    if result.cv:
        shown["cv"] = {name: c.as_dict() for name, c in result.cv.items()}
    if as_json:
        print(json.dumps(shown))
        return
    out.print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    for name, c in result.cv.items():
        lo, hi = c.interval["pr_auc"]
        out.print(f"{cv}-fold ({name}): PR-AUC {c.mean['pr_auc']:.4f} [{lo:.4f}, {hi:.4f}], "
                  f"ROC-AUC {c.mean['roc_auc']:.4f}")  # fmt: skip
    out.print(f"logged run {run_id}" + (f", registered {register} v{version}" if version else ""))


def evaluate(
    table: Annotated[Path | None, typer.Option(help="event table (default: the synthetic history)")] = None,
    horizon: Annotated[str, typer.Option(help="purchase label horizon")] = "24h",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Evaluate the registered champions on an event table's later part; the figures are
    logged to MLflow (experiment segflow-evaluations) with the versions scored."""
    from models import registry
    from training.champions import evaluate_champions

    path = history(table, DEFAULT_USERS, DEFAULT_DAYS, 0)
    registry.configure(tracking_uri)
    events = _events(path)
    report = evaluate_champions(events, _horizon_ms(horizon), str(path))
    if not report.versions:
        raise usage("no champion registered: run `segflow train` first")
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    for name, m in report.metrics.items():
        if name == "clusters":
            line = f"[bold]clusters[/bold]: k={int(m['k'])}, silhouette {m['silhouette']:.3f}"
            if "persona_ari" in m:
                line += f", persona ARI {m['persona_ari']:.3f}"
            out.print(line)
        else:
            out.print(
                f"[bold]{name.replace('_', ' ')}[/bold] v{report.versions[name]}: ROC-AUC {m['roc_auc']:.3f}, "
                f"PR-AUC {m['pr_auc']:.3f}, Brier {m['brier']:.3f}, ECE {m['ece']:.3f}"
            )


def drift(
    table: Annotated[Path | None, typer.Option(help="event table (default: the synthetic history)")] = None,
    days: Annotated[float, typer.Option(min=0.01, help="the table's latest days to compare")] = 7.0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """How far the latest events have moved from what the batch champion was trained on:
    the population stability index of its scores and top features (above 0.25: shifted)."""
    from models import registry
    from training.drift_report import drift_report

    path = history(table, DEFAULT_USERS, DEFAULT_DAYS, 0)
    registry.configure(tracking_uri)
    model = registry.load(registry.INTENT_BATCH)
    if model is None:
        raise usage("no batch champion registered: run `segflow train` first")
    try:
        report = drift_report(_events(path), model, days)
    except ValueError as exc:
        raise data_error(f"{path}: {exc}") from None
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    status = report.as_dict()["status"]
    assert isinstance(status, dict)
    out.print(f"drift over {report.events:,} moments (a user's per 30 minutes) of the last {days:g} days of {path}:")
    for name, value in sorted(report.psi.items(), key=lambda kv: -kv[1]):
        out.print(f"  {name:<40} PSI {value:7.4f}  {status[name]}", highlight=False)


def retrain(
    table: Annotated[Path, typer.Option(help="event table to train on (Parquet)")],
    horizon: Annotated[str, typer.Option(help="purchase label horizon")] = "24h",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    reload_url: Annotated[str | None, typer.Option(help="a running server to reload when a champion moved")] = None,
    key: Annotated[str | None, typer.Option(envvar="SEGFLOW_ADMIN_KEY", help="admin key for the reload")] = None,
) -> None:
    """Train, compare with the champions, promote the better (by the margin), and reload a
    running service when a champion moved: one JSON line, for a scheduler. Exit 0 done
    (promoted or kept), 1 data error, 2 usage error or another retrain running, 3 the
    reload failed (the champions moved all the same)."""
    import fcntl

    from cli.admin import call
    from models import registry
    from training.pipelines import train_all

    def refuse(message: str, code: int) -> typer.Exit:
        print(json.dumps({"error": message}))  # the scheduler reads one JSON line whatever happens
        return (usage if code == 2 else data_error)(message)

    if not table.exists():
        raise refuse(f"{table}: no such event table", 2)
    uri = registry.configure(tracking_uri)
    lock_path = Path(uri.removeprefix("sqlite:///")).with_suffix(".retrain.lock") if uri.startswith("sqlite:///") \
        else Path(".segflow-retrain.lock")  # fmt: skip
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refuse(f"another retrain holds {lock_path}", 2) from None
        try:
            events = read_table(table)
            result = train_all(events, horizon_ms=_horizon_ms(horizon), seed=seed, source=str(table))
        except ValueError as exc:
            raise refuse(str(exc), 1) from None
    done: dict[str, Any] = {"versions": result.versions, "promoted": result.promoted, "reasons": result.reasons,
                            "metrics": result.metrics}  # fmt: skip
    failed = False
    if reload_url is not None and any(result.promoted.values()):
        try:
            done["reload"] = call("POST", "/v1/admin/reload", reload_url, key)
        except (typer.Exit, httpx.HTTPError) as exc:
            failed, done["reload"] = True, {"error": str(exc) or "the server refused the reload (see above)"}
    print(json.dumps(done))
    if failed:
        raise typer.Exit(RELOAD_FAILED)
