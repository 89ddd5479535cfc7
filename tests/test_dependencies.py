"""Every third-party module imported by dispatcher/ and workers/ comes from a declared dependency
(pyproject.toml [project.dependencies]): a clean `pip install .` has everything the code imports."""

from __future__ import annotations

import ast
import re
import shutil
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = {"dispatcher", "workers"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies(pyproject: Path) -> set[str]:
    """Distribution names in [project.dependencies], normalized, without versions, extras or markers."""
    requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {normalized(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group()) for r in requirements}  # type: ignore[union-attr]


def third_party_imports(root: Path) -> dict[str, set[str]]:
    """Top-level module name -> files importing it, for every absolute import outside the stdlib and our packages."""
    found: dict[str, set[str]] = {}
    for package in sorted(OWN):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in OWN and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(path.relative_to(root)))
    return found


def undeclared(root: Path) -> dict[str, str]:
    """Imported module -> why no declared dependency provides it."""
    declared = declared_dependencies(root / "pyproject.toml")
    providers = packages_distributions()
    problems: dict[str, str] = {}
    for module, files in sorted(third_party_imports(root).items()):
        distributions = providers.get(module, [])
        where = ", ".join(sorted(files))
        if not distributions:
            problems[module] = f"no installed distribution provides it (imported by {where})"
        elif not {normalized(d) for d in distributions} & declared:
            problems[module] = f"{' or '.join(distributions)} is not in [project.dependencies] (imported by {where})"
    return problems


def test_every_third_party_import_is_a_declared_dependency() -> None:
    assert undeclared(ROOT) == {}


def test_an_undeclared_import_is_caught(tmp_path: Path) -> None:
    """The check above on a copy of the tree with two injected imports: one installed but undeclared
    (pytest is a test tool, not a dependency), one that nothing provides."""
    for name in ("pyproject.toml", *sorted(OWN)):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    (tmp_path / "workers" / "injected.py").write_text("import pytest\nfrom not_a_real_module_xyz import thing\n")
    problems = undeclared(tmp_path)
    assert set(problems) == {"pytest", "not_a_real_module_xyz"}
    assert "not in [project.dependencies]" in problems["pytest"] and "workers/injected.py" in problems["pytest"]
