"""The `dispatch` command line, run as a user would, on a fresh SQLite ledger."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dispatcher.domain import db
from dispatcher.domain.models import OperatorAction
from dispatcher.domain.settings import get_settings
from dispatcher.processes.cli import app
from workers.sandbox.server import free_port

from .builders import build_campaign
from .spawn import base_env, dispatch

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


def test_validate_reports_the_seed_error_and_fails(example_file: Path) -> None:
    code, output = run("campaign", "validate", str(example_file))
    assert code == 1
    assert "to[0] (Xi Jinping): fax[1]" in output
    assert "did you mean +86 10 6238 1025?" in output
    assert "1 error(s)" in output


def test_validate_fixed_campaign_passes(tmp_path: Path) -> None:
    path = build_campaign(tmp_path)  # the example, its second fax to Xi Jinping written "+86 10 6238 1025"
    code, output = run("campaign", "validate", str(path))
    assert code == 0, output
    assert "is valid" in output


def test_preview_writes_pdf_and_eml(tmp_path: Path, example_file: Path) -> None:
    pdf, eml = tmp_path / "out.pdf", tmp_path / "out.eml"
    code, output = run("campaign", "preview", str(example_file), "--pdf", str(pdf), "--eml", str(eml))
    assert code == 0, output
    assert pdf.read_bytes().startswith(b"%PDF")
    assert b"Message-ID:" in eml.read_bytes()


def test_load_refuses_invalid_then_skip_invalid_records_it(example_file: Path) -> None:
    code, output = run("campaign", "load", str(example_file))
    assert code != 0
    code, output = run("campaign", "list")
    assert "north-korean-refugees-2015" not in output  # nothing was written
    code, output = run("campaign", "load", str(example_file), "--skip-invalid")
    assert code == 0, output
    assert "created (5 planned, 1 skipped)" in output
    code, output = run("campaign", "load", str(example_file), "--skip-invalid")
    assert "unchanged" in output
    code, output = run("campaign", "show", "north-korean-refugees-2015")
    assert code == 0 and "+011 10 6238 1025" in output and "skipped" in output
    code, output = run("log", "north-korean-refugees-2015")
    assert code == 0 and "--skip-invalid" in output


def test_control_commands(example_file: Path) -> None:
    run("campaign", "load", str(example_file), "--skip-invalid")
    name = "north-korean-refugees-2015"
    assert run("campaign", "schedule", name)[0] == 0
    assert "paused" in run("campaign", "pause", name, "--reason", "the ministry asked for a day")[1]
    assert "scheduled again" in run("campaign", "resume", name)[1]
    code, output = run("campaign", "cancel", name)
    assert code == 0 and "cancelled (5 deliveries will not be sent)" in output
    code, output = run("campaign", "show", name)
    assert output.count("cancelled") >= 3
    code, output = run("campaign", "resume", name)
    assert (code, output.strip()) == (1, f"error: cannot resume campaign '{name}': it is cancelled")
    with db.session_factory(db.make_engine(get_settings().database_url))() as session:
        logged = [(a.actor.split(":")[0], a.action, a.reason) for a in session.scalars(select(OperatorAction))]
    assert logged == [
        ("cli", "campaign.schedule", ""),
        ("cli", "campaign.pause", "the ministry asked for a day"),
        ("cli", "campaign.resume", ""),
        ("cli", "campaign.cancel", ""),
    ]


def test_unknown_campaign_is_a_clear_error() -> None:
    """Through the real entry point, as a user types it: a message, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "campaign", "show", "no-such-campaign"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no campaign named 'no-such-campaign'" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_to_start_without_gateway_settings(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "DISPATCH_FAX_GATEWAY": "telnyx",
        "DISPATCH_EMAIL_GATEWAY": "smtp",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "DISPATCH_TELNYX_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_telnyx_without_a_secret_key(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "HOME": str(tmp_path),
        "DISPATCH_TELNYX_API_KEY": "KEY",
        "DISPATCH_TELNYX_CONNECTION_ID": "c",
        "DISPATCH_SMTP_HOST": "127.0.0.1",
        "DISPATCH_TELNYX_PUBLIC_KEY": "a2W+JI9/H1Ysx7DDdx8+wtMj9CzHJ53Om+ZVbMjdseQ=",
    }
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "DISPATCH_SECRET_KEY" in result.stderr


def test_follow_log_shows_new_events_live(tmp_path: Path, example_file: Path) -> None:
    """`dispatch log NAME --follow` redraws the state summary and the latest events until stopped."""
    import io

    from rich.console import Console

    from dispatcher.domain import db
    from dispatcher.processes.live import follow_log

    run("campaign", "load", str(example_file), "--skip-invalid")
    factory = db.session_factory(db.make_engine(get_settings().database_url))
    out = io.StringIO()
    follow_log(
        factory,
        "north-korean-refugees-2015",
        console=Console(file=out, width=200, force_terminal=False),
        interval=0.05,
        until=0.3,
    )
    text = out.getvalue()
    assert "draft" in text  # the campaign status heads the summary
    assert "planned 5" in text and "skipped 1" in text
    assert "--skip-invalid" in text


