"""``segflow``: generate, import and inspect event data; train; test segments; serve and replay.

Exit codes: 0 success, 1 data errors (reported row by row, with a summary),
2 usage errors.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import admin, demo, destinations, serve, tune
from cli import train as train_commands
from cli.output import DATA_ERRORS, DEFAULT_DAYS, DEFAULT_TABLE, DEFAULT_USERS, console, data_error, out, usage
from features.pseudonyms import Pseudonymizer, load_key
from features.segment_spec import SegmentParser
from features.specs import Spec
from features.table import read_table, write_table
from training.importers import ColumnMapping, ImportReport, import_segment_jsonl, import_table, import_taobao
from training.summary import Summary, summarize
from training.synthetic import generate as generate_history

app = typer.Typer(
    help="Real-time, ML-driven segmentation for email personalization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Source(str, Enum):
    taobao = "taobao"
    segment_jsonl = "segment-jsonl"
    table = "table"


def print_summary(summary: Summary, title: str) -> None:
    span = f"{summary.first:%Y-%m-%d %H:%M} → {summary.last:%Y-%m-%d %H:%M} UTC" if summary.first else "empty"
    out.print(f"[bold]{title}[/bold]: {summary.events:,} events, {summary.users:,} users, {span}")
    types = Table("type", "events", "share", title="events by type")
    for name, n in summary.by_type:
        types.add_row(name, f"{n:,}", f"{n / max(summary.events, 1):.1%}")
    out.print(types)
    funnel = Table("step", "users", "of viewers", title="funnel (users reaching each step)")
    for step, n, share in summary.funnel:
        funnel.add_row(step, f"{n:,}", f"{share:.1%}")
    out.print(funnel)


@app.command()
def generate(
    out_path: Annotated[Path, typer.Option("--out", help="event table to write (Parquet)")] = DEFAULT_TABLE,
    users: Annotated[int, typer.Option(min=1, help="number of shoppers")] = DEFAULT_USERS,
    days: Annotated[int, typer.Option(min=1, help="days of history")] = DEFAULT_DAYS,
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same history")] = 0,
) -> None:
    """Generate a seeded synthetic history, with ground truth saved beside it."""
    with Progress(
        TextColumn("generating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} h"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("generate", total=days * 24)
        history = generate_history(
            users=users, days=days, seed=seed, progress=lambda done, total: progress.update(task, completed=done)
        )
    events, users_path, truth = history.write(out_path)
    print_summary(summarize(history.events), str(events))
    out.print(f"ground truth: {users_path}, {truth}")


@app.command("import")
def import_(
    source: Annotated[Source, typer.Argument(help="taobao, segment-jsonl or table")],
    inputs: Annotated[list[Path], typer.Argument(help="input files")],
    out_path: Annotated[Path, typer.Option("--out", help="event table to write (Parquet)")],
    mapping: Annotated[Path | None, typer.Option(help="column mapping YAML (for table)")] = None,
) -> None:
    """Import real event data into an event table."""
    for path in inputs:
        if not path.exists():
            raise usage(f"{path}: no such file")
    report = ImportReport()
    try:
        if source is Source.taobao:
            table, report = import_taobao(inputs, report)
        elif source is Source.segment_jsonl:
            table, report = import_segment_jsonl(inputs, SegmentParser(Pseudonymizer(load_key())), report)
        else:
            if mapping is None:
                raise usage("import table needs --mapping FILE (see config/mappings/)")
            table, report = import_table(inputs, ColumnMapping.load(mapping), report)
    except ValueError as exc:
        raise data_error(str(exc)) from None
    write_table(table, out_path)
    for src, line, reason in report.errors[:50]:
        console.print(f"{src}:{line}: {reason}")
    if report.rejected > 50:
        console.print(f"... and {report.rejected - 50:,} more rejected rows")
    out.print(f"read {report.rows:,} rows: imported {report.imported:,}, rejected {report.rejected:,} → {out_path}")
    out.print(json.dumps(dict(report.by_type.most_common())))
    if report.rejected:
        raise typer.Exit(DATA_ERRORS)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="event table (Parquet)")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Summarize an event table: counts by type, users, time span, funnel."""
    try:
        table = read_table(path)
    except FileNotFoundError as exc:
        raise usage(str(exc)) from None
    except ValueError as exc:
        raise data_error(str(exc)) from None
    summary = summarize(table)
    if as_json:
        out.print_json(json.dumps(summary.as_dict()))
    else:
        print_summary(summary, str(path))


segments_app = typer.Typer(help="Segment rules: validate, test with fixtures, diff.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")


def _known_features() -> list[Spec]:
    from features.defaults import RULE_SPECS

    return list(RULE_SPECS)


