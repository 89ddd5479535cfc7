"""Preview: write the fax PDF and the email (.eml) a campaign would send, for a human to check.

Each "To" addressee gets the letter written to them, so there is a fax and an email for each: with one
"To" addressee they are written to the paths given; with several, each path gets the addressee's place
and name before its suffix ("letter.pdf" becomes "letter-1-Xi-Jinping.pdf", "letter-2-Wang-Yi.pdf").

The fax goes to the addressee's first valid number in E.164, as planning records it for a delivery, so
the preview PDF is the very document a worker sends to that number (same bytes, same SHA-256). The
email goes to the addressee's first valid address; if they have none, it is the copy for the first CC
who gets their letter and has one (a placeholder address if nobody has).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path

import jinja2

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.emails import check_email
from dispatcher.domain.numbers import check_number
from dispatcher.domain.rendering.email import EmailDocument, render_email
from dispatcher.domain.rendering.fax import FaxDocument, render_fax
from dispatcher.domain.rendering.letter import build_letter, load_template
from dispatcher.domain.rendering.mime import to_mime
from dispatcher.domain.templating import Variant, variant_for

PLACEHOLDER_FAX = "(no fax number)"
PLACEHOLDER_EMAIL = "no-email@example.invalid"  # RFC 2606: can never be delivered
_NAME_IN_PATH = 40  # characters of an addressee's name that go into a file name
_NOT_WORD = re.compile(r"\W+")


@dataclass(frozen=True, kw_only=True)
class LetterPreview:
    """The files written for the letter to one "To" addressee: each path with the document rendered
    into it (None if not asked)."""

    to: AddresseeSpec
    pdf_path: Path | None = None
    fax: FaxDocument | None = None
    eml_path: Path | None = None
    email: EmailDocument | None = None

    def __iter__(self) -> Iterator[str]:
        """One line per file written, for the CLI to print: path, what it is, its SHA-256."""
        if self.pdf_path is not None and self.fax is not None:
            yield f"{self.pdf_path} (fax, {self.fax.page_count} pages, sha256 {self.fax.sha256})"
        if self.eml_path is not None and self.email is not None:
            to = ", ".join(self.email.message.to)
            yield f"{self.eml_path} (email to {to}, sha256 {self.email.sha256})"


@dataclass(frozen=True)
class Preview:
    """What write_preview wrote: the files for each "To" addressee's letter, in the campaign's order."""

    letters: tuple[LetterPreview, ...]

    def __iter__(self) -> Iterator[str]:
        """One line per file written, for the CLI to print."""
        for letter in self.letters:
            yield from letter


def write_preview(
    spec: CampaignSpec,
    base_dir: Path,
    *,
    pdf_path: Path | None,
    eml_path: Path | None,
    date: Date | None = None,
) -> Preview:
    """Compile the letter once, then write the fax and the email of each "To" addressee's letter."""
    template = load_template(spec, base_dir)
    day = date or Date.today()
    several = len(spec.to) > 1
    letters = []
    for index, to in enumerate(spec.to):
        place = (index, to) if several else None
        pdf, eml = _path(pdf_path, place), _path(eml_path, place)
        reference = f"preview-{spec.campaign.name}" + (f"-{index + 1}" if several else "")
        fax = _write_fax(spec, template, index, pdf, date=day) if pdf is not None else None
        email = _write_email(spec, template, index, eml, reference=reference, date=day) if eml is not None else None
        letters.append(LetterPreview(to=to, pdf_path=pdf, fax=fax, eml_path=eml, email=email))
    return Preview(tuple(letters))


def _path(path: Path | None, place: tuple[int, AddresseeSpec] | None) -> Path | None:
    """``path``, or with several "To" addressees the path for the one at ``place``: "letter-2-Wang-Yi.pdf"."""
    if path is None or place is None:
        return path
    index, to = place
    name = _NOT_WORD.sub("-", to.name).strip("-")[:_NAME_IN_PATH].strip("-")
    return path.with_name("-".join([path.stem, str(index + 1), *([name] if name else [])]) + path.suffix)


def _write_fax(spec: CampaignSpec, template: jinja2.Template, index: int, path: Path, *, date: Date) -> FaxDocument:
    """The fax of the letter to ``spec.to[index]``, to their first valid number, written to ``path``."""
    fax = preview_fax(spec, template, index, date=date)
    path.write_bytes(fax.pdf)
    return fax


def preview_fax(spec: CampaignSpec, template: jinja2.Template, index: int, *, date: Date) -> FaxDocument:
    """The fax of the letter to ``spec.to[index]``, to their first valid number (in memory: the API's preview)."""
    to = spec.to[index]
    letter = build_letter(spec, template, date=date, variant=variant_for(spec, "to", index))
    return render_fax(spec, letter, to=to, fax_number=_first_fax(to))


def _write_email(
    spec: CampaignSpec, template: jinja2.Template, index: int, path: Path, *, reference: str, date: Date
) -> EmailDocument:
    """The email of the letter to ``spec.to[index]`` (see the module's docstring), written to ``path``."""
    email = preview_email(spec, template, index, reference=reference, date=date)
    path.write_bytes(to_mime(email.message).as_bytes())
    return email


def preview_email(
    spec: CampaignSpec, template: jinja2.Template, index: int, *, reference: str, date: Date
) -> EmailDocument:
    """The email of the letter to ``spec.to[index]`` (see the module's docstring), in memory."""
    variant, address = _email_recipient(spec, index)
    letter = build_letter(spec, template, date=date, variant=variant)
    return render_email(spec, letter, to_email=address, reference=reference)


def _email_recipient(spec: CampaignSpec, index: int) -> tuple[Variant, str]:
    """Who the preview email of the letter to ``spec.to[index]`` goes to: that addressee, else the
    first CC who gets their letter, if one has a valid address; else that addressee at a placeholder."""
    own = variant_for(spec, "to", index)
    candidates = [own, *(v for v in (variant_for(spec, "cc", i) for i in range(len(spec.cc))) if v.to == index)]
    for variant in candidates:
        address = _first_email(variant.recipient(spec))
        if address is not None:
            return variant, address
    return own, PLACEHOLDER_EMAIL


def _first_fax(to: AddresseeSpec) -> str:
    """The addressee's first valid fax number in E.164 (what a delivery holds), or a placeholder."""
    numbers = (check_number(raw, to.country, file="", where="", field="")[0] for raw in to.fax)
    return next((number for number in numbers if number is not None), PLACEHOLDER_FAX)


def _first_email(person: AddresseeSpec) -> str | None:
    """The addressee's first valid email address, normalised as a delivery holds it; None if none."""
    addresses = (check_email(raw, file="", where="", field="")[0] for raw in person.email)
    return next((address for address in addresses if address is not None), None)
