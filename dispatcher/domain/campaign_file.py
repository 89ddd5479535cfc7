"""The campaign file: a TOML document, read into typed models (schema in README, "Campaign file").

Parsing checks shape only (unknown keys, wrong types, missing fields); semantic checks (numbers,
emails, timezones, the template) live in :mod:`dispatcher.validation` so that every problem is
reported at once.
"""

from __future__ import annotations

import tomllib
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from dispatcher.domain.errors import CampaignFileError, Problem
from dispatcher.domain.input_files import TEMPLATE_MAX_BYTES, read_campaign_text, read_named_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(_Strict):
    organisation: str
    signatory: str
    signatory_title: str = ""
    email: str  # the From address of every email
    reply_to: str | None = None
    fax_caller_id: str  # E.164 caller id for faxes
    address: list[str] = Field(default_factory=list)
    country: str = "US"  # region used to parse fax_caller_id when it has no "+"


# Texts the ledger keeps in bounded columns (dispatcher/domain/models.py) are bounded here to the same
# length, so a longer one is a problem naming its field, not a refusal from the database at load.
class AddresseeSpec(_Strict):
    name: str = Field(max_length=200)
    title: str = Field(default="", max_length=200)
    organisation: str = Field(default="", max_length=300)
    salutation: str | None = Field(default=None, max_length=300)
    address: list[str] = Field(default_factory=list)
    country: str  # ISO 3166-1 alpha-2, used to parse national numbers
    timezone: str = Field(max_length=64)  # IANA name, e.g. "Asia/Shanghai"
    fax: list[Annotated[str, Field(max_length=320)]] = Field(default_factory=list)
    email: list[Annotated[str, Field(max_length=320)]] = Field(default_factory=list)
    phone: list[str] = Field(default_factory=list)  # contact details only, never a route


class CcSpec(AddresseeSpec):
    """A CC addressee: their copy is the letter written to the first "To" addressee, or to the one
    ``letter_to`` names (validation refuses a name that is no "To" addressee's)."""

    letter_to: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset_letter_to(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``letter_to`` out when not given, so a campaign written before it existed dumps (and
        hashes, see planning.content_hash) as it did."""
        data: dict[str, Any] = handler(self)
        if self.letter_to is None:
            data.pop("letter_to", None)
        return data


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _weekdays() -> list[Day]:
    return ["mon", "tue", "wed", "thu", "fri"]


class OfficeHours(_Strict):
    start: time = time(9, 0)
    end: time = time(17, 0)
    days: list[Day] = Field(default_factory=_weekdays)


class Schedule(_Strict):
    mode: Literal["now", "at", "office-hours"] = "now"
    at: datetime | None = None  # timezone-aware, for mode "at"
    office_hours: OfficeHours = Field(default_factory=OfficeHours)


class LetterSpec(_Strict):
    subject: str = Field(max_length=300)
    template: str | None = Field(default=None, max_length=300)  # path relative to the campaign file
    body: str | None = None  # or the template inline

    @model_validator(mode="after")
    def _one_source(self) -> LetterSpec:
        if (self.template is None) == (self.body is None):
            raise ValueError("give exactly one of 'template' (a file) or 'body' (inline)")
        return self


LIST_NAME = r"^[a-z0-9][a-z0-9-]{1,80}$"
# a BCP 47 language tag as supporters' locales are written: "fr", "fr-CA", "zh-Hant"
LOCALE = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


class Supporters(_Strict):
    """Who receives a copy, and when: the named supporter lists, and/or a CSV beside the campaign file
    (imported as a list named after the campaign, or ``list_name``); only members with consent are copied."""

    csv: str | None = None  # path relative to the campaign file; columns as `dispatch supporters import`
    list_name: str | None = Field(default=None, pattern=LIST_NAME)  # the list the CSV becomes
    lists: list[Annotated[str, Field(pattern=LIST_NAME)]] = Field(default_factory=list)
    copies: Literal["after-delivery", "at-dispatch"] = "after-delivery"
    # per locale ("fr", "fr-CA"), the copy's wording in that language: phrase name -> text
    translations: dict[Annotated[str, Field(pattern=LOCALE)], dict[str, str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _some_supporters(self) -> Supporters:
        if self.csv is None and not self.lists:
            raise ValueError("name the supporter lists to copy ('lists'), or a 'csv' file, or both")
        if self.list_name is not None and self.csv is None:
            raise ValueError("'list_name' names the list a 'csv' file becomes; give the 'csv' too")
        return self


class Campaign(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,80}$")
    title: str = Field(max_length=300)
    urgency: Literal["normal", "urgent"] = "urgent"
    route_policy: Literal["first-success", "all-routes"] = "first-success"
    route_order: Literal["fax-first", "email-first"] = "fax-first"
    deadline: datetime | None = None
    schedule: Schedule = Field(default_factory=Schedule)


class CampaignSpec(_Strict):
    campaign: Campaign
    sender: Sender
    letter: LetterSpec
    to: list[AddresseeSpec] = Field(min_length=1)
    cc: list[CcSpec] = Field(default_factory=list)
    supporters: Supporters | None = None


def load_spec(path: Path) -> CampaignSpec:
    """Read and shape-check a campaign file; raise CampaignFileError listing every problem.

    When the shape is wrong, the sections that can still be read are validated too, so the error lists
    the shape problems and the content problems of the rest of the file together.
    """
    text = read_campaign_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CampaignFileError([Problem(file=str(path), where="", message=f"not valid TOML: {err}")]) from err
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as err:
        raise CampaignFileError(_every_problem(err, data, path)) from err


def _every_problem(err: ValidationError, data: dict[str, Any], path: Path) -> list[Problem]:
    """The shape problems, then the content problems of the sections whose shape is usable."""
    # Imported here: both modules import this one for its models.
    from dispatcher.domain.shape import shape_problems, usable_sections
    from dispatcher.domain.validation import validate_sections

    report = validate_sections(usable_sections(data), file=path)
    return [*shape_problems(err, file=str(path)), *report.problems]


def letter_source(spec: CampaignSpec, base: Path, *, file: str | None = None) -> tuple[str, str]:
    """The letter template's name and source: the file named in ``letter.template`` (relative to the
    campaign file's folder, and inside it) or the inline ``letter.body``.

    A template that cannot be read (outside the folder, not a regular file, over 256 KiB, not UTF-8)
    raises a CampaignFileError whose Problem names ``file`` (the campaign file; its folder if not given).
    """
    return read_letter(spec.letter, base, file=file or str(base))


def read_letter(letter: LetterSpec, base: Path, *, file: str) -> tuple[str, str]:
    """:func:`letter_source` for the ``[letter]`` section alone."""
    if letter.template:
        source = read_named_file(
            base,
            letter.template,
            limit=TEMPLATE_MAX_BYTES,
            what="a template",
            campaign_file=file,
            where="letter",
            field="template",
        )
        return str(base / letter.template), source
    return "letter.body", letter.body or ""
