"""What a person writes into the ledger from the console or the API, beside the actions of operations.py:
a campaign from a request body (the API) or from the console's form, and a supporter list from a CSV.

Apart from operations.py because these read and validate input (validation, planning, the CSV reader):
the command line's `campaign schedule` imports operations.py and must stay quick to start.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import tomli_w
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.accounts import Identity, record_action
from dispatcher.domain.campaign_body import BODY
from dispatcher.domain.campaign_file import LIST_NAME, CampaignSpec
from dispatcher.domain.errors import CampaignFileError, Problem
from dispatcher.domain.models import Campaign
from dispatcher.domain.planning import fatal_problems, load_campaign
from dispatcher.domain.shape import shape_problems, usable_sections
from dispatcher.domain.states import CampaignStatus
from dispatcher.domain.supporter_import import ImportResult, Rejected, SupporterFileError, import_rows, read_rows
from dispatcher.domain.validation import Report, validate, validate_sections
from dispatcher.processes.operations import Done, Invalid, Refused, run


@dataclass(frozen=True)
class Saved:
    """A campaign written from a request body: created, replaced (a draft) or unchanged, and its counts."""

    message: str
    status: str  # "created" | "replaced" | "unchanged"
    campaign_id: int
    planned: int
    skipped: int


def save_campaign(
    factory: sessionmaker[Session],
    spec: CampaignSpec,
    report: Report,
    *,
    by: Identity,
    now: datetime,
    create: bool,
    skip_invalid: bool = False,
) -> Saved:
    """Write a validated campaign (from dispatcher/domain/campaign_body.py) and plan its deliveries.

    ``create``: a new campaign (409 if the name is taken); otherwise the draft of that name is replaced
    (404 if there is none, 409 if it was scheduled: planning refuses to rewrite it). Errors: Invalid."""
    fatal = fatal_problems(spec, report, skip_invalid=skip_invalid)
    if fatal:
        raise Invalid(report.problems)
    name = spec.campaign.name

    def work(session: Session) -> Done:
        exists = session.scalar(select(Campaign.id).where(Campaign.name == name)) is not None
        if create and exists:
            raise Refused(f"a campaign named {name!r} exists: replace its draft with PUT /api/campaigns/{name}")
        if not create and not exists:
            raise Refused(f"no campaign named {name!r}: create it with POST /api/campaigns", status=404)
        result = load_campaign(session, spec, report, source=Path(BODY), skip_invalid=skip_invalid, now=now)
        if result.status != "unchanged":
            action = "campaign.create" if create else "campaign.replace"
            record_action(session, by, action, now=now, campaign_id=result.campaign_id)
        saved.append(
            Saved(f"{name}: {result.status}", result.status, result.campaign_id, result.planned, result.skipped)
        )
        return Done(f"{name}: {result.status}", CampaignStatus.DRAFT)

    saved: list[Saved] = []
    run(factory, work)
    return saved[0]


MAX_REJECTED_SHOWN = 1000  # rejected rows an import answers one by one; all are counted


@dataclass
class Imported:
    """What a supporter list import did: the counts, and the rejected rows by line and reason (no address)."""

    result: ImportResult
    rejected: list[Rejected] = field(default_factory=list)


def import_list(
    factory: sessionmaker[Session],
    list_name: str,
    stream: BinaryIO,
    *,
    by: Identity,
    now: datetime,
    source: str,
    encoding: str | None = None,
    mapping: Mapping[str, str] | None = None,
) -> Imported:
    """Import a CSV into the list ``list_name`` (created if needed), as `dispatch supporters import` does,
    in one transaction; a file that cannot be imported at all is refused (422) and nothing is written."""
    if not re.fullmatch(LIST_NAME, list_name):
        raise Refused(
            f"the list name {list_name!r} is not usable in a campaign: lower-case letters, digits and '-', "
            "2 to 81 characters, starting with a letter or digit",
            status=422,
        )
    imported: list[Imported] = []

    def work(session: Session) -> Done:
        rows = read_rows(stream, source=source, encoding=encoding, mapping=mapping)
        shown: list[Rejected] = []

        def rejected(row: Rejected) -> None:
            if len(shown) < MAX_REJECTED_SHOWN:
                shown.append(row)

        result = import_rows(session, list_name, rows, now=now, on_rejected=rejected)
        record_action(session, by, "list.import", now=now, reason=result.summary())
        imported.append(Imported(result, shown))
        return Done(result.summary())

    try:
        run(factory, work)
    except SupporterFileError as err:
        raise Refused(str(err), status=422) from err
    except LookupError as err:  # an encoding Python does not know
        raise Refused(f"unknown encoding {encoding!r}", status=422) from err
    return imported[0]


# -- the console's campaign form and supporter list upload ---------------------------------------------------
# (The JSON API creates campaigns from a campaign file's body; the console from a form's fields. Neither
# takes a file path from the person asking: the letter is inline, a supporter list is an uploaded CSV.)

FORM_FILE = Path("console-form") / "campaign.toml"  # how problems name the form (nothing is read from it)
SENDER_FIELDS = ("organisation", "signatory", "signatory_title", "email", "reply_to", "fax_caller_id", "country")
FORM_FIELDS = frozenset(
    {
        *(f"campaign.{k}" for k in ("name", "title", "urgency", "route_policy", "route_order", "deadline")),
        *(f"sender.{k}" for k in SENDER_FIELDS),
        *("sender.address", "schedule.mode", "schedule.at", "letter.subject", "letter.body", "addressees"),
        *("supporters.lists", "supporters.copies"),
    }
)


class FormRefused(Refused):
    """A campaign form with problems: each names the form field it concerns (``problems``: field -> messages,
    "" for the form as a whole)."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        count = sum(len(v) for v in problems.values())
        super().__init__(
            f"the campaign has {count} problem{'s' if count != 1 else ''}: see beside the fields", status=422
        )
        self.problems = problems


