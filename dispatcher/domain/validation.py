"""Semantic validation of a campaign: every problem at once, each naming file, addressee and field.

Numbers are parsed to E.164 with ``phonenumbers`` in the addressee's country (:mod:`.numbers`), emails
checked with ``email-validator`` (:mod:`.emails`; syntax only: no DNS lookups, which would make
validation depend on the network), timezones against the IANA database, free text for control
characters (:mod:`.characters`) and for characters the fax's fonts cannot draw
(:mod:`.rendering.fonts`), each CC's ``letter_to`` against the "To" addressees' names, and the letter
template rendered in the sandbox for every letter the campaign sends (each "To" addressee's, each
CC's copy).
"""

from __future__ import annotations

import difflib
import unicodedata
import zoneinfo
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import phonenumbers
from pydantic import BaseModel

from dispatcher.domain.campaign_file import (
    AddresseeSpec,
    Campaign,
    CampaignSpec,
    CcSpec,
    LetterSpec,
    Sender,
    Supporters,
    read_letter,
)
from dispatcher.domain.characters import IN_LETTER, IN_LINE, printable, unsafe_in_line, unsafe_in_text
from dispatcher.domain.emails import check_email
from dispatcher.domain.errors import CampaignFileError, Problem, TemplateProblemError
from dispatcher.domain.numbers import check_number, same_number
from dispatcher.domain.rendering.copy import phrase_names
from dispatcher.domain.rendering.fonts import CANNOT_DRAW, describe, undrawable
from dispatcher.domain.shape import Sections
from dispatcher.domain.supporter_import import MemberRow, Rejected
from dispatcher.domain.supporters_csv import read_supporters
from dispatcher.domain.templating import FIRST, Variant, compile_letter, render_letter, variant_context, variant_for


@dataclass(frozen=True, kw_only=True)
class RouteCheck:
    channel: str  # "fax" | "email"
    raw_value: str
    value: str | None  # normalised (E.164 / email) when valid
    problem: Problem | None = None


@dataclass(kw_only=True)
class Report:
    """What validation found, and the normalised routes and supporters it produced."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    routes: dict[tuple[str, int], list[RouteCheck]] = field(default_factory=dict)  # (role, index) -> routes
    supporters: list[MemberRow] = field(default_factory=list)  # the campaign CSV's rows with consent
    supporter_rejects: list[Rejected] = field(default_factory=list)  # its other rows (also in problems)
    supporters_file: str | None = None  # that CSV's path, as its problems name it
    template_source: str = ""
    template_name: str = ""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def validate(spec: CampaignSpec, *, file: Path) -> Report:
    """Validate everything in ``spec``; paths in it are relative to the campaign file's folder."""
    return validate_sections(Sections.of(spec), file=file)


def validate_sections(sections: Sections, *, file: Path) -> Report:
    """Validate the sections of a campaign file that have a usable shape (all of them for a valid file).

    Problems about values that were left out for their shape (``sections.unread``) are not reported:
    the shape problem already names them, and e.g. "no usable route" would be wrong for an addressee
    whose fax list was not read.
    """
    report = Report(file=str(file))
    base = file.parent
    undrawn: set[str] = set()  # characters the fax cannot draw, already reported in a field
    for section, place in ((sections.campaign, "campaign"), (sections.sender, "sender"), (sections.letter, "letter")):
        if section is not None:
            _check_lines(section, place, report)
            undrawn |= _check_glyphs(section, place, report)
    if sections.sender is not None:
        _check_sender(sections.sender, report)
    order = sections.campaign.route_order if sections.campaign is not None else "fax-first"
    for role, people in (("to", sections.to), ("cc", sections.cc)):
        for index, person in people.items():
            report.routes[(role, index)] = _check_addressee(person, role, index, order, report)
            undrawn |= _check_glyphs(person, where(role, index, person), report)
    _check_letter_to(sections, report)
    if sections.campaign is not None:
        _check_schedule(sections.campaign, report)
    if sections.letter is not None:
        _check_template(sections.letter, sections, base, report, undrawn=undrawn)
    if sections.supporters is not None:
        _check_supporters(sections.supporters, base, report)
    report.problems = [p for p in report.problems if not _about_unread(p, sections.unread)]
    return report


