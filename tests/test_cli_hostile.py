"""The `dispatch` command line under careless and hostile input and a busy ledger, on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher.domain.settings import get_settings
from dispatcher.processes.cli import app

from .builders import NAME, build_campaign

runner = CliRunner()


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "ledger.db"
    monkeypatch.setenv("DISPATCH_DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_views_read_while_another_process_holds_the_write_lock(ledger: Path, tmp_path: Path) -> None:
    """`campaign list`, `campaign show` and `log` take no write lock: they read while a writer works."""
    code, output = run("campaign", "load", str(build_campaign(tmp_path / "campaign")))
    assert code == 0, output
    writer = sqlite3.connect(ledger, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        for args in (("campaign", "list"), ("campaign", "show", NAME), ("log", NAME)):
            code, output = run(*args)
            assert code == 0, (args, output)
            assert NAME in output
    finally:
        writer.execute("ROLLBACK")
        writer.close()