def campaign_data_from_form(fields: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The campaign file's content built from the form's fields, and the problems found on the way (a
    TOML textarea that does not parse, or holds other tables than [[to]] and [[cc]])."""
    problems: dict[str, list[str]] = {}

    def get(key: str) -> str:
        return (fields.get(key) or "").strip()

    campaign: dict[str, Any] = {"name": get("campaign.name"), "title": get("campaign.title")}
    for key in ("urgency", "route_policy", "route_order"):
        if get(f"campaign.{key}"):
            campaign[key] = get(f"campaign.{key}")
    if get("campaign.deadline"):
        campaign["deadline"] = get("campaign.deadline")  # validation reads it, and says what is wrong with it
    schedule: dict[str, Any] = {"mode": get("schedule.mode") or "now"}
    if schedule["mode"] == "at":
        schedule["at"] = get("schedule.at")
    campaign["schedule"] = schedule
    sender: dict[str, Any] = {k: get(f"sender.{k}") for k in SENDER_FIELDS if get(f"sender.{k}")}
    address = [line.strip() for line in (fields.get("sender.address") or "").splitlines() if line.strip()]
    if address:
        sender["address"] = address
    letter = {"subject": get("letter.subject"), "body": (fields.get("letter.body") or "").replace("\r\n", "\n")}
    data: dict[str, Any] = {"campaign": campaign, "sender": sender, "letter": letter}
    try:
        people = tomllib.loads(fields.get("addressees") or "")
    except tomllib.TOMLDecodeError as err:
        problems.setdefault("addressees", []).append(f"not valid TOML: {err}")
        people = {}
    unknown = sorted(set(people) - {"to", "cc"})
    if unknown:
        problems.setdefault("addressees", []).append(
            f"only [[to]] and [[cc]] tables belong here, not {', '.join(repr(k) for k in unknown)}"
        )
    data["to"] = people.get("to", [])
    data["cc"] = people.get("cc", [])
    lists = [name for name in re.split(r"[\s,]+", get("supporters.lists")) if name]
    if lists:
        data["supporters"] = {"lists": lists, "copies": get("supporters.copies") or "after-delivery"}
    return data, problems


def form_field(problem: Problem) -> str:
    """The form field a validation problem concerns ("" when it concerns none of them)."""
    where = problem.where.split(" (", 1)[0]
    top = re.split(r"[.\[]", where, maxsplit=1)[0]
    if top in ("to", "cc"):
        return "addressees"
    if top == "supporters":
        return "supporters.lists"
    key = f"{where}.{problem.field}" if problem.field else where
    if key.startswith("campaign.schedule"):
        return "schedule.at" if ".at" in key else "schedule.mode"
    if top.startswith("letter"):
        return "letter.subject" if "subject" in key else "letter.body"
    if key.startswith("sender.address"):
        return "sender.address"
    return key if key in FORM_FIELDS else ""


def create_campaign_from_form(
    factory: sessionmaker[Session],
    fields: Mapping[str, str],
    *,
    by: Identity,
    now: datetime,
    editing: str | None = None,
) -> Done:
    """A draft campaign from the console's form (``editing``: the name of the draft it replaces); raises
    FormRefused with every problem beside its field, or Refused (409) when the name is taken or the draft
    is no longer a draft. Warnings do not refuse it."""
    data, found = campaign_data_from_form(fields)
    if editing is not None:
        data["campaign"]["name"] = editing
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as err:
        report = validate_sections(usable_sections(data), file=FORM_FILE)
        for problem in [*shape_problems(err, file=str(FORM_FILE)), *report.errors]:
            found.setdefault(form_field(problem), []).append(_message(problem))
        raise FormRefused(found) from None
    report = validate(spec, file=FORM_FILE)
    for problem in report.errors:
        found.setdefault(form_field(problem), []).append(_message(problem))
    if found:
        raise FormRefused(found)
    name = spec.campaign.name

    def work(session: Session) -> Done:
        existing = session.scalar(select(Campaign).where(Campaign.name == name))
        if existing is not None and editing is None:
            raise FormRefused({"campaign.name": [f"a campaign named {name!r} exists: choose another name"]})
        if existing is not None and existing.status != CampaignStatus.DRAFT:
            raise Refused(f"{name} is {existing.status}: only a draft is edited")
        try:
            result = load_campaign(session, spec, report, source=FORM_FILE, now=now)
        except CampaignFileError as err:
            raise FormRefused({form_field(p): [_message(p)] for p in err.problems}) from None
        action = "campaign.create" if editing is None else "campaign.edit"
        record_action(session, by, action, now=now, campaign_id=result.campaign_id)
        return Done(f"{name}: {result.status}, {result.planned} deliveries planned", CampaignStatus.DRAFT)

    return run(factory, work)


def _message(problem: Problem) -> str:
    text = f"{problem.field}: {problem.message}" if problem.field else problem.message
    where = problem.where.split(" (", 1)
    if where[0].startswith(("to", "cc")):
        text = f"{problem.where}: {text}"
    return text + (f" (did you mean {problem.suggestion}?)" if problem.suggestion else "")


def form_from_campaign(campaign: Campaign) -> dict[str, str]:
    """A draft's fields as the form shows them, to edit it."""
    spec = CampaignSpec.model_validate(campaign.spec)
    fields = {
        "campaign.name": spec.campaign.name,
        "campaign.title": spec.campaign.title,
        "campaign.urgency": spec.campaign.urgency,
        "campaign.route_policy": spec.campaign.route_policy,
        "campaign.route_order": spec.campaign.route_order,
        "campaign.deadline": spec.campaign.deadline.isoformat() if spec.campaign.deadline else "",
        "schedule.mode": spec.campaign.schedule.mode,
        "schedule.at": spec.campaign.schedule.at.isoformat() if spec.campaign.schedule.at else "",
        "sender.address": "\n".join(spec.sender.address),
        "letter.subject": spec.letter.subject,
        "letter.body": campaign.letter.template_source,
        "addressees": tomli_w.dumps(
            {
                "to": [p.model_dump(exclude_defaults=True) for p in spec.to],
                "cc": [p.model_dump(exclude_defaults=True) for p in spec.cc],
            }
        ),
        "supporters.lists": " ".join(spec.supporters.lists) if spec.supporters else "",
        "supporters.copies": spec.supporters.copies if spec.supporters else "after-delivery",
    }
    for key in SENDER_FIELDS:
        fields[f"sender.{key}"] = str(getattr(spec.sender, key) or "")
    return fields


def import_list_upload(
    factory: sessionmaker[Session], list_name: str, stream: BinaryIO, *, by: Identity, now: datetime
) -> tuple[ImportResult, list[Rejected]]:
    """The console's upload: :func:`import_list` from the uploaded file; the result and the first 20
    rejected rows (line and reason, never an address or a name)."""
    imported = import_list(factory, list_name.strip(), stream, by=by, now=now, source="the uploaded file")
    return imported.result, imported.rejected[:20]
