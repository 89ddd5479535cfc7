"""A clean, non-editable `pip install` of the project into a fresh virtualenv: every module imports,
the `dispatch` command runs, the migrations are packaged and `dispatch sandbox serve` starts.

Slow (a venv and a full install; pip's cache keeps it to minutes): marked ``install``.
"""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from .spawn import ROOT, Spawned

pytestmark = [pytest.mark.install, pytest.mark.timeout(1800)]

# what a build would leave in the checkout, or take stale from it
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "var", "out", "__pycache__", ".*_cache")

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
failed = []
for top in ("dispatcher", "workers"):
    package = importlib.import_module(top)
    if "site-packages" not in package.__file__:
        sys.exit(f"{top} imported from {package.__file__}, not from the install")
    for module in pkgutil.walk_packages(package.__path__, prefix=top + "."):
        if module.name.endswith(".__main__"):
            continue  # `python -m dispatcher` runs the command line
        try:
            importlib.import_module(module.name)
        except Exception as err:
            failed.append(f"{module.name}: {type(err).__name__}: {err}")
        else:
            print("imported", module.name)
sys.exit("\\n".join(failed) if failed else 0)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project installed from a copy of this checkout; its bin/ directory."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    venv.create(base / "venv", with_pip=True)
    python = base / "venv" / "bin" / "python"
    result = subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=base,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return base / "venv" / "bin"


def clean_env(home: Path) -> dict[str, str]:
    """No PYTHONPATH, no DISPATCH_* variable: the install alone."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home)}


def test_every_module_imports_from_the_install(installed: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [installed / "python", "-c", IMPORT_EVERY_MODULE],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=clean_env(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    imported = result.stdout.split()
    assert "workers.sandbox.serve" in imported and "workers.gateways.email.sendgrid" in imported


def test_dispatch_command_and_migrations_from_the_install(installed: Path, tmp_path: Path) -> None:
    help_text = subprocess.run(
        [installed / "dispatch", "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert help_text.returncode == 0 and "Usage" in help_text.stdout, help_text.stderr
    env = {**clean_env(tmp_path), "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    upgrade = subprocess.run(
        [installed / "dispatch", "db", "upgrade"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "ledger at revision 0005" in upgrade.stdout


def test_sandbox_serve_starts_from_the_install(installed: Path, tmp_path: Path) -> None:
    sandbox = Spawned(
        [str(installed / "dispatch"), "sandbox", "serve", "--free-ports"], env=clean_env(tmp_path), cwd=tmp_path
    )
    try:
        sandbox.wait_for(lambda line: "export DISPATCH_SMTP_PORT=" in line)
    finally:
        lines = sandbox.stop()
    assert any("export DISPATCH_SENDGRID_WEBHOOK_PUBLIC_KEY=" in line for line in lines)  # cryptography at work
    assert (tmp_path / "var" / "sandbox").is_dir()
