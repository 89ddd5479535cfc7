"""The read API (/api/campaigns/{name}/deliveries) through the real FastAPI app, on SQLite and PostgreSQL:
what it shows of a delivery never holds a supporter's address or a file path of the operator's machine."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent, Supporter
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.validation import validate
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext

from .builders import api_headers, build_campaign, xi_jinping

CAMPAIGN = "north-korean-refugees-2015"
BAD_ADDRESS = "ada.supporter@example"  # no dot after the @: invalid, yet plainly an address
# the seed keeps its malformed second fax number: a route skipped at load
SEED_FAXES = ["+86 10 6307 0900", "+011 10 6238 1025"]
SUPPORTERS = f"email,name,consent\ngrace.supporter@example.net,Grace Hopper,yes\n{BAD_ADDRESS},Ada Lovelace,yes\n"


def client(factory: sessionmaker[Session]) -> TestClient:
    ctx = WebContext(
        factory=factory,
        gateways={},
        secret=None,
        retry=RetryPolicy(base_seconds=1.0, cap_seconds=2.0, max_attempts=2, no_fax_tone_limit=2),
        documents=DocumentCache(),
    )
    return TestClient(create_app(ctx))


def load_skipping_invalid(factory: sessionmaker[Session], path: Path) -> None:
    spec = load_spec(path)
    report = validate(spec, file=path)
    with transaction(factory) as session:
        load_campaign(session, spec, report, source=path, skip_invalid=True)


def test_an_invalid_supporter_row_is_left_out_and_its_address_kept_nowhere(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    # the seed keeps its malformed fax number (a skipped route) and the CSV has one invalid row
    path = build_campaign(tmp_path, csv_text=SUPPORTERS, to=[xi_jinping(fax=SEED_FAXES)])
    load_skipping_invalid(factory, path)
    response = client(factory).get(f"/api/campaigns/{CAMPAIGN}/deliveries", headers=api_headers(factory))
    assert response.status_code == 200
    rows = response.json()["items"]  # one page: the campaign has five deliveries
    assert response.json()["next"] is None
    copies = [(r["kind"], r["state"], r["last_error"]) for r in rows if r["kind"] == "copy"]
    assert copies == [("copy", "planned", None)]  # the invalid row is no member of the list: no copy
    assert BAD_ADDRESS not in response.text
    with factory() as session:
        assert list(session.scalars(select(Supporter.email))) == ["grace.supporter@example.net"]
    assert str(tmp_path) not in response.text


def test_no_stored_reason_keeps_a_supporter_address_or_a_file_path(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, csv_text=SUPPORTERS, to=[xi_jinping(fax=SEED_FAXES)])
    load_skipping_invalid(factory, path)
    with factory() as session:
        reasons = list(session.scalars(select(DeliveryEvent.reason)))
        details = list(session.scalars(select(Attempt.detail)))
        errors = list(session.scalars(select(Delivery.last_error)))
    assert len(reasons) == 5  # 4 letters (one of them the skipped route) and 1 copy: one event each
    for text in [*reasons, *[t for t in details + errors if t]]:
        assert BAD_ADDRESS not in text
        assert str(tmp_path) not in text
    skipped_route = [r for r in reasons if "fax[1]" in r]
    assert skipped_route == [
        "skipped at load (--skip-invalid): to[0] (Xi Jinping): fax[1]: '+011 10 6238 1025' is not a valid "
        "number: '+011' is an international dialling prefix, not a country code (did you mean +86 10 6238 1025?)"
    ]
