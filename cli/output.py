"""What every command shares: the two consoles, exit codes, the default history.

Exit codes: 0 success, 1 data errors (naming the file, column and rows), 2 usage errors.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DATA_ERRORS = 1
USAGE_ERRORS = 2

DEFAULT_TABLE = Path("data/synthetic.parquet")
# the default history to train on: three weeks, so users show the habits clusters read (21-day windows)
DEFAULT_USERS, DEFAULT_DAYS = 2000, 21


def usage(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(USAGE_ERRORS)


def data_error(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(DATA_ERRORS)
