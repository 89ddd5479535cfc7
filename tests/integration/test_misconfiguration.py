"""Misconfiguration stops and says so; it never burns an addressee's routes.

The worker path against the Telnyx emulator, our web app and the SMTP sink, on SQLite and PostgreSQL:
a wrong API key (HTTP 401) and a document Telnyx cannot fetch (a wrong DISPATCH_PUBLIC_BASE_URL) pause
the gateway; the fax waits on its route (no email fallback, the attempt not counted), the campaign is not
completed, `dispatch campaign show` says what to fix; after `dispatch gateway resume` with the setting
fixed, the fax goes once (the emulator's oracle).
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.media import media_url
from dispatcher.domain.models import Attempt, Delivery
from dispatcher.domain.outcomes import attempts_on_route
from workers.delivery import WorkerContext
from workers.gateways.base import Gateway
from workers.gateways.registry import build_gateway
from workers.sandbox.server import free_port

from ..builders import build_campaign, xi_jinping
from ..spawn import base_env
from .conftest import Sandbox, campaign_status, drive, history, schedule_campaign, states, worker_context

FAX, EMAIL = "+861063070900", "president@example.gov.cn"
WAITING = ("retry_wait",)


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Callable[..., tuple[int, str]]:
    """`dispatch ...` as an operator runs it, on the test's ledger: (exit code, stdout)."""
    env = base_env(tmp_path, DISPATCH_DATABASE_URL=db_url, COLUMNS="250", DISPATCH_LOG_LEVEL="WARNING")

    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "dispatcher", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout

    return run


def alert(shown: str) -> str:
    """The line above the tables of `dispatch campaign show` (its first line)."""
    first = shown.splitlines()[0]
    assert not first.startswith("campaign"), shown
    return first


def one_fax_then_email(tmp_path: Path) -> Path:
    """Xi Jinping by fax, then by email if the fax route fails; nobody else."""
    return build_campaign(tmp_path, to=[xi_jinping(fax=["+86 10 6307 0900"], email=[EMAIL])], cc=[], supporters=[])


def telnyx(sandbox: Sandbox, **settings: Any) -> dict[str, Gateway]:
    """The sandbox's gateways, Telnyx built with ``settings`` over the sandbox's own."""
    gateways = sandbox.gateways()
    base = gateways["fax"].settings.model_dump()
    base["api_key"] = sandbox.api_key
    gateways["fax"] = build_gateway("telnyx", **{**base, **settings})
    return gateways


def worker_on(
    factory: sessionmaker[Session], sandbox: Sandbox, gateways: dict[str, Gateway], *, base_url: str | None = None
) -> WorkerContext:
    """The worker path, fax documents served at ``base_url`` (DISPATCH_PUBLIC_BASE_URL; the web app's by default)."""
    public = base_url or sandbox.web_url
    return worker_context(
        factory,
        gateways,
        media_url=lambda delivery_id, at: media_url(public, delivery_id, secret=sandbox.secret, now=at),
    )


def ticks(n: int) -> Callable[[], bool]:
    """An ``until`` for drive(): true after ``n`` ticks."""
    counter = itertools.count()
    return lambda: next(counter) >= n


def settled(factory: sessionmaker[Session], destination: str) -> Callable[[], bool]:
    """The delivery to ``destination`` was tried and has an outcome (it is no longer planned or in flight)."""
    return lambda: states(factory)[destination] not in ("planned", "queued", "sending", "submitted")


def fax_attempts(factory: sessionmaker[Session]) -> tuple[list[str | None], int]:
    """The fax delivery's attempt outcomes, and how many count against its route."""
    with factory() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.destination == FAX)).one()
        outcomes = list(
            session.scalars(select(Attempt.outcome).where(Attempt.delivery_id == delivery.id).order_by(Attempt.number))
        )
        return outcomes, attempts_on_route(session, delivery)


def assert_waits_on_its_route(factory: sessionmaker[Session], sandbox: Sandbox, name: str) -> None:
    result = states(factory)
    assert result[FAX] in WAITING, history(factory, FAX)
    assert result[EMAIL] == "planned", history(factory, EMAIL)  # no fallback to email
    outcomes, counted = fax_attempts(factory)
    assert outcomes and set(outcomes) == {"not-sent"}, outcomes
    assert counted == 0
    assert campaign_status(factory, name) == "scheduled"
    assert sandbox.mail.oracle() == []


