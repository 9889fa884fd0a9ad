"""Every public function, class and method of ``features``, ``models`` and
``training`` says what it is: the test lists any that has no docstring."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("features", "models", "training")


def public(nodes: list[ast.stmt]) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [n for n in nodes if isinstance(n, kinds) and not n.name.startswith("_")]


def undocumented(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line name`` of each public function, class or method with no docstring."""
    tree = ast.parse(path.read_text())
    where = path.relative_to(root)
    missing = []
    for node in public(tree.body):
        if ast.get_docstring(node) is None:
            missing.append(f"{where}:{node.lineno} {node.name}")
        if isinstance(node, ast.ClassDef):
            missing += [f"{where}:{m.lineno} {node.name}.{m.name}" for m in public(node.body)
                        if not isinstance(m, ast.ClassDef) and ast.get_docstring(m) is None]  # fmt: skip
    return missing


def test_every_public_function_and_class_has_a_docstring() -> None:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).glob("*.py"))]
    assert len(files) > 40
    missing = [m for path in files for m in undocumented(path)]
    assert not missing, "no docstring:\n" + "\n".join(missing)


def test_the_check_finds_what_lacks_one(tmp_path: Path) -> None:
    code = '''
        def shown():
            """Shown."""


        def bare():
            pass


        class Kept:
            """Kept."""

            def run(self):
                return 1

            def _private(self):
                return 2
    '''
    (tmp_path / "m.py").write_text(textwrap.dedent(code))
    assert undocumented(tmp_path / "m.py", tmp_path) == ["m.py:6 bare", "m.py:13 Kept.run"]
