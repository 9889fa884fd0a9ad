"""``segflow tune``: the thresholds rules compare with a score, chosen for a
target on an out-of-time evaluation set, written back into the config
(comments kept), previewed, and logged to MLflow.

The evaluation set is the later part of an event table's training set (one
cutoff per user per 30 minutes, a horizon's gap before it), scored by the
registered champions as the service scores (``intent`` made as settings say),
none on moments it learned (:mod:`training.tuning`: a champion fitted on them
is scored as its settings refitted or replayed, and the output says so).
Each entry threshold (``intent >= likely_buyer`` or ``>``) is chosen among
the values a threshold written with 4 decimal places can take, so the value
written flags exactly the moments it was chosen on; its exit partner
(``intent < likely_buyer_exit``) keeps a margin below it. A threshold an
entry rule compares with a feature is tuned only when named
(``--threshold``), on that feature's values at the same moments
(:func:`training.tuning.choose_threshold`); one used in several places, or
under a ``not``, is refused.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from cli.output import console, data_error, out, usage


def tune(
    target: Annotated[
        str,
        typer.Option(help="precision=P (most members reaching it), recall=R (fewest), or size=N (daily members)"),
    ],
    events: Annotated[Path, typer.Option(help="event table (Parquet) to choose on: its later part")],
    config: Annotated[Path, typer.Option(help="segments.yaml to rewrite")] = Path("config/segments.yaml"),
    exit_margin: Annotated[
        float | None, typer.Option(min=0.0, help="exit threshold this far below the entry (default: as now)")
    ] = None,
    horizon: Annotated[str, typer.Option(help="purchase label horizon")] = "24h",
    dry_run: Annotated[bool, typer.Option(help="show the choice and its preview, write nothing")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    threshold: Annotated[
        list[str] | None,
        typer.Option(help="tune only this threshold (repeat); one compared with a feature is tuned only when named"),
    ] = None,
) -> None:
    """Choose a segment config's thresholds for a target, write them back and preview the change."""
    import mlflow
    import pyarrow.compute as pc

    from features.events import format_ms
    from features.specs import parse_duration
    from features.table import read_table
    from models import registry
    from segments.config import ConfigError, rule_thresholds, threshold_reads
    from segments.writing import with_thresholds
    from serving.preview import preview
    from serving.regime import intent_feature_names, loads_config
    from serving.scorers import load_scorers
    from serving.settings import Settings
    from training.thresholds import parse_target, size_trade_off, trade_off
    from training.tuning import choose_threshold, evaluation_scores, fitted_until_of

    try:
        metric, goal = parse_target(target)
        horizon_ms = parse_duration(horizon) // timedelta(milliseconds=1)
    except ValueError as exc:
        raise usage(str(exc)) from None
    if not config.exists() or not events.exists():
        raise usage(f"{config if not config.exists() else events}: no such file")
    text = config.read_text()
    try:
        old = loads_config(text, str(config))
        table = read_table(events)
    except (ConfigError, ValueError) as exc:
        raise data_error(str(exc)) from None
    named = list(dict.fromkeys(threshold or []))
    unknown = [n for n in named if n not in old.thresholds]
    if unknown:
        raise usage(f"{config}: no threshold {unknown} (it has {sorted(old.thresholds)})")
    every = rule_thresholds(old)
    pairs = [t for t in every if t.spec is None or t.name in named]  # features only when named
    entries = list(
        {(t.name, t.segment): t for t in pairs if t.role == "entry" and (not named or t.name in named)}.values()
    )
    exits = {t.name for t in pairs if t.role == "exit"}
    reads = threshold_reads(old)
    compared = [n for n in named if n not in {e.name for e in entries}]
    if compared:
        if set(compared) <= exits:
            raise usage(f"{config}: {compared} is an exit: name its entry threshold, the exit keeps its margin below")
        if any(reads.get(n, 0) for n in compared):
            raise usage(f"{config}: {compared} is read where tune cannot follow it (under not, in an exit rule "
                        "against a feature, or against another value): tune it by hand")  # fmt: skip
        raise usage(f"{config}: {compared} compared with no score or feature in a segment's rule")
    partners = {t.name for t in pairs if t.role == "exit" and any(t.segment == e.segment and t.score == e.score
                                                                  for e in entries)}  # fmt: skip
    uses: dict[str, set[tuple[str, str, str]]] = {}
    for t in every:
        uses.setdefault(t.name, set()).add((t.segment, t.score, t.role))
    tuned = {e.name for e in entries} | partners
    shared = sorted(n for n in tuned if len(uses[n]) > 1 or reads.get(n, 0) != sum(t.name == n for t in every))
    if shared:
        raise usage(f"{config}: thresholds {shared} are used in several places or under not: tune them by hand")
    if not entries:
        raise usage(f"{config}: no rule compares a threshold with a score (intent, intent_batch, intent_online); "
                    "name one compared with a feature with --threshold")  # fmt: skip
    try:  # a layout the write-back would change is refused before the work, not after it
        with_thresholds(text, {t.name: old.thresholds[t.name] for t in pairs})
    except ValueError as exc:
        raise data_error(f"{config}: {exc}") from None

    settings = Settings()
    scorers = load_scorers(intent_feature_names(), settings.model_alias, tracking_uri or settings.tracking_uri)
    scorers.use_intent(settings.intent)
    needs = {"intent_batch": scorers.batch is not None, "intent_online": not scorers.fresh,
             "intent": scorers.batch is not None or not scorers.fresh}  # fmt: skip
    missing = sorted({e.score for e in entries if e.spec is None and not needs.get(e.score, False)})
    if missing:
        raise data_error(f"no registered champion makes {missing}: run `segflow train` first")
    try:
        fitted_until = fitted_until_of(scorers.versions)
        evaluation = evaluation_scores(table, scorers.online, scorers.batch, fitted_until, horizon_ms)
    except ValueError as exc:
        raise data_error(f"{events}: {exc}") from None
    scores = scorers.with_intent(evaluation.scores["intent_online"], evaluation.scores.get("intent_batch"))
    y = evaluation.y
    specs = list(dict.fromkeys(e.spec for e in entries if e.spec is not None))
    if specs:  # the features named thresholds are compared with, at the same moments
        values = evaluation.features(specs)
        scores |= {spec.name: values[spec.name].to_numpy(dtype=np.float64) for spec in specs}

    chosen: dict[str, float] = {}
    figures: dict[str, dict[str, float]] = {}
    for entry in entries:
        try:
            choice = choose_threshold(scores[entry.score], entry.op, y, metric, goal, evaluation.users,
                                      evaluation.at_ms, entry.recency)  # fmt: skip
        except ValueError as exc:
            raise data_error(f"{entry.name} ({entry.score}): {exc}") from None
        p, value, written, flagged = choice.grid, choice.on_grid, choice.written, choice.flagged
        below = entry.op in ("<", "<=")  # chosen on the values negated
        chosen[entry.name] = written
        sizes = size_trade_off(p, evaluation.users, evaluation.at_ms)
        figures[entry.name] = {
            "precision": float(y[flagged].mean()) if flagged.any() else 0.0,
            "recall": float(y[flagged].sum() / max(y.sum(), 1)),
            "flagged": float(flagged.mean()),
            "daily_members": float(sizes.loc[sizes.threshold == value, "daily_members"].iloc[0]),
        }
        for partner in pairs:
            if partner.role == "exit" and partner.segment == entry.segment and partner.score == entry.score:
                gap = (
                    exit_margin
                    if exit_margin is not None
                    else old.thresholds[entry.name] - old.thresholds[partner.name]
                )
                if value - gap <= 0:
                    raise data_error(
                        f"{partner.name}: {value} - {gap:g} leaves no exit above 0: a smaller --exit-margin"
                    )
                chosen[partner.name] = round(value - gap, 4)
        table_rows = trade_off(y, p).merge(sizes, on="threshold")
        if below:  # shown as written, in ascending order like the rest
            table_rows = table_rows.assign(threshold=-table_rows["threshold"]).iloc[::-1].reset_index(drop=True)
        if not as_json:
            _show(entry.name, table_rows, written)

    try:
        new_text = with_thresholds(text, chosen)
    except ValueError as exc:
        raise data_error(f"{config}: {exc}") from None
    new = loads_config(new_text, str(config))
    history = table.take(pc.sort_indices(table, [("received_at", "ascending")]))
    result = preview(old, new, history, scorers)
    changed = {s.name: s.as_dict(10) for s in result.segments if s.status != "same" or s.only_new or s.only_old}
    registry.configure(tracking_uri or settings.tracking_uri)
    mlflow.set_experiment("segflow-thresholds")
    with mlflow.start_run(run_name=f"tune-{metric}-{goal:g}") as run:
        mlflow.log_params({"target": target, "config": str(config), "events": str(events), "written": not dry_run,
                           **{f"was.{k}": old.thresholds[k] for k in chosen},
                           **{f"threshold.{k}": v for k, v in chosen.items()}})  # fmt: skip
        mlflow.log_metrics({f"{name}.{k}": v for name, f in figures.items() for k, v in f.items()})
        mlflow.log_metric("evaluation_moments", len(y))
        mlflow.log_text(new_text, "segments.yaml")
        mlflow.set_tags({**{f"model.{k}": v for k, v in scorers.versions.items()},
                         **{f"scored.{k}": v for k, v in evaluation.how.items()}})  # fmt: skip
    if not dry_run:  # after the run is logged, and whole: a reloading service never reads half a file
        staged = config.with_name(config.name + ".tuning")
        staged.write_text(new_text)
        os.replace(staged, config)
    shown: dict[str, Any] = {"target": {metric: goal}, "was": {k: old.thresholds[k] for k in chosen}, "chosen": chosen,
                             "at_chosen": figures, "written": None if dry_run else str(config), "preview": changed,
                             "evaluation_moments": len(y), "evaluation_from": format_ms(evaluation.start_ms),
                             "scored": evaluation.how, "seen_in_training": evaluation.seen_in_training,
                             "models": scorers.versions,
                             "run_id": run.info.run_id}  # fmt: skip
    if as_json:
        print(json.dumps(shown))
        return
    for name, value in chosen.items():
        out.print(f"{name}: {old.thresholds[name]} -> {value}", highlight=False)
    for made, how in evaluation.how.items():
        out.print(f"  {made} scored {how}", highlight=False)
    for name, seg in changed.items():
        out.print(f"  {name}: members at the end {seg['size_old']:,} -> {seg['size_new']:,}; over the table, "
                  f"{seg['would_enter']:,} enters and {seg['would_leave']:,} exits only the new thresholds make",
                  highlight=False)  # fmt: skip
    console.print(f"{'dry run: nothing written' if dry_run else f'written to {config}'}; logged run {run.info.run_id}")


def _show(name: str, rows: Any, value: float) -> None:
    """The trade-off around the choice: ten thresholds spread over the range, and the chosen one."""
    picks = sorted(
        set(np.linspace(0, len(rows) - 1, 10).astype(int).tolist()) | set(rows.index[rows.threshold == value])
    )
    out.print(f"[bold]{name}[/bold]: threshold, precision, recall, share of moments flagged, mean daily members")
    for i in picks:
        r = rows.iloc[i]
        mark = "  <- chosen" if r.threshold == value else ""
        out.print(f"  {r.threshold:.4f}  {r.precision:.3f}  {r.recall:.3f}  {r.flagged:.3f}  {r.daily_members:8.1f}"
                  f"{mark}", highlight=False)  # fmt: skip