def _check_supporters(supporters: Supporters, base: Path, report: Report) -> None:
    """The campaign's own CSV, read as an import reads a list; the translations' phrase names."""
    if supporters.csv is not None:
        found = read_supporters(base, supporters.csv, campaign_file=report.file)
        report.supporters_file = str(base / supporters.csv)
        report.supporters, report.supporter_rejects = found.members, found.rejected
        report.problems.extend(found.problems)
    known = phrase_names()
    for locale, words in supporters.translations.items():
        for name in sorted(set(words) - known):
            report.problems.append(
                Problem(
                    file=report.file,
                    where=f"supporters.translations.{locale}",
                    field=name,
                    message=f"no phrase of the copy is named {name!r}; the names are: {', '.join(sorted(known))}",
                )
            )


def _about_unread(problem: Problem, unread: frozenset[str]) -> bool:
    """Whether ``problem`` is about a value that was left out for its shape."""
    owner = problem.where.split(" (", 1)[0]
    paths = [f"{owner}.{name}" for name in problem.field.split("/")] if problem.field else [owner]
    return any(path == gone or path.startswith((f"{gone}.", f"{gone}[")) for path in paths for gone in unread)


def where(role: str, index: int, person: AddresseeSpec) -> str:
    """How problems name an addressee: "to[0] (Xi Jinping)", control characters in the name escaped."""
    return f"{role}[{index}] ({printable(person.name)})"


# The free-text fields of each section: one line each (a list holds one line per item).
_LINE_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    Campaign: ("title",),
    Sender: ("organisation", "signatory", "signatory_title", "address"),
    LetterSpec: ("subject",),
    AddresseeSpec: ("name", "title", "organisation", "salutation", "address"),
    CcSpec: ("name", "title", "organisation", "salutation", "address"),
}


def _check_lines(section: BaseModel, place: str, report: Report) -> None:
    """Refuse control characters and bidirectional controls in the section's free-text fields."""
    for name in _LINE_FIELDS[type(section)]:
        value = getattr(section, name)
        items = [(name, value)] if isinstance(value, str) else [(f"{name}[{i}]", v) for i, v in enumerate(value or [])]
        for label, text in items:
            what = unsafe_in_line(text)
            if what:
                report.problems.append(
                    Problem(file=report.file, where=place, field=label, message=f"contains {what}: {IN_LINE}")
                )


# The fields the fax can print besides the one-line fields: the cover page shows the sender's addresses.
_DRAWN_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    **_LINE_FIELDS,
    Sender: (*_LINE_FIELDS[Sender], "email", "reply_to"),
}


def _check_glyphs(section: BaseModel, place: str, report: Report) -> set[str]:
    """Refuse, in each field the fax can print, the first character its fonts cannot draw (control
    characters aside: :func:`_check_lines` refuses them); return the characters refused."""
    refused: set[str] = set()
    for name in _DRAWN_FIELDS[type(section)]:
        value = getattr(section, name)
        items = [(name, value)] if isinstance(value, str) else [(f"{name}[{i}]", v) for i, v in enumerate(value or [])]
        for label, text in items:
            found = _first_undrawable(text)
            if found is not None:
                index, char = found
                message = f"contains {describe(char)} at character {index + 1}, {CANNOT_DRAW}"
                report.problems.append(Problem(file=report.file, where=place, field=label, message=message))
                refused.add(char)
    return refused


def _first_undrawable(text: str) -> tuple[int, str] | None:
    """The first character of ``text`` that the fax cannot draw, control characters aside, and its index."""
    return next(((i, char) for i, char in undrawable(text) if unicodedata.category(char) != "Cc"), None)


# What makes a From display name look like an address: "@", "<", ">" and their full-width and small forms.
_ADDRESS_MARKS = "@<>\uff20\uff1c\uff1e\ufe6b\ufe64\ufe65"


def _check_sender(sender: Sender, report: Report) -> None:
    if any(mark in sender.organisation for mark in _ADDRESS_MARKS):
        message = (
            f"{sender.organisation!r} is the display name of every email's From: it must not look like an address "
            "(no '@', '<' or '>', nor their full-width forms)"
        )
        report.problems.append(Problem(file=report.file, where="sender", field="organisation", message=message))
    _, problem = check_number(
        sender.fax_caller_id, sender.country, file=report.file, where="sender", field="fax_caller_id"
    )
    if problem:
        report.problems.append(problem)
    for name in ("email", "reply_to"):
        value = getattr(sender, name)
        if value:
            _, problem = check_email(value, file=report.file, where="sender", field=name)
            if problem:
                report.problems.append(problem)


