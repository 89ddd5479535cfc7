"""Preview: write the fax PDF and the email (.eml) a campaign would send, for a human to check.

The fax goes to the addressee's first valid number in E.164, as planning records it for a delivery, so
the preview PDF is the very document a worker sends to that number (same bytes, same SHA-256).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.numbers import check_number
from dispatcher.domain.rendering.email import EmailDocument, render_email
from dispatcher.domain.rendering.fax import FaxDocument, render_fax
from dispatcher.domain.rendering.letter import load_letter
from dispatcher.domain.rendering.mime import to_mime

PLACEHOLDER_FAX = "(no fax number)"
PLACEHOLDER_EMAIL = "no-email@example.invalid"  # RFC 2606: can never be delivered


@dataclass(frozen=True, kw_only=True)
class Preview:
    """What write_preview wrote: each path with the document rendered into it (None if not asked)."""

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


def write_preview(
    spec: CampaignSpec,
    base_dir: Path,
    *,
    pdf_path: Path | None,
    eml_path: Path | None,
    date: Date | None = None,
) -> Preview:
    """Render the letter once, then write the fax for the first "To" and the email for the first emailable."""
    letter = load_letter(spec, base_dir, date=date or Date.today())
    reference = f"preview-{spec.campaign.name}"
    fax = email = None
    if pdf_path is not None:
        to = spec.to[0]
        fax = render_fax(spec, letter, to=to, fax_number=_first_fax(to))
        pdf_path.write_bytes(fax.pdf)
    if eml_path is not None:
        email = render_email(spec, letter, to_email=_first_email(spec), reference=reference)
        eml_path.write_bytes(to_mime(email.message).as_bytes())
    return Preview(pdf_path=pdf_path, fax=fax, eml_path=eml_path, email=email)


def _first_fax(to: AddresseeSpec) -> str:
    """The addressee's first valid fax number in E.164 (what a delivery holds), or a placeholder."""
    numbers = (check_number(raw, to.country, file="", where="", field="")[0] for raw in to.fax)
    return next((number for number in numbers if number is not None), PLACEHOLDER_FAX)


def _first_email(spec: CampaignSpec) -> str:
    """The first email address among the "To" then "CC" addressees, or a placeholder if none has one."""
    addressees: list[AddresseeSpec] = [*spec.to, *spec.cc]
    return next((a.email[0] for a in addressees if a.email), PLACEHOLDER_EMAIL)
