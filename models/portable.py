"""What a logged model needs to load where segflow is not installed: the
segflow modules its pickle refers to, and the packages they import.

:func:`code_tree` copies the ``models`` package and the modules of
``features`` it imports (read from the import statements, transitively) into
a directory to log as the model's ``code_paths``; :func:`requirements` pins
the third-party packages those modules import to the versions installed here.

>>> [m for m in sorted(needed_modules(["models.clusters"])) if m.startswith("features.")][:4]
['features.defaults', 'features.durations', 'features.events', 'features.specs']
"""

from __future__ import annotations

import ast
import functools
import shutil
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("features", "models")
# import name -> distribution; mlflow loads the model, cloudpickle unpickles the pyfunc wrapper
DISTRIBUTIONS = {
    "mlflow": "mlflow",
    "numpy": "numpy",
    "pandas": "pandas",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "lightgbm": "lightgbm",
    "river": "river",
    "cloudpickle": "cloudpickle",
}


# what mlflow needs beside itself to load from a database registry: mlflow 3.6
# declares sqlalchemy<3 and breaks with 2.1 (pool classes it imports are gone)
LOADER = ("sqlalchemy",)


def _source(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@functools.cache  # the source does not change while a process logs models: read and parse each once
def _imports(module: str) -> frozenset[str]:
    tree = ast.parse(_source(module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def _ours(name: str) -> str | None:
    """The segflow module an import names (``from models import river_fast`` names two), else None."""
    while name.split(".")[0] in OURS:
        if _source(name).exists():
            return name
        name = name.rpartition(".")[0]
    return None


def needed_modules(roots: Iterable[str]) -> set[str]:
    """The segflow modules ``roots`` import, transitively, themselves included."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(m for m in (_ours(name) for name in _imports(module)) if m is not None)
    return seen


def _model_modules() -> list[str]:
    return [f"models.{p.stem}" for p in sorted((ROOT / "models").glob("*.py")) if p.stem != "__init__"]


def code_tree(into: Path) -> Path:
    """The whole ``models`` package and the ``features`` modules it needs,
    under ``into``; ``features`` gets an empty ``__init__`` (its own imports
    the ingest stack). Returns the packages' directories' parent."""
    for module in sorted(needed_modules(["models", *_model_modules()])):
        source = _source(module)
        target = into / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (into / "features" / "__init__.py").write_text('"""The feature modules segflow models refer to."""\n')
    return into


def requirements() -> list[str]:
    """Pinned third-party requirements of the shipped modules, as installed here."""
    imported = {name.split(".")[0] for m in needed_modules(["models", *_model_modules()]) for name in _imports(m)}
    unknown = imported - set(DISTRIBUTIONS) - set(OURS) - set(sys.stdlib_module_names) - {"__future__"}
    if unknown:
        raise RuntimeError(f"the model code imports {sorted(unknown)}: add their distributions to DISTRIBUTIONS")
    names = sorted({DISTRIBUTIONS[n] for n in imported if n in DISTRIBUTIONS} | {"mlflow", "cloudpickle", *LOADER})
    return [f"{name}=={metadata.version(name)}" for name in names]
