"""What a worker sends for a delivery, rendered from the ledger with a per-campaign cache.

The letter is rendered once per campaign version (keyed by the campaign's content hash); fax PDFs
and emails are built per delivery from it. Rendering is deterministic, so the web process that
serves a fax PDF to a provider produces the very bytes whose SHA-256 the worker recorded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.messages import EmailMessage, FaxMessage
from dispatcher.domain.models import Campaign, Delivery
from dispatcher.domain.rendering.copy import render_supporter_copy
from dispatcher.domain.rendering.email import render_email
from dispatcher.domain.rendering.fax import FaxDocument, render_fax
from dispatcher.domain.rendering.letter import RenderedLetter, build_letter
from dispatcher.domain.states import Channel, DeliveryKind
from dispatcher.domain.templating import compile_letter


@dataclass(frozen=True)
class Rendered:
    message: FaxMessage | EmailMessage
    sha256: str
    page_count: int | None


class DocumentCache:
    """Per-process cache of rendered letters, bounded to the most recent campaigns."""

    def __init__(self, *, max_campaigns: int = 16) -> None:
        self._letters: dict[tuple[int, str], tuple[CampaignSpec, RenderedLetter]] = {}
        self._lock = threading.Lock()
        self._max = max_campaigns

    def letter(self, campaign: Campaign) -> tuple[CampaignSpec, RenderedLetter]:
        key = (campaign.id, campaign.spec_sha256)
        with self._lock:
            if key in self._letters:
                return self._letters[key]
        spec = CampaignSpec.model_validate(campaign.spec)
        template = compile_letter(campaign.letter.template_source, name=campaign.letter.template_name)
        letter = build_letter(spec, template, date=campaign.letter_date or date.today())
        with self._lock:
            if len(self._letters) >= self._max:
                self._letters.pop(next(iter(self._letters)))
            self._letters[key] = (spec, letter)
        return spec, letter

    def fax_document(self, delivery: Delivery) -> FaxDocument:
        spec, letter = self.letter(delivery.campaign)
        return render_fax(spec, letter, to=addressee_spec(spec, delivery), fax_number=delivery.destination)

    def render(self, delivery: Delivery, *, media_url: str | None = None) -> Rendered:
        """The message for one delivery, its content hash and page count."""
        spec, letter = self.letter(delivery.campaign)
        key = delivery.idempotency_key
        if delivery.kind == DeliveryKind.COPY:
            supporter = delivery.supporter
            doc = render_supporter_copy(
                spec,
                letter,
                supporter_email=delivery.destination,
                supporter_name=supporter.name if supporter else None,
                reference=key,
            )
            return Rendered(doc.message, doc.sha256, None)
        if delivery.channel == Channel.EMAIL:
            doc = render_email(spec, letter, to_email=delivery.destination, reference=key)
            return Rendered(doc.message, doc.sha256, None)
        fax = self.fax_document(delivery)
        message = FaxMessage(
            to=delivery.destination,
            from_number=_e164(spec.sender.fax_caller_id, spec.sender.country),
            pdf=fax.pdf,
            page_count=fax.page_count,
            reference=key,
            media_url=media_url,
            from_name=spec.sender.organisation,
        )
        return Rendered(message, fax.sha256, fax.page_count)


def addressee_spec(spec: CampaignSpec, delivery: Delivery) -> AddresseeSpec:
    person = delivery.addressee
    if person is None:
        raise ValueError(f"delivery #{delivery.id} has no addressee")
    return (spec.to if person.role == "to" else spec.cc)[person.position]


def _e164(number: str, country: str) -> str:
    import phonenumbers

    return phonenumbers.format_number(phonenumbers.parse(number, country), phonenumbers.PhoneNumberFormat.E164)
