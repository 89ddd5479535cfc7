"""Which supporters a campaign copies: the lists it names, consent, suppression, one copy per address;
planned at load and again at scheduling. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.errors import CampaignFileError
from dispatcher.domain.models import CampaignList, Delivery, Supporter, SupporterList
from dispatcher.domain.planning import LoadResult, load_campaign
from dispatcher.domain.suppression import SuppressionReason, suppress
from dispatcher.domain.validation import validate

from .builders import build_campaign

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def load(factory: sessionmaker[Session], path: Path) -> LoadResult:
    spec = load_spec(path)
    report = validate(spec, file=path)
    with transaction(factory) as session:
        return load_campaign(session, spec, report, source=path, now=NOW)


def members(factory: sessionmaker[Session], name: str, rows: list[tuple[str, bool]]) -> None:
    """A list ``name`` holding (email, consent) members, as an import leaves them."""
    with transaction(factory) as session:
        found = session.scalar(select(SupporterList).where(SupporterList.name == name))
        if found is None:
            found = SupporterList(name=name)
            session.add(found)
            session.flush()
        session.add_all(Supporter(list_id=found.id, email=e, name=None, consent=c, fields={}) for e, c in rows)


def copies(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with factory() as session:
        return [
            (d.destination, d.state)
            for d in session.scalars(select(Delivery).where(Delivery.kind == "copy").order_by(Delivery.id))
        ]


def lists_campaign(tmp_path: Path, *names: str) -> Path:
    return build_campaign(tmp_path, supporters_file=None, extra={"supporters": {"lists": list(names)}})


def test_a_campaign_copies_each_consenting_address_on_its_lists_once(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    members(factory, "petition", [("ada@example.org", True), ("alan@example.com", False), ("bob@example.org", True)])
    members(factory, "donors", [("bob@example.org", True), ("grace@example.net", True), ("alan@example.com", True)])
    members(factory, "unrelated", [("eve@example.org", True)])
    result = load(factory, lists_campaign(tmp_path, "petition", "donors"))
    # Alan refused on one list and consented on another: consent on any list the campaign copies counts
    assert copies(factory) == [
        ("ada@example.org", "planned"),
        ("bob@example.org", "planned"),
        ("grace@example.net", "planned"),
        ("alan@example.com", "planned"),
    ]
    assert result.copies is not None
    assert (result.copies.planned, result.copies.without_consent, result.copies.suppressed) == (4, 0, 0)
    with factory() as session:
        # Bob's copy belongs to his membership on the first list the campaign names
        bob = session.scalars(select(Delivery).where(Delivery.destination == "bob@example.org")).one()
        assert session.get(Supporter, bob.supporter_id).list.name == "petition"  # type: ignore[union-attr]
        assert session.scalars(select(CampaignList.position).order_by(CampaignList.position)).all() == [0, 1]


def test_members_without_consent_and_suppressed_addresses_get_no_copy(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    members(factory, "petition", [("ada@example.org", True), ("alan@example.com", False), ("eve@example.org", True)])
    with transaction(factory) as session:
        suppress(session, "eve@example.org", reason=SuppressionReason.COMPLAINT, source="test", at=NOW)
    result = load(factory, lists_campaign(tmp_path, "petition"))
    assert copies(factory) == [("ada@example.org", "planned")]
    assert result.copies is not None
    assert (result.copies.planned, result.copies.without_consent, result.copies.suppressed) == (1, 1, 1)


def test_a_list_that_does_not_exist_is_named_and_nothing_is_written(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    members(factory, "petition", [("ada@example.org", True)])
    with pytest.raises(CampaignFileError) as caught:
        load(factory, lists_campaign(tmp_path, "petition", "no-such-list"))
    assert "supporters: lists: no supporter list is named 'no-such-list'" in str(caught.value)
    with factory() as session:
        assert session.scalars(select(Delivery)).all() == []


def test_members_who_join_or_consent_after_the_load_are_copied_when_it_is_scheduled(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    members(factory, "petition", [("ada@example.org", True), ("alan@example.com", False)])
    path = lists_campaign(tmp_path, "petition")
    load(factory, path)
    members(factory, "petition", [("grace@example.net", True)])
    with transaction(factory) as session:
        alan = session.scalars(select(Supporter).where(Supporter.email == "alan@example.com")).one()
        alan.consent = True
    with transaction(factory) as session:
        control.schedule(session, load_spec(path).campaign.name, now=NOW)
    assert sorted(copies(factory)) == [
        ("ada@example.org", "planned"),
        ("alan@example.com", "planned"),
        ("grace@example.net", "planned"),
    ]


def test_the_campaign_csv_becomes_its_list_holding_exactly_the_files_consenting_rows(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    first = [("ada@example.org", "Ada", "yes"), ("alan@example.com", "Alan", "no"), ("bob@example.org", "Bob", "yes")]
    load(factory, build_campaign(tmp_path, supporters=first))
    with factory() as session:
        rows = session.execute(
            select(SupporterList.name, Supporter.email, Supporter.consent).join(SupporterList).order_by(Supporter.email)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("north-korean-refugees-2015", "ada@example.org", True),
        ("north-korean-refugees-2015", "bob@example.org", True),
    ]
    # the draft's file changes: Bob leaves it, Ada withdraws; the list follows the file, and so do the copies
    second = [("ada@example.org", "Ada", "no"), ("grace@example.net", "Grace", "yes")]
    result = load(factory, build_campaign(tmp_path, supporters=second))
    assert result.status == "replaced"
    with factory() as session:
        held = session.execute(select(Supporter.email, Supporter.consent).order_by(Supporter.email)).all()
    assert [tuple(r) for r in held] == [("grace@example.net", True)]
    assert copies(factory) == [("grace@example.net", "planned")]


def test_scheduling_times_only_this_campaigns_planned_copies(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """The copies get their send time in one statement: those of this campaign still planned, and no other
    campaign's (its copies stay untimed until it is scheduled)."""
    members(factory, "petition", [("ada@example.org", True), ("bob@example.org", True)])
    load(factory, lists_campaign(tmp_path / "a", "petition"))
    load(
        factory,
        build_campaign(
            tmp_path / "b", name="other-campaign", supporters_file=None, extra={"supporters": {"lists": ["petition"]}}
        ),
    )
    with transaction(factory) as session:
        control.schedule(session, "north-korean-refugees-2015", now=NOW)
    with factory() as session:
        rows = session.execute(
            select(Delivery.campaign_id, Delivery.destination, Delivery.not_before)
            .where(Delivery.kind == "copy")
            .order_by(Delivery.campaign_id, Delivery.destination)
        ).all()
    first, second = sorted({r.campaign_id for r in rows})
    assert [(r.campaign_id, r.destination, r.not_before) for r in rows] == [
        (first, "ada@example.org", NOW),  # after-delivery: due now, held by the letters' outcome, not a time
        (first, "bob@example.org", NOW),
        (second, "ada@example.org", None),
        (second, "bob@example.org", None),
    ]
