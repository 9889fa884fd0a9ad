"""Where a run's data and code came from: the event table's content hash
(logged as an MLflow dataset input), the git commit, the package version."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]  # made at import

ROOT = Path(__file__).resolve().parent.parent


def digest(table: pa.Table) -> str:
    """A content hash of an event table (its Arrow IPC bytes), 16 hex digits."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def git_commit() -> str:
    """The commit of the segflow checkout running, or ``unknown`` (an installed wheel)."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def tags(data_digest: str) -> dict[str, str]:
    """The provenance tags of a run or version: git commit, segflow version, data hash."""
    return {
        "git_commit": git_commit(),
        "segflow_version": metadata.version("segflow"),
        "data_digest": data_digest,
    }


def fitted_until(tags: dict[str, str]) -> int | None:
    """A registered version's ``fitted_until_ms`` tag: the latest moment its
    fit describes (a cutoff plus its label horizon); None when it has none."""
    value = tags.get("fitted_until_ms")
    return int(value) if value is not None else None


def fitted_into(until_ms: int | None, start_ms: int) -> bool:
    """Whether a model fitted until ``until_ms`` learned from a period starting
    at ``start_ms``: its labels reached past the start, or nobody knows.

    >>> fitted_into(100, 100), fitted_into(101, 100), fitted_into(None, 100)
    (False, True, True)
    """
    return until_ms is None or until_ms > start_ms


def seen_in(tags: dict[str, str], start_ms: int) -> bool:
    """Whether the registered version with these tags learned from a period starting at ``start_ms``."""
    return fitted_into(fitted_until(tags), start_ms)


def log_dataset(source: str, data_digest: str, rows: int, context: str) -> None:
    """Log the data a run read as an MLflow dataset input: where it came from and its hash."""
    source_ = LocalArtifactDatasetSource(source)
    dataset = MetaDataset(source_, name=Path(source).name or "events", digest=data_digest)  # type: ignore[abstract]
    mlflow.log_input(dataset, context=context, tags={"rows": str(rows)})
    mlflow.set_tags({"data_source": source, **tags(data_digest)})


def flat(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as MLflow keeps them: lists and dicts as text."""
    return {k: (v if isinstance(v, int | float | str | bool) or v is None else str(v)) for k, v in params.items()}
