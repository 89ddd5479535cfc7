"""The import rules of the layers (pyproject.toml, [tool.importlinter]): checked on the real tree, and
shown to fail on a copy of it where a lower floor imports a higher one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = "layers: processes > workers > domain"
SANDBOX = "sandbox: the production path never imports it"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the project's contracts on the packages found in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            str(tree / "pyproject.toml"),
            "--no-cache",
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for name in ("dispatcher", "workers"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("dispatcher/domain/states.py", "import workers.delivery", LAYERS),
        ("dispatcher/domain/outcomes.py", "from dispatcher.processes import views", LAYERS),
        ("workers/delivery.py", "import dispatcher.processes.cli", LAYERS),
        ("workers/gateways/http.py", "from workers.sandbox import core", SANDBOX),
        ("dispatcher/processes/api.py", "import workers.sandbox.telnyx", SANDBOX),
    ],
)
def test_a_lower_floor_importing_a_higher_one_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    tree = copy_of_the_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # the violation under test\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    report = " ".join(result.stdout.split())
    assert f"{broken} BROKEN" in report, report
    assert module.replace("/", ".").removesuffix(".py") in report
