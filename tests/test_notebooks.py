"""The four notebooks run end to end on clean kernels, each leaving its runs in
MLflow. They run here on a smaller history than their default
(``SEGFLOW_NOTEBOOK_USERS``/``_DAYS``); ``make notebooks`` runs them whole."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the notebook extra: pip install -e '.[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="install the notebook extra: pip install -e '.[notebook]'")
pytest.importorskip("ipykernel", reason="install the notebook extra: pip install -e '.[notebook]'")

from mlflow.tracking import MlflowClient  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["1.0-explore-events", "2.0-clusters", "3.0-intent-models", "4.0-threshold-tuning"]


def test_the_notebooks_are_stored_without_outputs() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines()), (
            f"{name} defines a function or class: reusable code belongs in the packages"
        )


@pytest.mark.parametrize("name", NAMES)
def test_a_notebook_runs_on_a_clean_kernel_and_leaves_its_run_in_mlflow(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SEGFLOW_NOTEBOOK_USERS", os.environ.get("SEGFLOW_NOTEBOOK_USERS", "300"))
    monkeypatch.setenv("SEGFLOW_NOTEBOOK_DAYS", os.environ.get("SEGFLOW_NOTEBOOK_DAYS", "10"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in JupyterLab
    monkeypatch.setenv("SEGFLOW_SEGMENTS", str(NOTEBOOKS.parent / "config" / "segments.yaml"))
    # a kernel of this interpreter (where segflow is installed), whatever other python3 kernels the machine has
    spec = tmp_path / "jupyter" / "kernels" / "segflow-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "segflow", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=600, kernel_name="segflow-test", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # CellExecutionError, with the cell and its traceback, on any error
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, f"{name} showed no figure"  # the kernel's inline backend draws them (none is forced on it)

    tracking = MlflowClient(uri)
    experiment = tracking.get_experiment_by_name("segflow-notebooks")
    assert experiment is not None
    runs = tracking.search_runs([experiment.experiment_id], filter_string=f"tags.notebook = '{name}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.metrics
    assert tracking.list_artifacts(runs[0].info.run_id), f"{name} logged no figure"