def _check_addressee(person: AddresseeSpec, role: str, index: int, order: str, report: Report) -> list[RouteCheck]:
    place = where(role, index, person)
    _check_lines(person, place, report)
    if person.country.upper() not in phonenumbers.SUPPORTED_REGIONS:
        message = f"unknown country code {person.country!r} (use ISO 3166 alpha-2, e.g. 'CN')"
        report.problems.append(Problem(file=report.file, where=place, field="country", message=message))
    _check_timezone(person.timezone, place, report)
    faxes = [_fax_route(raw, person, place, i, report) for i, raw in enumerate(person.fax)]
    emails = [_email_route(raw, place, i, report) for i, raw in enumerate(person.email)]
    for i, raw in enumerate(person.phone):
        _, problem = check_number(
            raw, person.country, file=report.file, where=place, field=f"phone[{i}]", extension_allowed=True
        )
        if problem:  # a telephone number is a contact detail, never a route: a warning only
            report.problems.append(_as_warning(problem))
    routes = faxes + emails if order == "fax-first" else emails + faxes
    if not any(r.value for r in routes):
        report.problems.append(
            Problem(
                file=report.file,
                where=place,
                field="fax/email",
                message="no usable electronic route: give at least one valid fax number or email address",
            )
        )
    _check_duplicates(routes, place, report)
    return routes


def _fax_route(raw: str, person: AddresseeSpec, place: str, i: int, report: Report) -> RouteCheck:
    value, problem = check_number(raw, person.country, file=report.file, where=place, field=f"fax[{i}]")
    if problem:
        report.problems.append(problem)
    return RouteCheck(channel="fax", raw_value=raw, value=value, problem=problem)


def _email_route(raw: str, place: str, i: int, report: Report) -> RouteCheck:
    value, problem = check_email(raw, file=report.file, where=place, field=f"email[{i}]")
    if problem:
        report.problems.append(problem)
    return RouteCheck(channel="email", raw_value=raw, value=value, problem=problem)


def _check_duplicates(routes: list[RouteCheck], place: str, report: Report) -> None:
    """Report a route that repeats an earlier one of the same addressee, however it is written.

    A number refused with a suggestion (an exit prefix, vanity letters) counts as the number suggested,
    so "011 86 10 6520 5866" beside "+86 10 6520 5866" is a duplicate as well as an error.
    """
    seen: dict[str, tuple[str, str]] = {}  # E.164 number or address -> (field, as written)
    counts = {"fax": 0, "email": 0}
    for route in routes:
        label = f"{route.channel}[{counts[route.channel]}]"
        counts[route.channel] += 1
        key = route.value or (_meant_number(route.problem) if route.channel == "fax" else None)
        if key is None:
            continue
        if key in seen:
            first, written = seen[key]
            kind = "number" if route.channel == "fax" else "address"
            message = f"{route.raw_value!r} is listed twice: it is the same {kind} as {first} ({written!r})"
            report.problems.append(Problem(file=report.file, where=place, field=label, message=message))
        else:
            seen[key] = (label, route.raw_value)


def _meant_number(problem: Problem | None) -> str | None:
    return same_number(problem.suggestion) if problem is not None and problem.suggestion else None


def _check_letter_to(sections: Sections, report: Report) -> None:
    """Refuse a CC's ``letter_to`` that is not the name of exactly one "To" addressee (unless a "To"
    entry was left out for its shape: the name may be its)."""
    names = [person.name for _, person in sorted(sections.to.items())]
    to_unread = any(gone.startswith("to[") for gone in sections.unread)
    for index, cc in sorted(sections.cc.items()):
        value = cc.letter_to
        if value is None or names.count(value) == 1 or (to_unread and value not in names):
            continue
        if value in names:
            message = f'{value!r} is the name of {names.count(value)} "To" addressees: it must name one'
        else:
            message = f'{value!r} is not the name of a "To" addressee ({", ".join(map(repr, names))})'
        close = difflib.get_close_matches(value, names, n=1)
        suggestion = close[0] if close and close[0] != value else None
        place = where("cc", index, cc)
        report.problems.append(
            Problem(file=report.file, where=place, field="letter_to", message=message, suggestion=suggestion)
        )


def _check_timezone(name: str, place: str, report: Report) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        report.problems.append(
            Problem(
                file=report.file,
                where=place,
                field="timezone",
                message=f"unknown timezone {name!r} (use an IANA name such as 'Asia/Shanghai')",
                suggestion=close[0] if close else None,
            )
        )


