"""`dispatch` starts quickly: a command imports only what it uses. Rendering (fpdf2, fontTools' font files),
campaign validation, Celery and Alembic are imported by the commands that need them, never by the command
line itself, so `dispatch campaign schedule` (an urgent letter) and `dispatch --help` do not wait for them.
(fontTools.unicodedata, the table of scripts that the email checks read, is light and may be imported.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("fpdf", "fontTools.ttLib", "uharfbuzz", "celery", "kombu", "alembic", "dispatcher.domain.validation")


def _imported_by(code: str, tmp_path: Path) -> set[str]:
    """The top modules (and our own modules) that ``code`` left imported, in a fresh interpreter."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, check=True)
    return set(json.loads(out.stdout.decode().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in HEAVY if name in modules)


def test_the_command_line_module_imports_nothing_heavy(tmp_path: Path) -> None:
    assert _heavy(_imported_by("import dispatcher.processes.cli", tmp_path)) == []


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "from dispatcher.processes.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    app(['campaign', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert _heavy(_imported_by(code, tmp_path)) == []


def test_schedule_imports_nothing_heavy(tmp_path: Path, example_file: Path) -> None:
    from dispatcher.domain import db

    db.upgrade(f"sqlite:///{tmp_path / 'ledger.db'}")
    load = (
        f"from dispatcher.processes.cli import app\napp(['campaign', 'load', {str(example_file)!r}, '--skip-invalid'])"
    )
    _imported_by(f"try:\n    {load.replace(chr(10), chr(10) + '    ')}\nexcept SystemExit:\n    pass", tmp_path)
    schedule = (
        "from dispatcher.processes.cli import app\n"
        "try:\n    app(['campaign', 'schedule', 'north-korean-refugees-2015'])\nexcept SystemExit as end:\n"
        "    assert not end.code, end.code"
    )
    assert _heavy(_imported_by(schedule, tmp_path)) == []


def test_the_schema_head_read_from_the_migration_files_is_alembics() -> None:
    from dispatcher.domain import db

    assert db.head_from_files() == db.head_revision()


def test_the_command_line_computes_no_password_hash_at_start(tmp_path: Path) -> None:
    """An argon2 hash costs about 0.1 s: the dummy hash of a login for an unknown name is made at the first
    such login, not when a command imports the accounts module."""
    code = (
        "import argon2\n"
        "made = []\n"
        "real = argon2.PasswordHasher.hash\n"
        "argon2.PasswordHasher.hash = lambda self, *a, **k: made.append(1) or real(self, *a, **k)\n"
        "import dispatcher.processes.cli, dispatcher.processes.operations\n"
        "print(len(made))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, check=True)
    assert out.stdout.decode().split() == ["0"]
