"""The house rules that keep medcl readable, checked on every `make test`: layered imports, small modules and tasks."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "medcl"
MAX_MODULE_LINES = 500
MAX_TASK_LINES = 300


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: layers (imports inside functions included) and no runtime import of
    the synthetic-data generators."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_module_is_over_500_lines():
    sizes = {p.relative_to(REPO): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {str(p): n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def _task_classes() -> list[type]:
    import medcl.tasks
    from medcl.tasks.base import MedclTask

    return [
        getattr(medcl.tasks, name) for name in medcl.tasks.__all__ if issubclass(getattr(medcl.tasks, name), MedclTask)
    ]


@pytest.mark.parametrize("task", _task_classes(), ids=lambda t: t.__name__)
def test_no_task_is_over_300_lines_with_what_it_inherits(task):
    """Source lines of the LightningModule and every medcl class it derives from (what a reader has to read)."""
    lines = sum(len(inspect.getsourcelines(cls)[0]) for cls in task.__mro__ if cls.__module__.startswith("medcl."))
    assert lines <= MAX_TASK_LINES, f"{task.__name__}: {lines} lines with its medcl bases"


def test_the_package_imports_nothing_from_tests_scripts_or_pipelines():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.split(".")[0] in {"tests", "scripts", "pipelines", "benchmarks"} for n in names), path