@segments_app.command("validate")
def segments_validate(
    path: Annotated[Path, typer.Argument(help="segments.yaml")],
    events: Annotated[
        Path | None, typer.Option(help="an event table (Parquet): warn of properties none carries")
    ] = None,
    strict: Annotated[bool, typer.Option(help="such a warning is an error (exit 1)")] = False,
) -> None:
    """Check a segment config: exit 0 valid, 1 invalid (every error listed), 2 usage. Property
    names no feature declares and no event carries (misspelled?) are warned of."""
    from features.table import read_table
    from segments.config import ConfigError, load
    from segments.vocabulary import carried, unknown_properties

    if not path.exists():
        raise usage(f"{path}: no such file")
    try:
        config = load(path, _known_features())
    except ConfigError as exc:
        for problem in exc.problems:
            console.print(problem, markup=False, highlight=False)
        console.print(f"{len(exc.problems)} problem(s)")
        raise typer.Exit(DATA_ERRORS) from None
    try:
        seen = carried(read_table(events)) if events is not None else set()
    except (FileNotFoundError, ValueError) as exc:
        raise usage(str(exc)) from None
    warnings = unknown_properties(config, seen, _known_features())
    for warning in warnings:
        console.print(f"{path}: {'error' if strict else 'warning'}: {warning}", markup=False, highlight=False)
    if warnings and strict:
        raise typer.Exit(DATA_ERRORS)
    out.print(
        f"{path}: valid, {len(config.segments)} segments, {len(config.specs)} derived features, "
        f"config id {config.config_id}"
    )


@segments_app.command("test")
def segments_test(files: Annotated[list[Path], typer.Argument(help="fixture YAML files")]) -> None:
    """Run timeline fixtures: expected enters and exits at exact times."""
    from segments.config import ConfigError
    from segments.fixtures import run_file

    failed = total = 0
    for path in files:
        if not path.exists():
            raise usage(f"{path}: no such file")
        try:
            results = run_file(path)
        except (ValueError, ConfigError, KeyError) as exc:
            raise usage(f"{path}: {exc}") from None
        for r in results:
            total += 1
            if r.passed:
                out.print(f"[green]ok[/green]   {r.name}")
            else:
                failed += 1
                out.print(f"[red]FAIL[/red] {r.name}")
                out.print(r.diff, markup=False, highlight=False)
    out.print(f"{total - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(DATA_ERRORS)


@segments_app.command("diff")
def segments_diff(
    old: Annotated[Path, typer.Argument(help="the current segments.yaml")],
    new: Annotated[Path, typer.Argument(help="the changed segments.yaml")],
) -> None:
    """What changed, rule by rule."""
    from segments.config import ConfigError, diff, load

    try:
        a, b = load(old, _known_features()), load(new, _known_features())
    except FileNotFoundError as exc:
        raise usage(str(exc)) from None
    except ConfigError as exc:
        raise data_error(str(exc)) from None
    lines = diff(a, b)
    for line in lines:
        out.print(line, markup=False)
    out.print(f"{len(lines)} change(s); config {a.config_id} -> {b.config_id}")


@segments_app.command("preview")
def segments_preview(
    config: Annotated[Path, typer.Option(help="the changed segments.yaml")],
    events: Annotated[Path, typer.Option(help="stored history: an event table (Parquet)")],
    against: Annotated[Path, typer.Option(help="the current segments.yaml")] = Path("config/segments.yaml"),
    limit: Annotated[int, typer.Option(help="transitions listed per segment with --json")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Replay history under both configs: who would enter and leave, when, and sizes by day,
    scored by the registered champion models (as the service scores; the online one frozen)."""
    import pyarrow.compute as pc

    from segments.config import ConfigError
    from serving.preview import preview
    from serving.regime import intent_feature_names, load_config
    from serving.scorers import load_scorers
    from serving.settings import Settings

    try:
        old, new = load_config(against), load_config(config)
    except (ConfigError, FileNotFoundError) as exc:
        raise usage(str(exc)) from None
    if not events.exists():
        raise usage(f"{events} does not exist")
    stored = read_table(events)
    history = stored.take(pc.sort_indices(stored, [("received_at", "ascending")]))  # in arrival order (stable)
    settings = Settings()
    scorers = load_scorers(intent_feature_names(), settings.model_alias, settings.tracking_uri)
    scorers.use_intent(settings.intent)
    result = preview(old, new, history, scorers)
    if as_json:
        out.print_json(json.dumps(result.as_dict(limit)))
        return
    models = ", ".join(f"{k} {v}" for k, v in result.models.items())
    title = f"preview over {result.events:,} events: {result.old_config} -> {result.new_config} ({models})"
    table = Table("segment", "status", "size now", "size new", "would enter", "would leave", title=title)
    for seg in result.segments:
        d = seg.as_dict(0)
        if seg.status == "same" and not seg.only_new and not seg.only_old:
            continue
        table.add_row(seg.name, seg.status, f"{seg.size_old:,}", f"{seg.size_new:,}",
                      f"{d['would_enter']:,}", f"{d['would_leave']:,}")  # fmt: skip
    out.print(table)


app.add_typer(train_commands.train_app, name="train")
app.command("evaluate")(train_commands.evaluate)
app.command("drift")(train_commands.drift)
app.command("retrain")(train_commands.retrain)
app.command("tune")(tune.tune)
app.command("serve")(serve.serve)
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.quarantine_app, name="quarantine")
app.add_typer(destinations.app, name="destinations")
app.command("backup")(admin.backup_command)
app.command("restore")(admin.restore_command)
app.command("demo")(demo.demo)
app.command("replay")(serve.replay_command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
