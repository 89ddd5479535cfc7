"""Unsubscribing end to end: a copy sent through the worker path to a real SMTP server (aiosmtpd), its
List-Unsubscribe URL read from the message received and posted to over real HTTP, as a mail client's RFC 8058
one-click request, against the web app on a real port; SQLite and PostgreSQL.

A copy of another campaign, planned before the unsubscribe, is withheld when a worker claims it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Campaign, Delivery, DeliveryEvent, Suppression
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.scheduling import SchedulerConfig, run_once
from dispatcher.domain.validation import validate
from workers.delivery import WorkerContext, deliver_many

from ..builders import build_campaign, official
from .conftest import SETTINGS, Sandbox, campaign_status, drive

ADA, GRACE = "ada.supporter@example.org", "grace.supporter@example.net"
ADA_SHA256 = "0033f2f0fb340d867feac06d964706aae31cf79561121cd8fed7f3f74164d5c1"  # sha256 of ADA, worked out apart
MINISTER = "minister@gov.example"
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def campaign_file(folder: Path, name: str) -> Path:
    """An email-only letter to one minister, copied to Ada and Grace (the campaign's own list)."""
    return build_campaign(
        folder,
        name=name,
        to=[official("A. Minister", email=[MINISTER], salutation="Dear Minister,")],
        cc=[],
        supporters=[(ADA, "Ada Lovelace"), (GRACE, "Grace Hopper")],
    )


def load(factory: sessionmaker[Session], path: Path) -> None:
    spec = load_spec(path)
    with transaction(factory) as session:
        load_campaign(session, spec, validate(spec, file=path), source=path)


def schedule(factory: sessionmaker[Session], name: str) -> None:
    with transaction(factory) as session:
        control.schedule(session, name, now=datetime.now(UTC))


def received(sandbox: Sandbox, address: str) -> list[str]:
    """The List-Unsubscribe header of every message the SMTP server accepted for ``address``."""
    assert sandbox.sink is not None
    return [m.message["List-Unsubscribe"] for m in sandbox.sink.messages() if list(m.rcpt_tos) == [address]]


def run(worker: WorkerContext, factory: sessionmaker[Session], name: str, *, ticks: int = 40) -> Counter[str]:
    """Scheduler ticks and worker batches until the campaign completes; the worker's outcomes, counted."""
    config = SchedulerConfig.from_settings(SETTINGS)
    outcomes: Counter[str] = Counter()
    published: list[Sequence[int]] = []
    for _ in range(ticks):
        run_once(
            factory, lambda _q, ids: published.append(ids), lambda _q, _ids: None, now=worker.clock(), config=config
        )
        while published:
            outcomes.update(deliver_many(worker, list(published.pop())))
        if campaign_status(factory, name) == "completed":
            return outcomes
    raise AssertionError(f"{name} did not complete: {outcomes}")


def test_one_click_from_the_received_copy_unsubscribes_and_a_copy_planned_before_is_withheld(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    load(factory, campaign_file(tmp_path / "later", "later-campaign"))  # Ada's copy planned, not yet due
    first = campaign_file(tmp_path / "first", "first-campaign")
    load(factory, first)
    schedule(factory, "first-campaign")
    drive(worker, until=lambda: campaign_status(factory, "first-campaign") == "completed")

    [header] = received(sandbox, ADA)
    found = re.fullmatch(r"<(http://127\.0\.0\.1:\d+/unsubscribe/(\d+)\.[A-Za-z0-9_-]{43})>", header)
    assert found is not None, header
    url, copy_id = found[1], int(found[2])
    with factory() as session:
        copy = session.get(Delivery, copy_id)
        assert copy is not None and (copy.destination, copy.kind) == (ADA, "copy")
        first_id = session.scalars(select(Campaign.id).where(Campaign.name == "first-campaign")).one()

    with httpx.Client(timeout=10) as http:
        page = http.get(url)  # what a link scanner does: shows the button, unsubscribes nobody
        assert page.status_code == 200 and "<form" in page.text
        assert suppressions(factory) == []

        answer = http.post(url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
        assert answer.status_code == 200
        assert "You are unsubscribed" in answer.text and ADA not in answer.text
        assert suppressions(factory) == [(ADA_SHA256, "unsubscribed", "one-click", first_id)]

        again = http.post(url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
        assert again.status_code == 200 and "already unsubscribed" in again.text

        tampered = url[:-1] + ("A" if url[-1] != "A" else "B")
        for response in (
            http.get(tampered),
            http.post(tampered, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK),
        ):
            assert response.status_code == 404
            assert "This unsubscribe link is not valid" in response.text
    assert suppressions(factory) == [(ADA_SHA256, "unsubscribed", "one-click", first_id)]

    schedule(factory, "later-campaign")
    outcomes = run(worker, factory, "later-campaign")
    assert outcomes["copy-withheld"] == 1  # Ada's
    assert len(received(sandbox, ADA)) == 1  # the first campaign's copy only
    assert len(received(sandbox, GRACE)) == 2  # Grace did not unsubscribe: both campaigns' copies
    with factory() as session:
        later = session.scalars(
            select(Delivery).join(Campaign).where(Campaign.name == "later-campaign", Delivery.destination == ADA)
        ).one()
        reason = session.scalars(
            select(DeliveryEvent.reason).where(DeliveryEvent.delivery_id == later.id).order_by(DeliveryEvent.id.desc())
        ).first()
    assert (later.state, reason) == (
        "cancelled",
        "the address is on the suppression list (unsubscribed, bounced or complained)",
    )


def suppressions(factory: sessionmaker[Session]) -> list[tuple[str, str, str, int | None]]:
    with factory() as session:
        return [
            (s.email_sha256, s.reason, s.source, s.campaign_id)
            for s in session.scalars(select(Suppression).order_by(Suppression.email_sha256))
        ]
