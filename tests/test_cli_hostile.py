"""The `dispatch` command line under careless and hostile input and a busy ledger, on SQLite."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher.domain import db
from dispatcher.domain.settings import get_settings
from dispatcher.processes.cli import app

from .builders import NAME, build_campaign, guo_shengkun, wang_yi, xi_jinping
from .spawn import base_env

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


SUPPORTERS = [("ada.supporter@example.org", "Ada Lovelace"), ("grace.supporter@example.net", "Grace Hopper")]
PERSONAL = ("ada.supporter", "Ada Lovelace", "grace.supporter", "Grace Hopper")


def dispatch_command(*args: str, ledger: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m dispatcher ARGS`` as a user runs it: through main(), its errors printed by it."""
    env = base_env(cwd, DISPATCH_DATABASE_URL=f"sqlite:///{ledger}", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def test_a_database_error_prints_a_short_message_without_the_statement_or_personal_data(
    ledger: Path, tmp_path: Path
) -> None:
    """A ledger that refuses the load (its supporters table is gone) ends in one line naming the error's
    kind: no traceback, no SQL, no parameters (they are supporters' names and addresses)."""
    db.upgrade(f"sqlite:///{ledger}")
    with sqlite3.connect(ledger) as connection:
        connection.execute("DROP TABLE supporters")
    path = build_campaign(tmp_path / "campaign", supporters=SUPPORTERS)
    result = dispatch_command("campaign", "load", str(path), ledger=ledger, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: the ledger refused this command (OperationalError)" in result.stderr
    assert "Traceback" not in result.stderr
    for text in (*PERSONAL, "INSERT", "[SQL", "parameters"):
        assert text not in result.stdout + result.stderr, text


def test_load_skip_invalid_with_an_invalid_address_on_two_rows(ledger: Path, tmp_path: Path) -> None:
    rows = [("not-an-email", "Ada Lovelace"), ("not-an-email", "Grace Hopper")]
    path = build_campaign(tmp_path / "campaign", supporters=rows)
    result = dispatch_command("campaign", "load", str(path), "--skip-invalid", ledger=ledger, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{NAME}: created (4 planned, 0 skipped)" in result.stdout
    # the rows are left out (no member, no copy), counted, and never quoted
    assert "supporter copies: 0 planned, sent after-delivery; left out: 2 invalid or repeated rows" in result.stdout
    assert "Traceback" not in result.stderr
    for text in PERSONAL:
        assert text not in result.stdout + result.stderr, text


NO_ROUTE = "no usable electronic route"


def test_load_skip_invalid_skips_an_addressee_without_a_route_and_says_so(tmp_path: Path) -> None:
    path = build_campaign(tmp_path / "campaign", cc=[guo_shengkun(), wang_yi(fax=["not a number"])])
    code, output = run("campaign", "load", str(path), "--skip-invalid")
    assert code == 0, output
    assert f"{NAME}: created (5 planned, 1 skipped)" in output
    assert "skipped cc[1] (Wang Yi): no usable electronic route" in output
    assert output.count(NO_ROUTE) == 2  # the problem, once, and the line saying the addressee is skipped
    assert output.count("'not a number'") == 1
    code, output = run("campaign", "show", NAME)
    assert code == 0 and "not a number" in output and "skipped" in output


def test_a_refused_load_prints_each_problem_once(ledger: Path, tmp_path: Path) -> None:
    path = build_campaign(tmp_path / "campaign", cc=[guo_shengkun(), wang_yi(fax=["not a number"])])
    result = dispatch_command("campaign", "load", str(path), ledger=ledger, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count(NO_ROUTE) == 1, result.stderr
    assert result.stderr.count("'not a number'") == 1, result.stderr
    assert "2 error(s) in" in result.stderr and "nothing was loaded" in result.stderr
    assert "--skip-invalid" in result.stderr
    assert "Traceback" not in result.stderr


# -- user data is printed as text: markup shows literally, control characters visibly ------------------

HOSTILE_NAME = "Xi [/bold] Jinping"
ESC, RLO = "\x1b", "\u202e"


def assert_printed_as_text(output: str) -> None:
    assert ESC not in output and RLO not in output, repr(output)


def test_validate_prints_markup_in_names_and_addresses_literally(tmp_path: Path) -> None:
    path = build_campaign(
        tmp_path / "campaign",
        to=[xi_jinping(name=HOSTILE_NAME, fax=["+86 10 6307 0900", "not a number"])],
        supporters=[("[/x]@example.org", "Ada Lovelace")],
    )
    code, output = run("campaign", "validate", str(path))
    assert code == 1, output
    assert f"to[0] ({HOSTILE_NAME}): fax[1]" in output
    assert "[/x]@example.org" not in output  # a supporter's address is never printed, valid or not
    assert "line 2: email: not a valid email address" in output
    assert "2 error(s) in" in output
    assert_printed_as_text(output)


def test_markup_and_control_characters_in_a_folder_name_are_printed_as_text(tmp_path: Path) -> None:
    path = build_campaign(tmp_path / f"[/x] {ESC}[2J{RLO}", to=[xi_jinping(fax=["not a number"])])
    for args in (("campaign", "validate", str(path)), ("campaign", "load", str(path))):
        code, output = run(*args)
        assert code == 1, output
        assert "[/x] \\x1b[2J\\u202e" in output
        assert_printed_as_text(output)


def test_show_list_and_log_print_ledger_data_as_text(ledger: Path, tmp_path: Path) -> None:
    """A ledger holding markup, ESC sequences and U+202E (written by an older version, or by hand)."""
    code, output = run("campaign", "load", str(build_campaign(tmp_path / "campaign")))
    assert code == 0, output
    with sqlite3.connect(ledger) as connection:
        connection.execute("UPDATE addressees SET name = ?, title = ?", (f"{HOSTILE_NAME} {ESC}[2J", f"[red]{RLO}x"))
        connection.execute("UPDATE campaigns SET title = ?", (f"[/x] {ESC}]0;owned{ESC}\\",))
        connection.execute("UPDATE deliveries SET last_error = ?", (f"[bold]{RLO}fail {ESC}[31m",))
    outputs = {args: run(*args) for args in (("campaign", "list"), ("campaign", "show", NAME), ("log", NAME))}
    for args, (code, output) in outputs.items():
        assert code == 0, (args, output)
        assert_printed_as_text(output)
    assert "[/x] \\x1b]0;owned\\x1b\\" in outputs[("campaign", "list")][1]
    show = outputs[("campaign", "show", NAME)][1]
    assert f"{HOSTILE_NAME} \\x1b[2J" in show and "[red]\\u202ex" in show
    assert f"{HOSTILE_NAME} \\x1b[2J" in outputs[("log", NAME)][1]


def test_an_error_naming_a_campaign_prints_its_name_as_text(tmp_path: Path) -> None:
    name = f"[/bold] {ESC}[2J{RLO}"
    result = dispatch_command("campaign", "show", name, ledger=tmp_path / "ledger.db", cwd=tmp_path)
    assert result.returncode == 1
    assert "no campaign named '[/bold] \\x1b[2J\\u202e'" in result.stderr
    assert "Traceback" not in result.stderr
    assert_printed_as_text(result.stdout + result.stderr)


def test_preview_goes_on_past_an_addressee_that_load_skip_invalid_leaves_out(tmp_path: Path) -> None:
    """Preview refuses what `campaign load --skip-invalid` refuses, and nothing more: a CC whose only
    route is invalid is left out by such a load, so the preview of the others is written."""
    path = build_campaign(tmp_path, cc=[guo_shengkun(), wang_yi(fax=["+86 10 1234"])])
    result = runner.invoke(app, ["campaign", "preview", str(path), "--pdf", str(tmp_path / "out.pdf")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.pdf").is_file()
    assert "no usable electronic route" in result.output
