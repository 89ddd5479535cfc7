"""A status webhook settles only deliveries of its own gateway, through the real web app, on SQLite and
PostgreSQL.

Six deliveries are submitted, one through each gateway that reports status. Every provider signs a
"delivered" report carrying the reference of another gateway's delivery: it is authentic (the signature
verifies) but is not that provider's to settle, so it matches nothing (404) and changes nothing. The
same report naming the gateway's own delivery is applied, so the refusals are not down to the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.models import Delivery, DeliveryEvent
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.states import State
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext

from .builders import build_campaign
from .signed_webhooks import (
    AT_DISPATCH,
    WEBHOOK_GATEWAYS,
    Submitted,
    gateways,
    provider_id_for,
    sample,
    signed,
    submit_one_per_gateway,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    context = WebContext(
        factory=factory,
        gateways=gateways(),
        secret=None,
        retry=RetryPolicy(base_seconds=1, cap_seconds=1, max_attempts=1, no_fax_tone_limit=2),
        documents=DocumentCache(),
    )
    with TestClient(create_app(context), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(params=[State.SENDING, State.UNKNOWN, State.SUBMITTED])
def submitted(factory: sessionmaker[Session], tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Submitted]:
    """One delivery per gateway: mid-send (no receipt yet), unknown (to be reconciled), or submitted."""
    return submit_one_per_gateway(
        factory, build_campaign(tmp_path, route_policy="all-routes", extra=AT_DISPATCH), state=request.param
    )


def ledger_state(factory: sessionmaker[Session]) -> tuple[dict[int, str], int]:
    with factory() as session:
        states = {d.id: d.state for d in session.scalars(select(Delivery))}
        return states, int(session.scalar(select(func.count(DeliveryEvent.id))) or 0)


@pytest.mark.parametrize("attacker", WEBHOOK_GATEWAYS)
def test_a_signed_webhook_never_settles_another_gateways_delivery(
    factory: sessionmaker[Session], client: TestClient, submitted: dict[str, Submitted], attacker: str
) -> None:
    before = ledger_state(factory)
    for victim in (s for name, s in submitted.items() if name != attacker):
        # the victim's reference, under an id of the attacker's format that names nothing
        body, headers = signed(
            attacker, sample(attacker, provider_id=provider_id_for(attacker), reference=victim.reference)
        )
        response = client.post(f"/webhooks/{attacker}", content=body, headers=headers)
        assert (response.status_code, response.json()) == (404, {"unmatched": 1}), (victim.gateway, response.text)
    assert ledger_state(factory) == before

    own = submitted[attacker]
    body, headers = signed(attacker, sample(attacker, provider_id=own.provider_id, reference=own.reference))
    response = client.post(f"/webhooks/{attacker}", content=body, headers=headers)
    assert (response.status_code, response.json()) == (200, {"applied": 1}), response.text
    states, _ = ledger_state(factory)
    assert states[own.delivery_id] == "delivered"
    assert {i: s for i, s in states.items() if i != own.delivery_id} == {
        i: s for i, s in before[0].items() if i != own.delivery_id
    }


@pytest.mark.parametrize("attacker", WEBHOOK_GATEWAYS)
def test_another_gateways_provider_id_matches_nothing_either(
    factory: sessionmaker[Session], client: TestClient, tmp_path: Path, attacker: str
) -> None:
    submitted = submit_one_per_gateway(factory, build_campaign(tmp_path, route_policy="all-routes", extra=AT_DISPATCH))
    before = ledger_state(factory)
    for victim in (s for name, s in submitted.items() if name != attacker):
        if attacker == "phaxio" and not victim.provider_id.isdigit():
            continue  # a Phaxio report cannot even name an id that is not an integer
        body, headers = signed(attacker, sample(attacker, provider_id=victim.provider_id, reference=None))
        response = client.post(f"/webhooks/{attacker}", content=body, headers=headers)
        assert response.status_code == 404, (victim.gateway, response.text)
    assert ledger_state(factory) == before
