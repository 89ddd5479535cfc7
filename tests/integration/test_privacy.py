"""A person's data: `export_person` gives everything the ledger holds about one address, `erase_person` takes
the person out of it (memberships gone, copies kept and counted without them, waiting copies cancelled), and
`dispatch supporters export/erase` do both from the command line. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import pty
import re
import select as io_select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import MetaData, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from dispatcher.domain import control
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger import Finished
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Attempt, Campaign, Delivery, DeliveryEvent, Supporter, SupporterList
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.privacy import AddressError, erase_person, export_person, settle_files
from dispatcher.domain.settings import get_settings
from dispatcher.domain.states import State
from dispatcher.domain.suppression import SuppressionReason, is_suppressed, suppress
from dispatcher.domain.validation import validate
from dispatcher.processes.cli import app
from workers.delivery import WorkerContext

from ..builders import build_campaign, official
from ..spawn import ROOT, base_env
from .conftest import Sandbox, drive, schedule_campaign

ADA, GRACE = "ada.supporter@example.org", "grace.supporter@example.net"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
AT_NOW = "2026-12-01T09:00:00+00:00"
# what must be nowhere in the ledger once Ada is erased: her address, her names on two lists, her custom field
ADA_TRACES = ("ada.supporter", "ada lovelace", "ada l.", "n1 9gu")


def at(minutes: int) -> datetime:
    return NOW + timedelta(minutes=minutes)


def load(factory: sessionmaker[Session], path: Path) -> None:
    spec = load_spec(path)
    with transaction(factory) as session:
        load_campaign(session, spec, validate(spec, file=path), source=path, now=NOW)


def ada_and_grace(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Ada is on two lists and has three copies: delivered (campaign A), waiting (B, a draft copying the
    petition list), and one from an older campaign C whose list she has since left, kept under the address
    as written before addresses were lower-cased. Grace shares campaign A's list and has a queued copy with
    a provider's report. Ada unsubscribed afterwards. Every time is NOW unless given."""
    with time_machine.travel(NOW, tick=False):
        with transaction(factory) as session:
            petition = SupporterList(name="petition")
            session.add(petition)
            session.flush()
            session.add(
                Supporter(
                    list_id=petition.id,
                    email=ADA,
                    name="Ada L.",
                    locale="en-GB",
                    consent=True,
                    consent_at=datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
                    consent_source="petition form",
                    fields={"postcode": "N1 9GU"},
                )
            )
        people = [(ADA, "Ada Lovelace", "yes"), (GRACE, "Grace Hopper", "yes")]
        schedule_campaign(factory, build_campaign(tmp_path / "a", supporters=people), at=NOW)
        load(
            factory,
            build_campaign(
                tmp_path / "b",
                name="petition-campaign",
                supporters_file=None,
                extra={"supporters": {"lists": ["petition"]}},
            ),
        )
        load(
            factory,
            build_campaign(
                tmp_path / "c",
                name="older-campaign",
                supporters=people[:1],
                extra={"supporters": {"list_name": "older-list"}},
            ),
        )
        with transaction(factory) as session:
            control.cancel(session, "older-campaign")
            older = session.scalars(select(SupporterList).where(SupporterList.name == "older-list")).one()
            session.execute(delete(Supporter).where(Supporter.list_id == older.id))
            session.execute(
                update(Delivery)
                .where(Delivery.destination == ADA, Delivery.campaign_id == _campaign_id(session, "older-campaign"))
                .values(destination="Ada.Supporter@Example.ORG")
            )
        with transaction(factory) as session:
            ledger = SqlLedger(session)
            ada = _copy(session, "north-korean-refugees-2015", ADA)
            ledger.move(ada, State.QUEUED, actor="scheduler", at=at(1))
            session.flush()
            ledger.claim(ada, actor="worker:test", at=at(2), lease_until=at(7), gateway="postmark", reports=True)
            evidence = {"status": "queued", "to": f"Ada Lovelace <{ADA}>"}
            finished = Finished(
                "submitted",
                document_sha256="ab" * 32,
                provider_id="pm-1",
                evidence=evidence,
                detail=f"accepted for Ada Lovelace <{ADA}>",  # stored without the address, with the name
            )
            ledger.finish_attempt(ada, 1, at=at(2), finished=finished)
            ledger.move(ada, State.SUBMITTED, actor="worker:test", at=at(2), provider_id="pm-1", data={"to": ADA})
            detail = {"kind": "delivered", "detail": f"delivered to Ada Lovelace <{ADA}>"}
            ledger.move(
                ada, State.DELIVERED, actor="webhook:postmark", at=at(3), reason="postmark: delivered", data=detail
            )
            grace = _copy(session, "north-korean-refugees-2015", GRACE)
            ledger.move(grace, State.QUEUED, actor="scheduler", at=at(1))
            ledger.note(grace, actor="webhook:postmark", at=at(4), reason="postmark: opened", data={"to": GRACE})
            campaign_a = _campaign_id(session, "north-korean-refugees-2015")
            suppress(
                session,
                ADA,
                reason=SuppressionReason.UNSUBSCRIBED,
                source="one-click",
                at=at(5),
                campaign_id=campaign_a,
            )


