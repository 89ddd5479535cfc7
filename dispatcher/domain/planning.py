"""Load a validated campaign into the ledger: the campaign and every planned delivery, in one transaction.

Loading is idempotent. The campaign is identified by its name and its content hash (the file, the
template and the supporters CSV): the same content again is "unchanged"; changed content replaces an
unsent draft and is refused for a campaign that was scheduled or has started.

Supporters: the campaign's own CSV, if it has one, becomes the list it names (its members made exactly the
file's rows with consent); the lists the campaign copies are recorded, and a copy is planned for each
consenting, unsuppressed address on them (dispatcher/domain/copies.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.copies import CopyPlan, link_lists, plan_copies
from dispatcher.domain.errors import CampaignConflict, CampaignFileError, Problem
from dispatcher.domain.ledger import Ledger, Planned, new_idempotency_key
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import (
    Addressee,
    Campaign,
    CampaignList,
    Delivery,
    LetterTemplate,
    Route,
    Supporter,
    SupporterList,
    utcnow,
)
from dispatcher.domain.states import CampaignStatus, CopiesWhen, DeliveryKind, State
from dispatcher.domain.supporter_import import CONSENT_MISSING, CONSENT_REFUSED, MemberRow, Rejected, import_rows
from dispatcher.domain.validation import Report, RouteCheck, where

ACTOR = "planner"
SKIPPED_AT_LOAD = "skipped at load (--skip-invalid)"
NO_ROUTE_FIELD = "fax/email"  # the field of validation's "no usable electronic route" problem


@dataclass(frozen=True)
class LoadResult:
    status: Literal["created", "unchanged", "replaced"]
    campaign_id: int
    planned: int
    skipped: int
    skipped_addressees: tuple[str, ...] = ()  # "cc[1] (Wang Yi)": no usable route, left out by --skip-invalid
    copies: CopyPlan | None = None  # supporter copies planned, and addresses left out (no consent, suppressed)
    no_consent_rows: int = 0  # rows of the campaign's CSV that refused consent or gave none: no copy
    invalid_rows: int = 0  # its other rows left out: invalid, or repeating an address
    copies_when: str = CopiesWhen.AFTER_DELIVERY  # the campaign's `copies`

    def copies_line(self) -> str | None:
        """One line for the terminal on the supporter copies: counts only, never an address."""
        if self.copies is None:
            return None
        left_out = [
            f"{n} {what}"
            for n, what in (
                (self.no_consent_rows + self.copies.without_consent, "without consent"),
                (self.invalid_rows, "invalid or repeated rows" if self.invalid_rows > 1 else "invalid or repeated row"),
                (self.copies.suppressed, "on the suppression list"),
            )
            if n
        ]
        tail = f"; left out: {', '.join(left_out)}" if left_out else ""
        return f"supporter copies: {self.copies.planned} planned, sent {self.copies_when}{tail}"


def fatal_problems(spec: CampaignSpec, report: Report, *, skip_invalid: bool) -> list[Problem]:
    """Errors that stop a load. With ``skip_invalid``, bad routes are recorded as skipped and bad CSV rows left out,
    and an addressee without a usable route is left out, unless no addressee has one."""
    if not skip_invalid:
        return report.errors
    skippable = {id(p) for p in skippable_problems(spec, report)}
    return [p for p in report.errors if id(p) not in skippable]


def skippable_problems(spec: CampaignSpec, report: Report) -> list[Problem]:
    """The errors ``--skip-invalid`` turns into skipped routes, rows and addressees."""
    found = [r.problem for routes in report.routes.values() for r in routes if r.problem]
    found += [p for p in report.errors if p.file == report.supporters_file and p.where.startswith("line ")]
    unroutable = unroutable_addressees(spec, report)
    if len(unroutable) < len(report.routes):  # someone can still receive the letter
        found += [p for p in report.errors if p.field == NO_ROUTE_FIELD and p.where in unroutable]
    return found


def unroutable_addressees(spec: CampaignSpec, report: Report) -> list[str]:
    """How problems name each addressee without a usable route ("cc[1] (Wang Yi)"), in file order."""
    people = [
        (role, index, person)
        for role, group in (("to", spec.to), ("cc", spec.cc))
        for index, person in enumerate(group)
    ]
    return [
        where(role, index, person)
        for role, index, person in people
        if not any(route.value for route in report.routes.get((role, index), []))
    ]


def content_hash(spec: CampaignSpec, report: Report) -> str:
    payload = {
        "spec": spec.model_dump(mode="json"),
        "template": report.template_source,
        "supporters": [
            (s.line, s.email, s.name, s.locale, s.consent_at.isoformat() if s.consent_at else None, s.consent_source)
            for s in report.supporters
        ],
        "refused": [(r.line, r.kind, r.email) for r in report.supporter_rejects],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_campaign(
    session: Session,
    spec: CampaignSpec,
    report: Report,
    *,
    source: Path,
    skip_invalid: bool = False,
    now: datetime | None = None,
) -> LoadResult:
    """Write the campaign and its planned deliveries (the caller owns the transaction)."""
    fatal = fatal_problems(spec, report, skip_invalid=skip_invalid)
    if fatal:
        raise CampaignFileError(fatal)
    digest = content_hash(spec, report)
    ledger = SqlLedger(session)
    existing = session.scalar(select(Campaign).where(Campaign.name == spec.campaign.name))
    status: Literal["created", "replaced"] = "created"
    if existing is not None:
        if existing.spec_sha256 == digest:
            return _unchanged(session, existing, spec, report)
        _refuse_unless_draft(session, existing)
        _purge_draft(session, ledger, existing)
        status = "replaced"
    campaign = _write_campaign(session, existing, spec, report, digest, source)
    planned, skipped = _plan(session, ledger, campaign, spec, report)
    copies = _copies(session, campaign, spec, report, now=now or utcnow())
    no_consent = sum(1 for r in report.supporter_rejects if r.kind in (CONSENT_REFUSED, CONSENT_MISSING))
    invalid = len(report.supporter_rejects) - no_consent
    return LoadResult(
        status,
        campaign.id,
        planned + copies.planned,
        skipped,
        tuple(unroutable_addressees(spec, report)),
        copies,
        no_consent,
        invalid,
        campaign.copies,
    )


def _unchanged(session: Session, campaign: Campaign, spec: CampaignSpec, report: Report) -> LoadResult:
    counts = _state_counts(session, campaign)
    planned, skipped = counts.get(State.PLANNED, 0), counts.get(State.SKIPPED, 0)
    return LoadResult("unchanged", campaign.id, planned, skipped, tuple(unroutable_addressees(spec, report)))


def _state_counts(session: Session, campaign: Campaign) -> dict[str, int]:
    """Deliveries per state, counted by the database (a campaign may hold hundreds of thousands)."""
    rows = session.execute(
        select(Delivery.state, func.count()).where(Delivery.campaign_id == campaign.id).group_by(Delivery.state)
    )
    return {state: int(n) for state, n in rows}


def _refuse_unless_draft(session: Session, campaign: Campaign) -> None:
    counts = _state_counts(session, campaign)
    started = sum(n for state, n in counts.items() if state not in (State.PLANNED, State.SKIPPED))
    if campaign.status != CampaignStatus.DRAFT or started:
        raise CampaignConflict(
            f"campaign {campaign.name!r} is {campaign.status} ({started} deliveries started) and its file "
            "has changed; a scheduled campaign is never rewritten. Cancel it and load the new version "
            "under a new campaign.name."
        )


def _purge_draft(session: Session, ledger: Ledger, campaign: Campaign) -> None:
    """Remove an unsent draft's children so the changed file can be planned afresh, in bulk DELETEs.

    Their initial events go with the deliveries (ON DELETE CASCADE; the append-only trigger allows
    it while the campaign is a draft), routes are deleted with their addressees.
    """
    session.flush()
    addressee_ids = list(session.scalars(select(Addressee.id).where(Addressee.campaign_id == campaign.id)))
    ledger.discard_draft(campaign.id)
    session.execute(delete(CampaignList).where(CampaignList.campaign_id == campaign.id))
    if addressee_ids:
        session.execute(delete(Route).where(Route.addressee_id.in_(addressee_ids)))
        session.execute(delete(Addressee).where(Addressee.id.in_(addressee_ids)))
    session.expire(campaign, ["deliveries", "addressees"])


def _write_campaign(
    session: Session, campaign: Campaign | None, spec: CampaignSpec, report: Report, digest: str, source: Path
) -> Campaign:
    c = spec.campaign
    values = dict(
        name=c.name,
        title=c.title,
        urgency=c.urgency,
        route_policy=c.route_policy,
        status=CampaignStatus.DRAFT,
        schedule=c.schedule.model_dump(mode="json"),
        deadline=c.deadline,
        sender=spec.sender.model_dump(mode="json"),
        spec=spec.model_dump(mode="json"),
        spec_sha256=digest,
        source_path=str(source),
        copies=spec.supporters.copies if spec.supporters else CopiesWhen.AFTER_DELIVERY,
    )
    if campaign is None:
        campaign = Campaign(**values)
        session.add(campaign)
    else:
        for key, value in values.items():
            setattr(campaign, key, value)
    template_sha = hashlib.sha256(report.template_source.encode()).hexdigest()
    if campaign.letter is None:
        campaign.letter = LetterTemplate(
            subject=spec.letter.subject,
            template_name=report.template_name,
            template_source=report.template_source,
            template_sha256=template_sha,
        )
    else:
        campaign.letter.subject = spec.letter.subject
        campaign.letter.template_name = report.template_name
        campaign.letter.template_source = report.template_source
        campaign.letter.template_sha256 = template_sha
    session.flush()
    return campaign


def _plan(session: Session, ledger: Ledger, campaign: Campaign, spec: CampaignSpec, report: Report) -> tuple[int, int]:
    """Every letter delivery and its initial event, inserted in bulk by the ledger (copies follow)."""
    planned = _letter_deliveries(session, campaign, spec, report)
    ledger.plan(campaign.id, planned, actor=ACTOR)
    skipped = sum(1 for row in planned if row.state == State.SKIPPED)
    return len(planned) - skipped, skipped


def _letter_deliveries(session: Session, campaign: Campaign, spec: CampaignSpec, report: Report) -> list[Planned]:
    """Addressees and routes are few: ORM objects, one flush for all addressees and one for all routes."""
    people = [
        (role, index, person)
        for role, group in (("to", spec.to), ("cc", spec.cc))
        for index, person in enumerate(group)
    ]
    addressees = [addressee_row(campaign, role, index, person) for role, index, person in people]
    session.add_all(addressees)
    session.flush()
    routes: list[tuple[Route, str, int, int, RouteCheck]] = []
    for (role, index, _person), addressee in zip(people, addressees, strict=True):
        for position, check in enumerate(report.routes[(role, index)]):
            route = Route(
                addressee_id=addressee.id,
                channel=check.channel,
                position=position,
                raw_value=check.raw_value,
                value=check.value,
                valid=check.problem is None,
                problem=check.problem.message if check.problem else None,
            )
            routes.append((route, role, index, position, check))
    session.add_all([route for route, *_ in routes])
    session.flush()
    return [
        _route_delivery(campaign, route, role, index, position, check) for route, role, index, position, check in routes
    ]


def addressee_row(campaign: Campaign, role: str, index: int, person: AddresseeSpec) -> Addressee:
    """The ledger row of one addressee of the campaign file (the bench's row-by-row baseline builds it too)."""
    return Addressee(
        campaign_id=campaign.id,
        role=role,
        position=index,
        name=person.name,
        title=person.title,
        organisation=person.organisation,
        salutation=person.salutation,
        address=list(person.address),
        country=person.country.upper(),
        timezone=person.timezone,
        phones=list(person.phone),
    )


def _route_delivery(
    campaign: Campaign, route: Route, role: str, index: int, position: int, check: RouteCheck
) -> Planned:
    destination = check.value or check.raw_value
    values = {
        "campaign_id": campaign.id,
        "kind": DeliveryKind.LETTER,
        "addressee_id": route.addressee_id,
        "route_id": route.id,
        "supporter_id": None,
        "channel": check.channel,
        "destination": destination,
        "route_position": position,
        "idempotency_key": new_idempotency_key(),
    }
    if check.problem is None:
        return Planned(values, State.PLANNED, "planned")
    # the place in the campaign file and the problem, never the file's path on the operator's machine
    return Planned(values, State.SKIPPED, f"{SKIPPED_AT_LOAD}: {check.problem.where}: {check.problem.brief()}")


def _copies(session: Session, campaign: Campaign, spec: CampaignSpec, report: Report, *, now: datetime) -> CopyPlan:
    """The campaign CSV's list made the file's rows, the lists recorded, and the copies planned."""
    if spec.supporters is None:
        return CopyPlan(0, 0, 0, 0)
    names = list(spec.supporters.lists)
    if spec.supporters.csv is not None:
        own = spec.supporters.list_name or spec.campaign.name
        _sync_campaign_list(session, own, report, now=now)
        names = [own, *(n for n in names if n != own)]
    missing = link_lists(session, campaign, names)
    if missing:
        raise CampaignFileError(
            [
                Problem(
                    file=str(campaign.source_path),
                    where="supporters",
                    field="lists",
                    message=f"no supporter list is named {name!r}: import it first "
                    f"(dispatch supporters import FILE --list {name})",
                )
                for name in missing
            ]
        )
    return plan_copies(session, campaign)


def _sync_campaign_list(session: Session, name: str, report: Report, *, now: datetime) -> None:
    """The campaign CSV's list holds exactly the file's members with consent: rows imported (a refusal
    withdraws consent), members no longer in the file removed."""
    rows: list[MemberRow | Rejected] = sorted([*report.supporters, *report.supporter_rejects], key=lambda r: r.line)
    import_rows(session, name, rows, now=now)
    keep = {m.email for m in report.supporters}
    members = session.execute(
        select(Supporter.id, Supporter.email).join(SupporterList).where(SupporterList.name == name)
    )
    stale = [supporter_id for supporter_id, email in members if email not in keep]
    for start in range(0, len(stale), 500):
        session.execute(delete(Supporter).where(Supporter.id.in_(stale[start : start + 500])))
