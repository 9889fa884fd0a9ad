"""``segflow``: generate, import and inspect event data (and, later, train and serve).

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
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.events import SegmentParser
from features.pseudonyms import Pseudonymizer, load_key
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
console = Console(stderr=True)
out = Console()

DATA_ERRORS = 1
USAGE_ERRORS = 2


class Source(str, Enum):
    taobao = "taobao"
    segment_jsonl = "segment-jsonl"
    table = "table"


def _usage(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(USAGE_ERRORS)


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
    out_path: Annotated[Path, typer.Option("--out", help="event table to write (Parquet)")] = Path(
        "data/synthetic.parquet"
    ),
    users: Annotated[int, typer.Option(min=1, help="number of shoppers")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="days of history")] = 14,
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
            raise _usage(f"{path}: no such file")
    report = ImportReport()
    try:
        if source is Source.taobao:
            table, report = import_taobao(inputs, report)
        elif source is Source.segment_jsonl:
            table, report = import_segment_jsonl(inputs, SegmentParser(Pseudonymizer(load_key())), report)
        else:
            if mapping is None:
                raise _usage("import table needs --mapping FILE (see config/mappings/)")
            table, report = import_table(inputs, ColumnMapping.load(mapping), report)
    except ValueError as exc:
        raise _usage(str(exc)) from None
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
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise _usage(str(exc)) from None
    summary = summarize(table)
    if as_json:
        out.print_json(json.dumps(summary.as_dict()))
    else:
        print_summary(summary, str(path))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