def _campaign_id(session: Session, name: str) -> int:
    return session.scalars(select(Campaign.id).where(Campaign.name == name)).one()


def _copy(session: Session, campaign: str, address: str) -> Delivery:
    query = select(Delivery).where(
        Delivery.kind == "copy",
        Delivery.destination == address,
        Delivery.campaign_id == _campaign_id(session, campaign),
    )
    return session.scalars(query).one()


def planned(at_: str = AT_NOW) -> dict[str, Any]:
    return {"at": at_, "kind": "change", "from_state": None, "to_state": "planned", "reason": "planned", "data": None}


ADA_EXPORT: dict[str, Any] = {
    "email": ADA,
    "lists": [
        {
            "list": "north-korean-refugees-2015",
            "name": "Ada Lovelace",
            "locale": None,
            "consent": True,
            "consent_at": AT_NOW,  # the CSV gives no date: the import that recorded the consent
            "consent_source": None,
            "fields": {},
            "created_at": AT_NOW,
            "updated_at": AT_NOW,
        },
        {
            "list": "petition",
            "name": "Ada L.",
            "locale": "en-GB",
            "consent": True,
            "consent_at": "2026-11-01T10:00:00+00:00",
            "consent_source": "petition form",
            "fields": {"postcode": "N1 9GU"},
            "created_at": AT_NOW,
            "updated_at": AT_NOW,
        },
    ],
    "copies": [
        {
            "campaign": "north-korean-refugees-2015",
            "channel": "email",
            "state": "delivered",
            "created_at": AT_NOW,
            "updated_at": AT_NOW,
            "events": [
                planned(),
                {
                    "at": "2026-12-01T09:01:00+00:00",
                    "kind": "change",
                    "from_state": "planned",
                    "to_state": "queued",
                    "reason": "",
                    "data": None,
                },
                {
                    "at": "2026-12-01T09:02:00+00:00",
                    "kind": "change",
                    "from_state": "queued",
                    "to_state": "sending",
                    "reason": "attempt 1 via postmark",
                    "data": None,
                },
                {
                    "at": "2026-12-01T09:02:00+00:00",
                    "kind": "change",
                    "from_state": "sending",
                    "to_state": "submitted",
                    "reason": "",
                    "data": {"to": ADA},
                },
                {
                    "at": "2026-12-01T09:03:00+00:00",
                    "kind": "change",
                    "from_state": "submitted",
                    "to_state": "delivered",
                    "reason": "postmark: delivered",
                    "data": {"kind": "delivered", "detail": f"delivered to Ada Lovelace <{ADA}>"},
                },
            ],
        },
        {
            "campaign": "petition-campaign",
            "channel": "email",
            "state": "planned",
            "created_at": AT_NOW,
            "updated_at": AT_NOW,
            "events": [planned()],
        },
        {
            "campaign": "older-campaign",
            "channel": "email",
            "state": "cancelled",
            "created_at": AT_NOW,
            "updated_at": AT_NOW,
            "events": [
                planned(),
                {
                    "at": AT_NOW,
                    "kind": "change",
                    "from_state": "planned",
                    "to_state": "cancelled",
                    "reason": "campaign cancelled",
                    "data": None,
                },
            ],
        },
    ],
    "suppressed": {
        "reason": "unsubscribed",
        "source": "one-click",
        "at": "2026-12-01T09:05:00+00:00",
        "campaign": "north-korean-refugees-2015",
    },
}
NOTHING: dict[str, Any] = {"email": "nobody@example.org", "lists": [], "copies": [], "suppressed": None}


