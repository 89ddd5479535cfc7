"""The supporter copy: the letter as sent, emailed to one supporter, with how it went and how to stop.

Its subject, text and HTML come from templates/copy/ (subject.txt.j2, supporter.txt.j2, supporter.html.j2) and
its wording from templates/copy/phrases.toml, or from the campaign's translation for the supporter's locale
(``[supporters.translations.<locale>]``). An ``after-delivery`` copy reports each official's outcome; an
``at-dispatch`` one says the letter is being sent. Every copy carries a signed unsubscribe link in its body
and the RFC 8058 headers (``List-Unsubscribe``, ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``) with a
``List-Id`` (RFC 2919).

Supporter names and addresses are personal data: this module renders, it never logs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

import jinja2

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.rendering.email import EmailDocument, build_email
from dispatcher.domain.rendering.letter import RenderedLetter, addressee_lines, paragraphs_of
from dispatcher.domain.rendering.templates import COPY_HTML, COPY_SUBJECT, COPY_TEXT, default_environment, render
from dispatcher.domain.states import CopiesWhen

PHRASES = "copy/phrases.toml"
ONE_CLICK = "List-Unsubscribe=One-Click"
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, kw_only=True)
class OfficialOutcome:
    """What became of the letter to one official, as an ``after-delivery`` copy reports it."""

    role: Literal["To", "CC"]
    name: str
    status: Literal["delivered", "accepted", "not-delivered"]  # accepted: an SMTP server took it, no report
    channel: str | None = None
    destination: str | None = None  # the official's fax number or address, as published
    at: datetime | None = None
    pages: int | None = None
    confirmation: str | None = None  # the provider's id for the delivered fax or email
    reason: str | None = None  # why it could not be delivered


def render_supporter_copy(
    spec: CampaignSpec,
    letter: RenderedLetter,
    *,
    supporter_email: str,
    supporter_name: str | None,
    reference: str,
    unsubscribe_url: str,
    locale: str | None = None,
    outcomes: Sequence[OfficialOutcome] | None = None,
    templates: jinja2.Environment | None = None,
) -> EmailDocument:
    """One supporter's copy, in their language when the campaign has it; ``outcomes`` for after-delivery."""
    when = CopiesWhen(spec.supporters.copies) if spec.supporters else CopiesWhen.AFTER_DELIVERY
    if when is CopiesWhen.AFTER_DELIVERY and outcomes is None:
        raise ValueError("an after-delivery copy reports every official's outcome: none given")
    words = phrases(spec, locale, templates=templates)
    context = _context(spec, letter, supporter_name, words, when, outcomes or (), unsubscribe_url)
    return build_email(
        spec,
        to_email=supporter_email,
        reference=reference,
        subject=render(COPY_SUBJECT, context, templates=templates).strip(),
        text=render(COPY_TEXT, context, templates=templates),
        html=render(COPY_HTML, context, templates=templates),
        headers=unsubscribe_headers(spec, unsubscribe_url),
    )


def unsubscribe_headers(spec: CampaignSpec, unsubscribe_url: str) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe (the URL answers a POST of ``List-Unsubscribe=One-Click``) and RFC 2919
    List-Id: ``"<title>" <campaign-name.sender-domain>``, the title left out unless plain ASCII."""
    domain = spec.sender.email.rpartition("@")[2].encode("idna").decode("ascii").lower()
    list_id = f"<{spec.campaign.name}.{domain}>"
    title = spec.campaign.title
    if title.isascii() and title.isprintable() and '"' not in title and "\\" not in title:
        list_id = f'"{title}" {list_id}'
    return {"List-Unsubscribe": f"<{unsubscribe_url}>", "List-Unsubscribe-Post": ONE_CLICK, "List-Id": list_id}


def phrases(spec: CampaignSpec, locale: str | None, *, templates: jinja2.Environment | None = None) -> dict[str, str]:
    """The copy's wording: English from templates/copy/phrases.toml, overridden by the campaign's translation
    for ``locale`` ("fr-CA"), else for its language ("fr"); a phrase the translation leaves out stays English."""
    words = dict(_default_phrases(templates or default_environment()))
    translations = {k.lower(): v for k, v in (spec.supporters.translations if spec.supporters else {}).items()}
    if locale:
        tag = locale.lower()
        chosen = translations.get(tag) or translations.get(tag.split("-")[0])
        if chosen:
            words.update(chosen)
    return words


def phrase_names(templates: jinja2.Environment | None = None) -> frozenset[str]:
    """The names a campaign's translation may give (validation refuses others)."""
    return frozenset(_default_phrases(templates or default_environment()))


@cache
def _default_phrases(templates: jinja2.Environment) -> Mapping[str, str]:
    assert templates.loader is not None
    source, _, _ = templates.loader.get_source(templates, PHRASES)
    return {str(k): str(v) for k, v in tomllib.loads(source).items()}


def fill(phrase: str, **values: object) -> str:
    """``phrase`` with each ``{name}`` given in ``values`` replaced; nothing else is interpreted (a campaign's
    translation is text, never a format string or a template)."""
    return _FIELD.sub(lambda m: str(values[m[1]]) if m[1] in values else m[0], phrase)


def outcome_line(outcome: OfficialOutcome, words: Mapping[str, str]) -> str:
    """One official's outcome in the copy's words."""
    when = outcome.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if outcome.at else "?"
    values: dict[str, object] = {
        "destination": outcome.destination or "?",
        "time": when,
        "pages": outcome.pages if outcome.pages is not None else "?",
        "confirmation": outcome.confirmation or "?",
        "reason": outcome.reason or "?",
    }
    if outcome.status == "not-delivered":
        return fill(words["not_delivered"], **values)
    if outcome.status == "accepted":
        return fill(words["accepted_email"], **values)
    return fill(words["delivered_fax" if outcome.channel == "fax" else "delivered_email"], **values)


def _names(names: Sequence[str], words: Mapping[str, str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {words['and']} {names[-1]}"


def _context(
    spec: CampaignSpec,
    letter: RenderedLetter,
    supporter_name: str | None,
    words: Mapping[str, str],
    when: CopiesWhen,
    outcomes: Sequence[OfficialOutcome],
    unsubscribe_url: str,
) -> dict[str, Any]:
    """What the copy's templates see: every sentence already in the supporter's words, and the letter."""
    to, cc = addressee_lines(spec.to), addressee_lines(spec.cc)
    name = (supporter_name or "").strip() or None
    organisation = spec.sender.organisation
    names = _names([a.name for a in spec.to], words)
    intro = words["intro_at_dispatch" if when is CopiesWhen.AT_DISPATCH else "intro_after_delivery"]
    return {
        "subject_line": fill(words["subject"], subject=letter.subject),
        "greeting": fill(words["greeting_named"], name=name) if name else words["greeting"],
        "intro": fill(intro, organisation=organisation, names=names),
        "addressed_to": words["addressed_to"],
        "recipients": [("To", line) for line in to] + [("CC", line) for line in cc],
        "outcomes_heading": words["outcomes"] if outcomes else None,
        "outcomes": [(o.role, o.name, outcome_line(o, words)) for o in outcomes],
        "letter_text": letter.text.rstrip("\n"),
        "letter_paragraphs": [p.split("\n") for p in paragraphs_of(letter.text)],
        "why_you_receive": fill(words["why_you_receive"], organisation=organisation),
        "unsubscribe": fill(words["unsubscribe"], url=unsubscribe_url),
        "unsubscribe_link": words["unsubscribe_link"],
        "unsubscribe_url": unsubscribe_url,
    }