def test_scheduler_ticks_every_tick_seconds_unless_told(tmp_path: Path) -> None:
    env = base_env(
        tmp_path,
        DISPATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        DISPATCH_TICK_SECONDS="0.7",
        DISPATCH_CHECK_CREDENTIALS="false",  # no gateway settings here: the scheduler sends nothing itself
    )
    for args, shown in ((["scheduler"], "0.7s"), (["scheduler", "--interval", "0.3"], "0.3s")):
        scheduler = dispatch(*args, env=env, cwd=tmp_path)
        try:
            line = scheduler.wait_for(lambda line: "ticking every" in line)
        finally:
            scheduler.stop()
        assert f"ticking every {shown}" in line


def test_sandbox_oracles_go_under_the_var_dir(tmp_path: Path) -> None:
    env = base_env(tmp_path, DISPATCH_VAR_DIR=str(tmp_path / "runtime"))
    sandbox = dispatch("sandbox", "serve", "--free-ports", env=env, cwd=tmp_path)
    try:
        sandbox.wait_for(lambda line: "DISPATCH_SMTP_PORT" in line)
    finally:
        sandbox.stop()
    assert (tmp_path / "runtime" / "sandbox").is_dir()
    assert not (tmp_path / "var").exists()


def test_demo_works_under_the_var_dir_and_serves_its_console(tmp_path: Path) -> None:
    env = base_env(tmp_path, DISPATCH_VAR_DIR=str(tmp_path / "runtime"), COLUMNS="200")
    port = free_port()
    # the example campaign, as `scripts/demo` runs it, then the console kept up (as in a terminal)
    demo = dispatch("demo", "--serve", "--port", str(port), env=env, cwd=tmp_path)
    try:
        line = demo.wait_for(lambda text: text.startswith("console: "), timeout=120)
        found = re.fullmatch(r"console: (http://127\.0\.0\.1:(\d+))/  \(log in as demo, password (\S+)\)", line)
        assert found is not None, line
        url, password = found.group(1), found.group(3)
        assert found.group(2) == str(port)
        demo.wait_for(lambda text: "delivered more than once" in text, timeout=180)
        demo.wait_for(lambda text: "Press Ctrl-C to stop" in text, timeout=30)
        with httpx.Client(base_url=url, headers={"Accept": "text/html"}, timeout=15) as client:
            form = client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            client.post("/login", data={"name": "demo", "password": password, "csrf": csrf.group(1)})
            page = client.get("/")
            assert page.status_code == 200
            assert "north-korean-refugees-2015" in page.text and "completed" in page.text
        os.kill(demo.process.pid, signal.SIGTERM)  # as `kill` stops it (Ctrl-C does the same)
        lines = demo.finish(timeout=60)
    finally:
        demo.stop()
    assert demo.process.returncode == 0, "\n".join(lines)
    assert "0 delivered more than once" in "\n".join(lines)
    assert lines[-1] == "stopped"
    assert (tmp_path / "runtime" / "demo" / "preview.pdf").is_file()
    assert (tmp_path / "runtime" / "demo" / "ledger.db").is_file()
    log = (tmp_path / "runtime" / "demo" / "demo.log").read_text()  # the log goes to a file, not the live view
    assert " INFO celery." in log
    assert password not in log
    assert not (tmp_path / "var").exists()


def test_user_and_token_commands(ledger: Path) -> None:
    added = runner.invoke(
        app, ["user", "add", "Alice", "--role", "manager,operator", "--password-stdin"], input="correct horse battery\n"
    )
    assert (added.exit_code, added.output.strip().splitlines()[-1]) == (0, "user alice: manager,operator")
    wrong = runner.invoke(app, ["user", "add", "bob", "--role", "boss", "--no-password"])
    assert wrong.exit_code == 1  # main() prints it as `error: ...`
    assert str(wrong.exception) == "no role named 'boss'; the roles are manager, operator, viewer"
    created = runner.invoke(app, ["token", "create", "alice", "--label", "ci"])
    token = created.stdout.strip().splitlines()[-1]
    assert created.exit_code == 0 and token.startswith("cdt_")
    assert run("token", "revoke", "alice", "--label", "ci") == (0, "1 token(s) revoked\n")
    with db.session_factory(db.make_engine(get_settings().database_url))() as session:
        logged = [(a.actor.split(":")[0], a.action) for a in session.scalars(select(OperatorAction))]
    assert logged == [("cli", "user.add")]
