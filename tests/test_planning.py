"""Loading campaigns into the ledger, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import db
from dispatcher.domain.campaign_file import CampaignSpec, load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.errors import CampaignConflict, CampaignFileError, TransitionError
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Addressee, Campaign, Delivery, DeliveryEvent, Route, Supporter, utcnow
from dispatcher.domain.planning import LoadResult, load_campaign
from dispatcher.domain.states import State
from dispatcher.domain.validation import Report, validate

from .builders import build_campaign, guo_shengkun, official, wang_yi


def load(factory: sessionmaker[Session], path: Path, *, skip_invalid: bool = False) -> LoadResult:
    spec = load_spec(path)
    report = validate(spec, file=path)
    with transaction(factory) as session:
        return load_campaign(session, spec, report, source=path, skip_invalid=skip_invalid)


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_fixed_seed_loads_every_delivery(factory: sessionmaker[Session], tmp_path: Path) -> None:
    result = load(factory, build_campaign(tmp_path))
    # Xi: 2 faxes; Guo: 1 email; Wang: 1 fax; 2 supporter copies
    assert (result.status, result.planned, result.skipped) == ("created", 6, 0)
    with factory() as session:
        rows = session.execute(
            select(Delivery.kind, Delivery.channel, Delivery.destination, Delivery.state).order_by(Delivery.id)
        ).all()
        assert [tuple(r) for r in rows][:4] == [
            ("letter", "fax", "+861063070900", "planned"),
            ("letter", "fax", "+861062381025", "planned"),
            ("letter", "email", "gabzfwz@mps.gov.cn", "planned"),
            ("letter", "fax", "+861065591516", "planned"),
        ]
        keys = session.scalars(select(Delivery.idempotency_key)).all()
        assert len(set(keys)) == 6
        events = session.scalars(select(DeliveryEvent.to_state)).all()
        assert events == ["planned"] * 6


KEY_FORM = re.compile(r"d[0-9a-f]{31}")  # fits a Message-ID's left part and every provider's reference field


def keys(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return list(session.scalars(select(Delivery.idempotency_key).order_by(Delivery.id)))


def test_keys_come_from_no_public_data_the_same_file_in_two_ledgers_shares_none(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Anyone holding the campaign file (names, numbers, addresses are public) must not be able to compute
    a delivery's reference: a webhook that names it would settle that delivery."""
    path = build_campaign(tmp_path / "campaign")
    load(factory, path)
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    db.upgrade(other_url)
    other_engine = db.make_engine(other_url)
    other = db.session_factory(other_engine)
    try:
        load(other, path)
        assert len(keys(other)) == len(keys(factory)) == 6
        assert set(keys(other)).isdisjoint(keys(factory))
    finally:
        other_engine.dispose()
    assert all(KEY_FORM.fullmatch(key) for key in keys(factory)), keys(factory)


def test_the_same_campaign_under_another_name_shares_no_key(factory: sessionmaker[Session], tmp_path: Path) -> None:
    load(factory, build_campaign(tmp_path / "first"))
    first = keys(factory)
    load(factory, build_campaign(tmp_path / "second", name="north-korean-refugees-2015-again"))
    both = keys(factory)
    assert len(both) == len(set(both)) == 12
    assert set(both[6:]).isdisjoint(first)