def test_a_wrong_api_key_pauses_telnyx_and_the_fax_waits_until_resumed(
    factory: sessionmaker[Session],
    sandbox: Sandbox,
    tmp_path: Path,
    cli: Callable[..., tuple[int, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = schedule_campaign(factory, one_fax_then_email(tmp_path))
    wrong = worker_on(factory, sandbox, telnyx(sandbox, api_key="KEY_wrong"))
    with caplog.at_level(logging.ERROR):
        drive(wrong, until=settled(factory, FAX))
        drive(wrong, until=ticks(5))  # nothing moves on while the gateway is paused

    assert_waits_on_its_route(factory, sandbox, name)
    assert sandbox.fax.oracle() == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "paused" in r.getMessage()]
    assert len(errors) == 1, errors  # said once, naming the gateway, the setting and the way out
    assert errors[0].startswith("gateway telnyx paused: ") and "check DISPATCH_TELNYX_API_KEY" in errors[0]
    assert errors[0].endswith("then run `dispatch gateway resume telnyx`") and "KEY_wrong" not in errors[0]
    code, listed = cli("gateway", "list")
    assert code == 0 and "paused: configuration" in " ".join(listed.split()), listed
    code, shown = cli("campaign", "show", name)
    assert code == 0, shown
    line = alert(shown)
    assert line.startswith("gateway telnyx paused since "), shown
    assert "DISPATCH_TELNYX_API_KEY" in line, shown
    assert line.endswith("fix the setting, then run `dispatch gateway resume telnyx`"), shown
    assert "KEY_wrong" not in shown

    fixed = worker_on(factory, sandbox, telnyx(sandbox))  # the key corrected, the worker restarted
    drive(fixed, until=ticks(3))
    assert states(factory)[FAX] in WAITING and sandbox.fax.oracle() == []  # still paused: an operator resumes

    code, said = cli("gateway", "resume", "telnyx")
    assert (code, said.strip()) == (0, "gateway telnyx: resumed")
    drive(fixed, until=lambda: campaign_status(factory, name) == "completed")
    assert states(factory) == {FAX: "delivered", EMAIL: "skipped"}
    assert [(e.destination, e.outcome) for e in sandbox.fax.oracle()] == [(FAX, "ok")]  # the fax went once
    assert sandbox.mail.oracle() == []
    code, shown = cli("campaign", "show", name)
    assert shown.splitlines()[0].startswith("campaign"), shown  # no alert any more


def test_a_document_telnyx_cannot_fetch_pauses_telnyx_and_the_fax_waits_until_resumed(
    factory: sessionmaker[Session], sandbox: Sandbox, tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    """DISPATCH_PUBLIC_BASE_URL points at a closed port: the emulator really fetches our media URL, fails,
    and reports file_download_failed by a signed webhook to our web app."""
    name = schedule_campaign(factory, one_fax_then_email(tmp_path))
    nowhere = f"http://127.0.0.1:{free_port()}"
    misrouted = worker_on(factory, sandbox, telnyx(sandbox), base_url=nowhere)
    drive(misrouted, until=settled(factory, FAX))
    drive(misrouted, until=ticks(5))

    assert_waits_on_its_route(factory, sandbox, name)
    assert [e.outcome for e in sandbox.fax.oracle()] == ["media_fetch_failed"]  # accepted, reached nobody
    code, shown = cli("campaign", "show", name)
    line = alert(shown)
    assert line.startswith("gateway telnyx paused since ") and "DISPATCH_PUBLIC_BASE_URL" in line, shown

    fixed = worker_on(factory, sandbox, telnyx(sandbox))
    code, said = cli("gateway", "resume", "telnyx")
    assert code == 0, said
    drive(fixed, until=lambda: campaign_status(factory, name) == "completed")
    assert states(factory) == {FAX: "delivered", EMAIL: "skipped"}
    assert [e.outcome for e in sandbox.fax.oracle()] == ["media_fetch_failed", "ok"]  # the letter reached once
    assert sandbox.duplicates() == {}
