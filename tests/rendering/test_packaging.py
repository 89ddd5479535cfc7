"""Packaging: templates/ installs as the package ``dispatch_templates``, found by the names the code uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parents[2]

# Run inside the built tree: which loader the code picks, and whether each name it renders is package data.
_PROBE = """
import importlib.resources, json
from dispatcher.domain.rendering import templates
package = importlib.resources.files("dispatch_templates")
env = templates.default_environment()
print(json.dumps({
    "loader": type(env.loader).__name__,
    "names": list(templates.TEMPLATE_NAMES),
    "missing": [name for name in templates.TEMPLATE_NAMES if not package.joinpath(name).is_file()],
    "loaded": [env.get_template(name).name for name in templates.TEMPLATE_NAMES],
}))
"""


def _build(tmp_path: Path) -> Path:
    """setuptools' build_py over a copy of the source tree: the files a wheel (``pip install .``) installs."""
    source, lib = tmp_path / "source", tmp_path / "lib"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("dispatcher", "workers", "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-c", "import setuptools; setuptools.setup()", "build_py", "--build-lib", str(lib)]
    subprocess.run(command, cwd=source, check=True, capture_output=True)
    return lib


def _j2_files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*.j2")}


def test_built_package_holds_every_template(tmp_path: Path) -> None:
    lib = _build(tmp_path)
    assert _j2_files(lib / "dispatch_templates") == _j2_files(ROOT / "templates") != set()


def test_installed_code_finds_each_template_by_its_name(tmp_path: Path) -> None:
    lib = _build(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(lib)}
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    )
    found = json.loads(probe.stdout)
    assert found["loader"] == "PackageLoader"  # not this checkout's folder
    assert found["missing"] == []
    assert found["loaded"] == found["names"]
    assert set(found["names"]) >= {
        "fax/cover.jsonl.j2",
        "email/letter.html.j2",
        "copy/subject.txt.j2",
        "copy/supporter.txt.j2",
        "copy/supporter.html.j2",
    }


def test_package_list_holds_every_python_package() -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    found = find_namespace_packages(where=str(ROOT), include=["dispatcher*", "workers*"])
    # a folder left with only __pycache__ (a moved module's leftovers) is not a package
    with_code = [p for p in found if any((ROOT / p.replace(".", "/")).glob("*.py"))]
    assert sorted(p for p in listed if p != "dispatch_templates") == sorted(with_code)
    assert "dispatch_templates" in listed