def ledger_text(factory: sessionmaker[Session]) -> str:
    """Every value of every row of every table in the database (found by reflection, not from our models),
    as lower-case text."""
    values: list[str] = []
    with factory() as session:
        tables = MetaData()
        tables.reflect(bind=session.connection())
        for table in tables.sorted_tables:
            for row in session.execute(select(table)):
                values.extend(json.dumps(v, default=str) if isinstance(v, dict | list) else str(v) for v in row)
    return "\n".join(values).lower()


def sqlite_files(url: str) -> bytes:
    """The SQLite ledger's files as they are on disk: the database and its write-ahead log."""
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


# -- export ----------------------------------------------------------------------------------------


def test_export_gives_every_membership_copy_event_and_the_suppression_of_one_address(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ada_and_grace(factory, tmp_path)
    with factory() as session:
        # the address as a person may type it: the one normal form is looked up
        assert export_person(session, " Ada.Supporter@EXAMPLE.org ") == ADA_EXPORT
        assert export_person(session, "nobody@example.org") == NOTHING
        with pytest.raises(AddressError) as caught:
            export_person(session, "ada.supporter@@example.org")
    assert str(caught.value) == "the address given is not a valid email address"


# -- erase -----------------------------------------------------------------------------------------


def test_erase_takes_the_person_out_of_the_ledger_and_keeps_the_counts_states_and_suppression(
    factory: sessionmaker[Session], tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ada_and_grace(factory, tmp_path)
    assert "ada.supporter" in ledger_text(factory)  # the search below finds what is there
    with factory() as session:
        events_before = session.scalar(select(func.count()).select_from(DeliveryEvent))
        deliveries_before = session.execute(
            select(Delivery.campaign_id, func.count()).group_by(Delivery.campaign_id).order_by(Delivery.campaign_id)
        ).all()
    caplog.set_level("DEBUG")
    with transaction(factory) as session:
        result = erase_person(session, "Ada.Supporter@example.org", now=at(10), actor="operator")
    settle_files(factory.kw["bind"])  # after the commit, as `dispatch supporters erase` does
    assert (result.memberships, result.copies, result.cancelled, result.events, result.attempts) == (2, 3, 1, 9, 1)
    assert result.summary() == "erased: 2 list memberships, 3 copies (1 cancelled), 9 events"

    with factory() as session:
        assert session.scalars(select(Supporter.email).order_by(Supporter.email)).all() == [GRACE]
        # every delivery stays, counted: Ada's copies with their states, the waiting one cancelled
        assert (
            session.execute(
                select(Delivery.campaign_id, func.count()).group_by(Delivery.campaign_id).order_by(Delivery.campaign_id)
            ).all()
            == deliveries_before
        )
        copies = session.execute(
            select(Delivery.destination, Delivery.supporter_id, Delivery.state)
            .where(Delivery.kind == "copy")
            .order_by(Delivery.id)
        ).all()
        assert [tuple(c) for c in copies] == [
            ("erased", None, "delivered"),
            (GRACE, copies[1].supporter_id, "queued"),
            ("erased", None, "cancelled"),
            ("erased", None, "cancelled"),
        ]
        assert copies[1].supporter_id is not None
        # one event more (the cancellation); the erased copies' evidence is gone, Grace's is not
        assert session.scalar(select(func.count()).select_from(DeliveryEvent)) == events_before + 1
        data = session.execute(
            select(Delivery.destination, DeliveryEvent.data)
            .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
            .where(Delivery.kind == "copy")
        ).all()
        assert [tuple(d) for d in data if d.data is not None] == [(GRACE, {"to": GRACE})]
        cancel = session.scalars(select(DeliveryEvent).order_by(DeliveryEvent.id.desc())).first()
        assert cancel is not None
        assert (cancel.at, cancel.actor, cancel.from_state, cancel.to_state, cancel.reason) == (
            at(10),
            "operator",
            "planned",
            "cancelled",
            "the supporter's data was erased",
        )
        attempt = session.scalars(select(Attempt).join(Delivery).where(Delivery.kind == "copy")).one()
        assert (attempt.outcome, attempt.provider_id, attempt.evidence, attempt.detail) == (
            "delivered",
            "pm-1",
            {"erased": True},
            "accepted for erased <<address>>",
        )
        # erasure is not an unsubscribe: the suppression entry (a hash) stays, so she is not copied again
        assert is_suppressed(session, ADA)

    text = ledger_text(factory)
    assert [trace for trace in ADA_TRACES if trace in text] == []
    assert "grace.supporter@example.net" in text and "grace hopper" in text
    if db_url.startswith("sqlite"):
        # not in the file either: deleted and overwritten rows are zeroed, the write-ahead log emptied
        on_disk = sqlite_files(db_url).lower()
        assert [trace for trace in ADA_TRACES if trace.encode() in on_disk] == []
        assert b"grace.supporter@example.net" in on_disk

    messages = [r.getMessage().lower() for r in caplog.records]
    assert "erased a person's data: 2 list memberships, 3 copies (1 cancelled), 9 events" in messages
    assert [m for m in messages if any(trace in m for trace in ADA_TRACES)] == []

    with transaction(factory) as session:
        again = erase_person(session, ADA, now=at(11), actor="operator")
    assert again.summary() == "nothing found: no list membership or copy holds this address"
    with factory() as session:
        assert export_person(session, ADA) == {
            "email": ADA,
            "lists": [],
            "copies": [],
            "suppressed": ADA_EXPORT["suppressed"],
        }


def test_a_copy_sent_through_the_worker_and_smtp_is_erased_to_its_counts(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, db_url: str
) -> None:
    people = [(ADA, "Ada Lovelace", "yes")]
    minister = official("A. Minister", email=["minister@example.gov.cn"])  # no fax: nothing slow to render
    path = build_campaign(
        tmp_path, to=[minister], cc=[], supporters=people, extra={"supporters": {"copies": "at-dispatch"}}
    )
    schedule_campaign(factory, path)
    assert sandbox.sink is not None
    drive(worker, until=lambda: any(ADA in m.rcpt_tos for m in sandbox.sink.messages()))  # type: ignore[union-attr]
    with factory() as session:
        sent = session.scalars(select(Delivery).where(Delivery.kind == "copy")).one()
        assert (sent.state, sent.attempt_count) == ("submitted", 1)
    with transaction(factory) as session:
        result = erase_person(session, ADA, now=datetime.now(UTC), actor="operator")
    assert result.summary() == "erased: 1 list membership, 1 copy (0 cancelled), 4 events"
    with factory() as session:
        erased = session.scalars(select(Delivery).where(Delivery.kind == "copy")).one()
        assert (erased.destination, erased.state, erased.attempt_count) == ("erased", "submitted", 1)
        assert session.scalars(select(Attempt.evidence).where(Attempt.delivery_id == erased.id)).all() == [
            {"erased": True}
        ]
    text = ledger_text(factory)
    assert [trace for trace in ADA_TRACES if trace in text] == []


# -- the command line ------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli_ledger(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`dispatch` reads the test's ledger from DISPATCH_DATABASE_URL."""
    monkeypatch.setenv("DISPATCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:]+[+-]\d{4} [A-Z]+ (\S+): (.*)$")


def dispatch(*args: str) -> tuple[int, str, str, list[str]]:
    """Exit code, standard output, standard error without log lines, and the log lines' "logger: message"."""
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", "DISPATCH_LOG_LEVEL": "DEBUG"})
    said, logged = [], []
    for line in result.stderr.splitlines(keepends=True):
        match = LOG_LINE.match(line)
        if match:
            logged.append(f"{match[1]}: {match[2]}")
        else:
            said.append(line)
    return result.exit_code, result.stdout, "".join(said), logged


def test_cli_export_prints_json_or_writes_a_private_file(
    factory: sessionmaker[Session], tmp_path: Path, cli_ledger: str
) -> None:
    ada_and_grace(factory, tmp_path)
    code, out, err, logged = dispatch("supporters", "export", ADA)
    assert (code, err) == (0, "")
    assert json.loads(out) == ADA_EXPORT
    assert "dispatcher.domain.privacy: exported a person's data: 2 list memberships, 3 copies, suppressed" in logged

    target = tmp_path / "ada.json"
    code, out, err, logged = dispatch("supporters", "export", ADA, "--out", str(target))
    assert (code, out, err) == (0, f"wrote {target}: 2 list memberships, 3 copies\n", "")
    assert json.loads(target.read_text(encoding="utf-8")) == ADA_EXPORT
    assert target.stat().st_mode & 0o777 == 0o600  # personal data: readable by its owner only

    code, out, err, logged = dispatch("supporters", "export", "nobody@example.org")
    assert (code, json.loads(out), err) == (0, NOTHING, "nothing found for this address\n")

    code, out, err, logged = dispatch("supporters", "export", "not an address")
    assert code == 2
    assert "Invalid value for 'EMAIL': the address given is not a valid email address" in err
    assert "not an address" not in out + err

    code, out, err, logged = dispatch(
        "supporters", "export", ADA, "--out", str(tmp_path / "no-such-folder" / "ada.json")
    )
    assert code == 1
    assert err.startswith(f"error: cannot write {tmp_path / 'no-such-folder' / 'ada.json'}: ")
    assert "Traceback" not in err


def test_cli_erase_prints_counts_only_and_refuses_without_a_terminal_or_yes(
    factory: sessionmaker[Session], tmp_path: Path, cli_ledger: str
) -> None:
    ada_and_grace(factory, tmp_path)
    code, out, err, logged = dispatch("supporters", "erase", ADA)
    assert (code, out) == (1, "")
    assert err == "error: not a terminal, so nothing was asked and nothing erased: add --yes to erase\n"
    with factory() as session:
        assert session.scalar(select(func.count()).where(Supporter.email == ADA)) == 2

    code, out, err, logged = dispatch("supporters", "erase", ADA, "--yes")
    assert (code, out, err) == (0, "erased: 2 list memberships, 3 copies (1 cancelled), 9 events\n", "")
    assert (
        "dispatcher.domain.privacy: erased a person's data: 2 list memberships, 3 copies (1 cancelled), 9 events"
        in (logged)
    )
    # at DEBUG, every logger: nothing about her but counts
    assert [line for line in logged if any(trace in line.lower() for trace in ADA_TRACES)] == []

    code, out, err, logged = dispatch("supporters", "erase", ADA, "--yes")
    assert (code, out, err) == (
        0,
        "nothing found: no list membership or copy holds this address\n",
        "",
    )
    assert [trace for trace in ADA_TRACES if trace in ledger_text(factory)] == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_erase_asks_on_a_terminal(factory: sessionmaker[Session], tmp_path: Path, db_url: str) -> None:
    """A real process on a pseudo-terminal, as an operator runs it: "n" erases nothing, "y" erases."""
    ada_and_grace(factory, tmp_path)
    command = [sys.executable, "-m", "dispatcher", "supporters", "erase", ADA]
    env = base_env(tmp_path, DISPATCH_DATABASE_URL=db_url)
    question = (
        "Erase 2 list memberships and 3 copies (1 still waiting, to be cancelled)? This cannot be undone. [y/N]: "
    )
    for answer, last_line, left in (
        ("n", "nothing erased", 2),
        ("y", "erased: 2 list memberships, 3 copies (1 cancelled), 9 events", 0),
    ):
        output = on_a_terminal(command, answer, env=env)
        assert question in output
        assert output.rstrip().splitlines()[-1] == last_line
        assert ADA not in output
        with factory() as session:
            assert session.scalar(select(func.count()).where(Supporter.email == ADA)) == left


def on_a_terminal(command: list[str], answer: str, *, env: dict[str, str], timeout: float = 60.0) -> str:
    """Run ``command`` on a pseudo-terminal, type ``answer`` at its first question; everything it printed.

    Read until the terminal reports its end (EIO once the process has exited and its output is drained)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=ROOT)
    os.close(follower)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = io_select.select([leader], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the process ended and everything it wrote was read
                break
            if not chunk:
                break
            output += chunk
            if not answered and output.endswith(b"[y/N]: "):  # asked, and waiting for the answer
                os.write(leader, answer.encode() + b"\n")
                answered = True
        process.wait(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    return output.decode(errors="replace").replace("\r\n", "\n")


def test_an_erased_copy_can_no_longer_unsubscribe_or_be_suppressed(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Its address is gone: a late click on its link, or a late bounce, must not suppress the word
    "erased" (or anything): nothing is added to the suppression list."""
    from dispatcher.domain.models import Suppression
    from dispatcher.domain.unsubscribe import Outcome, unsubscribe

    ada_and_grace(factory, tmp_path)
    with transaction(factory) as session:
        erase_person(session, ADA, now=at(10), actor="operator")
    with factory() as session:
        erased = session.scalars(select(Delivery.id).where(Delivery.destination == "erased")).all()
        before = session.scalar(select(func.count()).select_from(Suppression))
    assert len(erased) == 3
    with transaction(factory) as session:
        assert [unsubscribe(session, i, now=at(11), source="one-click") for i in erased] == [Outcome.NOT_A_COPY] * 3
        assert (
            suppress(session, "erased", reason=SuppressionReason.HARD_BOUNCE, source="webhook:postmark", at=at(11))
            is False
        )
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == before
