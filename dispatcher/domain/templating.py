"""Letter templates: a sandboxed Jinja2 environment where every problem is a TemplateProblemError.

A missing variable is an error (StrictUndefined), not a blank in a letter to a minister; the sandbox
refuses attribute tricks such as ``{{ ''.__class__ }}``. Autoescape is off because the template
renders plain text: the HTML part is made later by escaping that text (see :mod:`dispatcher.rendering`).

A campaign's letter comes in variants: each "To" addressee gets the letter written to them (``to``),
and each CC a copy of the letter to the first "To" or to the one its ``letter_to`` names; ``recipient``
is whom a copy goes to (:class:`Variant`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date as Date
from types import TracebackType
from typing import Any, Literal

import jinja2
from jinja2.exceptions import SecurityError

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec, CcSpec
from dispatcher.domain.errors import TemplateProblemError
from dispatcher.domain.template_sandbox import MAX_TEXT, LetterSandbox, TemplateLimitError, rendering_budget

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Errors a template expression can raise at render time besides Jinja's own (e.g. ``{{ 1 / 0 }}``).
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError)

_LIMIT = "over a limit of the letter template"

_ENV = LetterSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def compile_letter(source: str, *, name: str) -> jinja2.Template:
    """Compile a letter template; a syntax error becomes a TemplateProblemError with its line."""
    try:
        code = _ENV.compile(source, name=name, filename=name)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateProblemError(f"syntax error: {err.message}", line=err.lineno, template=name) from err
    except (RecursionError, SyntaxError) as err:  # Jinja's parser or Python's compiler, past their depth
        raise TemplateProblemError("expressions nested too deeply to compile", template=name) from err
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None))


def render_letter(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render a compiled letter within the sandbox's limits of time and memory (see
    :mod:`dispatcher.domain.template_sandbox`); undefined names, sandbox refusals, limits and expression
    errors name their line."""
    name = template.filename or template.name or "letter"
    try:
        with rendering_budget():
            return _bounded_output(template, context, name=name)
    except RecursionError as err:
        message = "calls nested too deeply (a macro that calls itself?)"
        raise TemplateProblemError(message, line=_template_line(err.__traceback__, name), template=name) from err
    except _RENDER_ERRORS as err:
        line = _template_line(err.__traceback__, name)
        raise TemplateProblemError(_describe(err), line=line, template=name) from err


def _bounded_output(template: jinja2.Template, context: Mapping[str, Any], *, name: str) -> str:
    """The letter, refused as soon as it grows past ``MAX_TEXT`` characters."""
    chunks: list[str] = []
    size = 0
    stream = template.generate(context)
    for chunk in stream:
        size += len(chunk)
        if size > MAX_TEXT:
            line = _suspended_line(stream, template)
            message = f"{_LIMIT}: the letter would be longer than {MAX_TEXT} characters"
            raise TemplateProblemError(message, line=line, template=name)
        chunks.append(chunk)
    return "".join(chunks)


def _suspended_line(stream: object, template: jinja2.Template) -> int | None:
    """The template line where a paused rendering stands (its innermost generator from the template)."""
    line = None
    while stream is not None:
        frame = getattr(stream, "gi_frame", None)
        if frame is not None and frame.f_code.co_filename == template.filename:
            line = template.get_corresponding_lineno(frame.f_lineno)
        stream = getattr(stream, "gi_yieldfrom", None)
    return line


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    """The innermost traceback line that Jinja attributed to the template source, if any."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(err: Exception) -> str:
    """A short reason for the campaign author, saying which kind of problem it is."""
    if isinstance(err, TemplateLimitError):
        return f"{_LIMIT}: {err}"
    if isinstance(err, SecurityError):
        return f"refused by the template sandbox: {err}"
    if isinstance(err, jinja2.UndefinedError):
        return f"undefined variable: {err}"
    if isinstance(err, jinja2.TemplateError):
        return str(err)
    return f"{type(err).__name__}: {err}"


Role = Literal["to", "cc"]


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One letter of a campaign: the one written to ``spec.to[to]``, as the copy for the addressee
    ``role``[``index``] (that "To" addressee itself, or a CC)."""

    to: int
    role: Role
    index: int

    def recipient(self, spec: CampaignSpec) -> AddresseeSpec:
        """The addressee this copy goes to."""
        return spec.to[self.index] if self.role == "to" else spec.cc[self.index]


FIRST = Variant(to=0, role="to", index=0)  # the letter to the first "To" addressee: supporter copies show it


def variant_for(spec: CampaignSpec, role: str, index: int) -> Variant:
    """The letter the addressee ``role``[``index``] gets: a "To" addressee the one written to them, a CC
    the one to the "To" addressee its ``letter_to`` names (the first if it names none)."""
    if role == "to":
        return Variant(to=index, role="to", index=index)
    return Variant(to=written_to(spec, spec.cc[index]), role="cc", index=index)


def written_to(spec: CampaignSpec, cc: CcSpec) -> int:
    """The index of the "To" addressee whose letter ``cc`` gets; ValueError if ``letter_to`` is no
    single "To" addressee's name (validation refuses such a campaign)."""
    if cc.letter_to is None:
        return 0
    found = [i for i, to in enumerate(spec.to) if to.name == cc.letter_to]
    if len(found) != 1:
        raise ValueError(f'letter_to {cc.letter_to!r} of CC {cc.name!r} is not the name of one "To" addressee')
    return found[0]


def variants(spec: CampaignSpec) -> list[Variant]:
    """Every letter the campaign sends: one per "To" addressee, then one per CC, in file order."""
    return [variant_for(spec, "to", i) for i in range(len(spec.to))] + [
        variant_for(spec, "cc", i) for i in range(len(spec.cc))
    ]


def variant_context(spec: CampaignSpec, variant: Variant, *, date: Date) -> dict[str, Any]:
    """What the template sees for one variant of the letter."""
    recipient = variant.recipient(spec)
    return letter_context(spec, to=spec.to[variant.to], date=date, recipient=recipient, role=variant.role)


def letter_context(
    spec: CampaignSpec, *, to: AddresseeSpec, date: Date, recipient: AddresseeSpec | None = None, role: Role = "to"
) -> dict[str, Any]:
    """What a letter template sees: to (whom the letter is written to), recipient (whom this copy goes
    to, ``to`` unless given, with its ``role``, "to" or "cc"), cc, sender, campaign and the date as
    "27 November 2026"."""
    return {
        "to": person(to),
        "recipient": {**person(recipient or to), "role": role},
        "cc": [person(a) for a in spec.cc],
        "sender": spec.sender.model_dump(
            include={
                "organisation",
                "signatory",
                "signatory_title",
                "email",
                "reply_to",
                "address",
                "country",
            }
        ),
        "campaign": {
            "name": spec.campaign.name,
            "title": spec.campaign.title,
            "urgency": spec.campaign.urgency,
            "subject": spec.letter.subject,
        },
        "date": format_date(date),
    }


def person(addressee: AddresseeSpec) -> dict[str, Any]:
    """An addressee as templates see it: identity and postal details, never routes."""
    return addressee.model_dump(include={"name", "title", "organisation", "salutation", "address", "country"})


def format_date(value: Date) -> str:
    """A date as letters write it, "27 November 2026", independent of the process locale."""
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"