def _check_schedule(campaign: Campaign, report: Report) -> None:
    if campaign.schedule.mode == "at" and campaign.schedule.at is None:
        report.problems.append(
            Problem(
                file=report.file,
                where="campaign.schedule",
                field="at",
                message="mode 'at' needs a time, e.g. at = 2026-12-01T09:00:00+08:00",
            )
        )
    for name, value in (("schedule.at", campaign.schedule.at), ("deadline", campaign.deadline)):
        if value is not None and value.tzinfo is None:
            message = f"{value.isoformat()} has no UTC offset; write e.g. {value.isoformat()}+08:00"
            report.problems.append(Problem(file=report.file, where="campaign", field=name, message=message))
    hours = campaign.schedule.office_hours
    if hours.start >= hours.end:
        report.problems.append(
            Problem(
                file=report.file,
                where="campaign.schedule.office_hours",
                field="start",
                message="office hours must start before they end",
            )
        )


def _check_template(letter: LetterSpec, sections: Sections, base: Path, report: Report, *, undrawn: set[str]) -> None:
    """Compile the letter template, and render every letter the campaign sends (if every part the
    template sees is usable); ``undrawn`` holds the characters the fax cannot draw that a field's
    problem already names."""
    try:
        name, source = read_letter(letter, base, file=report.file)
    except CampaignFileError as err:
        report.problems.extend(err.problems)
        return
    report.template_name, report.template_source = name, source
    unsafe = unsafe_in_text(source)
    if unsafe:
        report.problems.append(
            Problem(
                file=name,
                where="letter template",
                field=f"line {unsafe[0]}",
                message=f"contains {unsafe[1]}: {IN_LETTER}",
            )
        )
    try:
        template = compile_letter(source, name=name)
    except TemplateProblemError as err:
        report.problems.append(_template_problem(err, name))
        return
    spec, today = sections.letter_spec(), date.today()
    if spec is None:
        return
    for who, variant in _letter_variants(sections, spec):
        try:
            text = render_letter(template, variant_context(spec, variant, date=today))
        except TemplateProblemError as err:  # the first that fails: the others likely fail alike
            report.problems.append(_template_problem(err, name, who=None if variant == FIRST else who))
            return
        _check_letter_glyphs(text, source, name, who=who, undrawn=undrawn, report=report)


def _letter_variants(sections: Sections, spec: CampaignSpec) -> list[tuple[str, Variant]]:
    """Each letter the campaign sends, and how a problem names it by its addressee's index in the file.
    A CC whose ``letter_to`` names no single "To" addressee is left out: _check_letter_to reports it."""
    found = [
        (f"the letter to {where('to', i, sections.to[i])}", variant_for(spec, "to", k))
        for k, i in enumerate(sorted(sections.to))
    ]
    for k, i in enumerate(sorted(sections.cc)):
        try:
            found.append((f"the copy for {where('cc', i, sections.cc[i])}", variant_for(spec, "cc", k)))
        except ValueError:
            continue
    return found


def _template_problem(err: TemplateProblemError, name: str, *, who: str | None = None) -> Problem:
    """The template's problem at its line; ``who`` names the letter it arose in, if not the first one."""
    line = f"line {err.line}" if err.line is not None else ""
    reason = str(err.args[0]).split(": ", 1)[-1]
    message = f"{reason} (in {who})" if who else reason
    return Problem(file=name, where="letter template", field=line, message=message)


def _check_letter_glyphs(text: str, source: str, name: str, *, who: str, undrawn: set[str], report: Report) -> None:
    """Refuse the first character of a rendered letter that the fax cannot draw and no field holds: by
    its line where the template holds it, else as a character of the letter ``who`` names."""
    found = next(
        (char for _, char in undrawable(text) if char not in undrawn and unicodedata.category(char) != "Cc"), None
    )
    if found is None:
        return
    undrawn.add(found)
    at = source.find(found)
    if at < 0:
        message = f"{who} contains {describe(found)}, {CANNOT_DRAW}"
        report.problems.append(Problem(file=name, where="letter template", message=message))
        return
    line, column = source.count("\n", 0, at) + 1, at - source.rfind("\n", 0, at)
    message = f"contains {describe(found)} at character {column}, {CANNOT_DRAW}"
    report.problems.append(Problem(file=name, where="letter template", field=f"line {line}", message=message))


def _as_warning(problem: Problem) -> Problem:
    return Problem(
        file=problem.file,
        where=problem.where,
        field=problem.field,
        message=problem.message,
        suggestion=problem.suggestion,
        severity="warning",
    )