def test_a_reload_keeps_every_key(factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = build_campaign(tmp_path)
    load(factory, path)
    before = keys(factory)
    assert load(factory, path).status == "unchanged"
    assert keys(factory) == before


def test_reload_is_unchanged(factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = build_campaign(tmp_path)
    first = load(factory, path)
    second = load(factory, path)
    assert second.status == "unchanged"
    assert second.campaign_id == first.campaign_id
    assert count(factory, Delivery) == 6
    assert count(factory, DeliveryEvent) == 6


def test_invalid_input_writes_nothing(factory: sessionmaker[Session], example_file: Path) -> None:
    with pytest.raises(CampaignFileError) as info:
        load(factory, example_file)
    assert "+011 10 6238 1025" in str(info.value)
    assert count(factory, Campaign) == 0
    assert count(factory, Delivery) == 0


def test_skip_invalid_records_the_route_as_skipped_with_reason(
    factory: sessionmaker[Session], example_file: Path
) -> None:
    result = load(factory, example_file, skip_invalid=True)
    assert (result.planned, result.skipped) == (5, 1)
    with factory() as session:
        skipped = session.scalars(select(Delivery).where(Delivery.state == "skipped")).one()
        assert skipped.destination == "+011 10 6238 1025"
        assert "international dialling prefix" in (skipped.last_error or "")
        assert "+86 10 6238 1025" in (skipped.last_error or "")
        route = session.get(Route, skipped.route_id)
        assert route is not None and route.valid is False and route.value is None
        event = session.scalars(select(DeliveryEvent).where(DeliveryEvent.delivery_id == skipped.id)).one()
        assert event.to_state == "skipped" and "--skip-invalid" in event.reason


def test_changed_draft_is_replaced(factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = build_campaign(tmp_path)
    load(factory, path)
    build_campaign(tmp_path, cc=[guo_shengkun(), wang_yi(fax=["+86 10 6559 1517"])])  # rewrites the same file
    result = load(factory, path)
    assert result.status == "replaced"
    with factory() as session:
        assert "+861065591517" in session.scalars(select(Delivery.destination)).all()
    assert count(factory, Delivery) == 6


def test_changed_scheduled_campaign_is_refused(factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = build_campaign(tmp_path)
    load(factory, path)
    with transaction(factory) as session:
        session.scalars(select(Campaign)).one().status = "scheduled"
    ten = "Detention of ten North Korean refugees"  # the title and the letter's subject, both changed
    build_campaign(tmp_path, title=ten, letter={"subject": ten})  # rewrites the same file
    with pytest.raises(CampaignConflict, match="never rewritten"):
        load(factory, path)
    with factory() as session:
        assert session.scalars(select(Campaign.title)).one() == "Detention of nine North Korean refugees"


def test_double_plan_is_impossible(factory: sessionmaker[Session], tmp_path: Path) -> None:
    load(factory, build_campaign(tmp_path))
    with pytest.raises(IntegrityError), transaction(factory) as session:
        first = session.scalars(select(Delivery).where(Delivery.kind == "letter")).first()
        assert first is not None
        session.add(
            Delivery(
                campaign_id=first.campaign_id,
                kind="letter",
                addressee_id=first.addressee_id,
                route_id=first.route_id,
                channel=first.channel,
                destination=first.destination,
                idempotency_key="another-key",
            )
        )


def test_events_are_append_only(factory: sessionmaker[Session], tmp_path: Path) -> None:
    load(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        session.scalars(select(Campaign)).one().status = "scheduled"
    for statement in ("UPDATE delivery_events SET reason = 'rewritten'", "DELETE FROM delivery_events"):
        with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as session:
            session.execute(text(statement))
    assert count(factory, DeliveryEvent) == 6


def test_transition_records_an_event_and_refuses_forbidden_moves(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    load(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        delivery = session.scalars(select(Delivery)).first()
        assert delivery is not None
        ledger = SqlLedger(session)
        ledger.move(delivery, State.QUEUED, actor="test", at=utcnow(), reason="due")
        with pytest.raises(TransitionError):
            ledger.move(delivery, State.DELIVERED, actor="test", at=utcnow())
    with factory() as session:
        assert session.scalars(select(DeliveryEvent.to_state).order_by(DeliveryEvent.id.desc())).first() == "queued"


MANY = 12_000  # more than two chunks of the bulk path (5,000 rows per INSERT)
INVALID = {1_000: "not-an-email-1000", 5_000: "not-an-email-5000", MANY - 1: "not-an-email-last"}


@pytest.fixture(scope="module")
def many_supporters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CampaignSpec, Report]:
    """The example campaign with 12,000 supporters, three of them invalid; validated once per module."""
    rows = [(INVALID.get(i, f"supporter{i}@example.org"), f"Supporter {i}") for i in range(MANY)]
    path = build_campaign(tmp_path_factory.mktemp("many"), supporters=rows)
    spec = load_spec(path)
    return path, spec, validate(spec, file=path)


def test_many_supporters_load_in_bulk_one_row_key_and_event_each(
    factory: sessionmaker[Session], many_supporters: tuple[Path, CampaignSpec, Report]
) -> None:
    path, spec, report = many_supporters
    with transaction(factory) as session:
        result = load_campaign(session, spec, report, source=path, skip_invalid=True)
    # an invalid address is not a supporter: its row is left out (a problem on its line), with no copy
    assert (result.status, result.planned, result.skipped) == ("created", 4 + MANY - len(INVALID), 0)
    with factory() as session:
        copies = session.execute(
            select(Delivery.id, Delivery.idempotency_key, Delivery.destination, Delivery.state, Supporter.email)
            .join(Supporter, Supporter.id == Delivery.supporter_id)
            .where(Delivery.kind == "copy")
            .order_by(Delivery.id)
        ).all()
        # one copy per valid CSV row, in CSV order, each tied to its own supporter row, with a key of its own
        assert [c.destination for c in copies] == [c.email for c in copies] == [r.email for r in report.supporters]
        assert len(copies) == MANY - len(INVALID)
        assert all(KEY_FORM.fullmatch(c.idempotency_key) for c in copies)
        assert {c.state for c in copies} == {"planned"}
        keys = session.scalars(select(Delivery.idempotency_key)).all()
        assert len(keys) == len(set(keys)) == 4 + MANY - len(INVALID)
        letters = session.scalars(select(Delivery.id).where(Delivery.kind == "letter")).all()
        assert max(letters) < copies[0].id
        # exactly one initial event per delivery, in the delivery's state
        events = session.execute(
            select(
                DeliveryEvent.delivery_id,
                DeliveryEvent.to_state,
                DeliveryEvent.reason,
                Delivery.state,
                DeliveryEvent.actor,
                DeliveryEvent.from_state,
            ).join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
        ).all()
        assert len(events) == len({e.delivery_id for e in events}) == 4 + MANY - len(INVALID)
        assert all(e.to_state == e.state and e.actor == "planner" and e.from_state is None for e in events)
        assert session.scalar(select(func.count()).select_from(Supporter)) == MANY - len(INVALID)
    with transaction(factory) as session:
        again = load_campaign(session, spec, report, source=path, skip_invalid=True)
    assert (again.status, again.planned, again.skipped) == ("unchanged", result.planned, result.skipped)


def test_skip_invalid_leaves_an_invalid_address_out_however_often_it_repeats(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    rows = [("not-an-email", "Ada Lovelace"), ("grace@example.net", "Grace Hopper"), ("not-an-email", "Alan Turing")]
    path = build_campaign(tmp_path, supporters=rows)
    with pytest.raises(CampaignFileError, match="line 2"):
        load(factory, path)
    result = load(factory, path, skip_invalid=True)
    assert (result.status, result.planned, result.skipped) == ("created", 5, 0)
    with factory() as session:
        copies = session.execute(select(Delivery.destination, Delivery.state).where(Delivery.kind == "copy")).all()
        assert [(c.destination, c.state) for c in copies] == [("grace@example.net", "planned")]
        assert session.scalars(select(Supporter.email)).all() == ["grace@example.net"]


def test_skip_invalid_skips_an_addressee_whose_only_route_is_invalid(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, cc=[guo_shengkun(), wang_yi(fax=["not a number"])])
    with pytest.raises(CampaignFileError, match="no usable electronic route"):
        load(factory, path)
    result = load(factory, path, skip_invalid=True)
    assert (result.status, result.planned, result.skipped) == ("created", 5, 1)
    assert result.skipped_addressees == ("cc[1] (Wang Yi)",)
    with factory() as session:
        skipped = session.scalars(select(Delivery).where(Delivery.state == "skipped")).one()
        assert skipped.destination == "not a number"
        assert (skipped.last_error or "").startswith(
            "skipped at load (--skip-invalid): cc[1] (Wang Yi): fax[0]: 'not a number' is not a valid number"
        )


def test_skip_invalid_skips_an_addressee_without_any_route(factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = build_campaign(tmp_path, cc=[guo_shengkun(), official("Nobody Routeless")])
    result = load(factory, path, skip_invalid=True)
    assert (result.status, result.planned, result.skipped) == ("created", 5, 0)
    assert result.skipped_addressees == ("cc[1] (Nobody Routeless)",)
    with factory() as session:
        names = session.scalars(select(Addressee.name).order_by(Addressee.id)).all()
        assert names == ["Xi Jinping", "Guo Shengkun", "Nobody Routeless"]  # kept: the letter lists it


def test_skip_invalid_refuses_a_campaign_no_addressee_can_receive(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, to=[official("A. Minister", fax=["not a number"])], cc=[])
    with pytest.raises(CampaignFileError, match="no usable electronic route"):
        load(factory, path, skip_invalid=True)
    assert count(factory, Campaign) == 0
