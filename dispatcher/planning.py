"""Load a validated campaign into the ledger: the campaign and every planned delivery, in one transaction.

Loading is idempotent. The campaign is identified by its name and its content hash (the file, the
template and the supporters CSV): the same content again is "unchanged"; changed content replaces an
unsent draft and is refused for a campaign that was scheduled or has started.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from .campaign_file import Addressee as AddresseeSpec
from .campaign_file import CampaignSpec
from .errors import CampaignConflict, CampaignFileError, Problem
from .ledger import record_initial
from .models import Addressee, Campaign, Delivery, Letter, Route, Supporter
from .states import State
from .validation import Report, RouteCheck

ACTOR = "planner"


@dataclass(frozen=True)
class LoadResult:
    status: Literal["created", "unchanged", "replaced"]
    campaign_id: int
    planned: int
    skipped: int


def fatal_problems(report: Report, *, skip_invalid: bool) -> list[Problem]:
    """Errors that stop a load. With ``skip_invalid``, bad routes and CSV rows are recorded as skipped."""
    if not skip_invalid:
        return report.errors
    skippable = {id(r.problem) for routes in report.routes.values() for r in routes if r.problem}
    skippable |= {id(s.problem) for s in report.supporters if s.problem}
    return [p for p in report.errors if id(p) not in skippable]


def content_hash(spec: CampaignSpec, report: Report) -> str:
    payload = {
        "spec": spec.model_dump(mode="json"),
        "template": report.template_source,
        "supporters": [(s.line, s.email, s.name) for s in report.supporters],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def idempotency_key(campaign: str, *parts: object) -> str:
    """A stable key per delivery: it goes to providers and into Message-IDs."""
    digest = hashlib.sha256("|".join([campaign, *map(str, parts)]).encode()).hexdigest()
    return f"d{digest[:31]}"


def load_campaign(session: Session, spec: CampaignSpec, report: Report, *, source: Path,
                  skip_invalid: bool = False) -> LoadResult:
    """Write the campaign and its planned deliveries (the caller owns the transaction)."""
    fatal = fatal_problems(report, skip_invalid=skip_invalid)
    if fatal:
        raise CampaignFileError(fatal)
    digest = content_hash(spec, report)
    existing = session.scalar(select(Campaign).where(Campaign.name == spec.campaign.name))
    status: Literal["created", "replaced"] = "created"
    if existing is not None:
        if existing.spec_sha256 == digest:
            return _unchanged(session, existing)
        _refuse_unless_draft(session, existing)
        _purge_draft(session, existing)
        status = "replaced"
    campaign = _write_campaign(session, existing, spec, report, digest, source)
    planned, skipped = _plan(session, campaign, spec, report)
    return LoadResult(status, campaign.id, planned, skipped)


def _unchanged(session: Session, campaign: Campaign) -> LoadResult:
    states = [d.state for d in campaign.deliveries]
    return LoadResult("unchanged", campaign.id, states.count("planned"), states.count("skipped"))


def _refuse_unless_draft(session: Session, campaign: Campaign) -> None:
    started = [d for d in campaign.deliveries if d.state not in (State.PLANNED, State.SKIPPED)]
    if campaign.status != "draft" or started:
        raise CampaignConflict(
            f"campaign {campaign.name!r} is {campaign.status} ({len(started)} deliveries started) and its file "
            "has changed; a scheduled campaign is never rewritten. Cancel it and load the new version "
            "under a new campaign.name."
        )


def _purge_draft(session: Session, campaign: Campaign) -> None:
    """Remove an unsent draft's children so the changed file can be planned afresh."""
    for collection in (campaign.deliveries, campaign.addressees, campaign.supporters):
        for row in list(collection):
            session.delete(row)
    session.flush()


