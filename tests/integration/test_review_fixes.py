"""Rules that keep a second copy of a letter from going out after an ambiguous send or an operator action."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.db import transaction
from dispatcher.domain.errors import CampaignConflict
from dispatcher.domain.messages import FaxMessage
from dispatcher.domain.models import Delivery, DeliveryEvent, utcnow
from dispatcher.domain.rendering.documents import Rendered
from dispatcher.domain.scheduling import claim_due
from workers.delivery import Claim, WorkerContext, claim_delivery, record_outcome
from workers.gateways.errors import Unknown
from workers.reconcile import reconcile

from ..builders import build_campaign, guo_shengkun, wang_yi
from .conftest import Sandbox, campaign_status, drive, schedule_campaign, states

WANG = "+861065591516"


def unknown_without_a_send(worker: WorkerContext, factory: sessionmaker[Session], destination: str) -> int:
    """Claim a delivery and record an ambiguous outcome for it, while the provider received nothing."""
    with transaction(factory) as session:
        ids = {c.destination: c.id for c in claim_due(session, now=utcnow(), limit=100)}
    claim = claim_delivery(worker, ids[destination])
    assert isinstance(claim, Claim)
    fax = FaxMessage(to=destination, from_number="+12125550143", pdf=b"%PDF", page_count=1, reference="r")
    record_outcome(worker, claim, Rendered(fax, "0" * 64, 1), Unknown("read timeout after the request left"))
    return claim.delivery_id


def test_not_found_is_believed_only_twice_and_after_the_grace(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    schedule_campaign(factory, build_campaign(tmp_path))
    delivery_id = unknown_without_a_send(worker, factory, WANG)
    assert reconcile(worker, delivery_id) == "not-found-yet"
    assert reconcile(worker, delivery_id) == "not-found-yet"  # asked again too soon: still not believed
    assert states(factory)[WANG] == "unknown"
    time.sleep(worker.reconcile_grace.total_seconds() + 0.1)
    assert reconcile(worker, delivery_id) == "not-sent"
    assert states(factory)[WANG] == "retry_wait"
    with factory() as session:
        reasons = session.scalars(select(DeliveryEvent.reason).where(DeliveryEvent.delivery_id == delivery_id)).all()
    assert any("twice listed no message" in r for r in reasons)
    assert sandbox.fax.oracle() == []


def test_retry_is_refused_when_another_route_succeeded(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, cc=[guo_shengkun(), wang_yi(email=["wang@example.gov.cn"])])
    sandbox.fax.script(WANG, ["invalid_number"])
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert (states(factory)[WANG], states(factory)["wang@example.gov.cn"]) == ("failed", "submitted")
    with factory() as session:
        fax_id = session.scalars(select(Delivery.id).where(Delivery.destination == WANG)).one()
    with pytest.raises(CampaignConflict, match="a second time"), transaction(factory) as session:
        control.retry(session, fax_id, now=utcnow())
    with transaction(factory) as session:  # forced: the operator means it, and the campaign runs again
        control.retry(session, fax_id, now=utcnow(), force=True)
    assert campaign_status(factory, name) == "scheduled"
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert states(factory)[WANG] == "delivered"
    assert [e.outcome for e in sandbox.fax.oracle() if e.destination == WANG] == ["ok"]


def test_resolve_only_settles_unknown(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, build_campaign(tmp_path))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    with factory() as session:
        delivered = session.scalars(select(Delivery.id).where(Delivery.destination == WANG)).one()
    with pytest.raises(CampaignConflict, match="only an unknown delivery"), transaction(factory) as session:
        control.resolve(session, delivered, sent=False, now=utcnow(), reason="checked the portal", by="alice")
    assert states(factory)[WANG] == "delivered"