def _write_campaign(session: Session, campaign: Campaign | None, spec: CampaignSpec, report: Report,
                    digest: str, source: Path) -> Campaign:
    c = spec.campaign
    values = dict(
        name=c.name, title=c.title, urgency=c.urgency, route_policy=c.route_policy, status="draft",
        schedule=c.schedule.model_dump(mode="json"), deadline=c.deadline,
        sender=spec.sender.model_dump(mode="json"), spec=spec.model_dump(mode="json"),
        spec_sha256=digest, source_path=str(source),
    )
    if campaign is None:
        campaign = Campaign(**values)
        session.add(campaign)
    else:
        for key, value in values.items():
            setattr(campaign, key, value)
    template_sha = hashlib.sha256(report.template_source.encode()).hexdigest()
    if campaign.letter is None:
        campaign.letter = Letter(subject=spec.letter.subject, template_name=report.template_name,
                                 template_source=report.template_source, template_sha256=template_sha)
    else:
        campaign.letter.subject = spec.letter.subject
        campaign.letter.template_name = report.template_name
        campaign.letter.template_source = report.template_source
        campaign.letter.template_sha256 = template_sha
    session.flush()
    return campaign


def _plan(session: Session, campaign: Campaign, spec: CampaignSpec, report: Report) -> tuple[int, int]:
    deliveries: list[tuple[Delivery, str]] = []
    for role, people in (("to", spec.to), ("cc", spec.cc)):
        for index, person in enumerate(people):
            addressee = _addressee(campaign, role, index, person)
            session.add(addressee)
            session.flush()
            for position, check in enumerate(report.routes[(role, index)]):
                deliveries.append(_route_delivery(session, campaign, addressee, role, index, position, check))
    for row in report.supporters:
        deliveries.append(_copy_delivery(session, campaign, row.email, row.name, row.problem))
    session.add_all([d for d, _ in deliveries])
    session.flush()
    for delivery, reason in deliveries:
        record_initial(session, delivery, actor=ACTOR, reason=reason)
    skipped = sum(1 for d, _ in deliveries if d.state == State.SKIPPED)
    return len(deliveries) - skipped, skipped


def _addressee(campaign: Campaign, role: str, index: int, person: AddresseeSpec) -> Addressee:
    return Addressee(
        campaign_id=campaign.id, role=role, position=index, name=person.name, title=person.title,
        organisation=person.organisation, salutation=person.salutation, address=list(person.address),
        country=person.country.upper(), timezone=person.timezone, phones=list(person.phone),
    )


def _route_delivery(session: Session, campaign: Campaign, addressee: Addressee, role: str, index: int,
                    position: int, check: RouteCheck) -> tuple[Delivery, str]:
    route = Route(addressee_id=addressee.id, channel=check.channel, position=position, raw_value=check.raw_value,
                  value=check.value, valid=check.problem is None,
                  problem=check.problem.message if check.problem else None)
    session.add(route)
    session.flush()
    skipped = check.problem is not None
    delivery = Delivery(
        campaign_id=campaign.id, kind="letter", addressee_id=addressee.id, route_id=route.id,
        channel=check.channel, destination=check.value or check.raw_value, route_position=position,
        state=State.SKIPPED if skipped else State.PLANNED,
        idempotency_key=idempotency_key(campaign.name, role, index, check.channel, check.value or check.raw_value),
        last_error=str(check.problem) if check.problem else None,
    )
    reason = f"skipped at load (--skip-invalid): {check.problem}" if check.problem else "planned"
    return delivery, reason


def _copy_delivery(session: Session, campaign: Campaign, email: str, name: str | None,
                   problem: Problem | None) -> tuple[Delivery, str]:
    supporter = Supporter(campaign_id=campaign.id, email=email, name=name)
    session.add(supporter)
    session.flush()
    delivery = Delivery(
        campaign_id=campaign.id, kind="copy", supporter_id=supporter.id, channel="email", destination=email,
        state=State.SKIPPED if problem else State.PLANNED,
        idempotency_key=idempotency_key(campaign.name, "supporter", email.lower()),
        last_error=str(problem) if problem else None,
    )
    # the reason names the CSV line, never the supporter's address (personal data stays out of logs)
    reason = f"skipped at load (--skip-invalid): {problem.where}: invalid email" if problem else "planned"
    return delivery, reason
