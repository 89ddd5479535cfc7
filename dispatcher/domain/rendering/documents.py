"""What a worker sends for a delivery, rendered from the ledger with a per-campaign cache.

Each variant of the letter (the letter to one "To" addressee, as the copy for one addressee: see
templating.Variant) is rendered once per campaign version (keyed by the campaign's content hash and
letter date); fax PDFs and emails are built per delivery from it. A supporter copy shows the letter to
the first "To" addressee. Rendering is deterministic, so the web process that serves a fax PDF to a
provider produces the very bytes whose SHA-256 the worker recorded.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import jinja2

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.messages import EmailMessage, FaxMessage
from dispatcher.domain.models import Campaign, Delivery
from dispatcher.domain.rendering.copy import OfficialOutcome, render_supporter_copy
from dispatcher.domain.rendering.email import render_email
from dispatcher.domain.rendering.fax import FaxDocument, render_fax
from dispatcher.domain.rendering.letter import RenderedLetter, build_letter
from dispatcher.domain.states import Channel, DeliveryKind
from dispatcher.domain.templating import FIRST, Variant, compile_letter, variant_for


class DocumentStore(Protocol):
    """Rendered fax documents shared between processes (workers/document_store.py keeps them in Redis for
    a while): the process that serves a fax to its provider finds the bytes the worker rendered. A store
    that fails answers None (the document is rendered) and never raises."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


@dataclass(frozen=True)
class Rendered:
    message: FaxMessage | EmailMessage
    sha256: str
    page_count: int | None


@dataclass
class _CampaignLetters:
    """One campaign version: its spec, compiled template, letter date and the variants rendered so far."""

    spec: CampaignSpec
    template: jinja2.Template
    date: date
    letters: dict[Variant, RenderedLetter] = field(default_factory=dict)


class DocumentCache:
    """Per-process cache of rendered letters, per (campaign, variant), bounded to the most recent campaigns,
    and of the most recent fax documents, per delivery: `dispatch web` renders a fax once however often
    its provider fetches it."""

    def __init__(self, *, max_campaigns: int = 16, max_faxes: int = 64, store: DocumentStore | None = None) -> None:
        self._store = store
        self._campaigns: dict[tuple[int, str, date | None], _CampaignLetters] = {}
        self._faxes: OrderedDict[tuple[int, str, date | None, str], FaxDocument] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_campaigns
        self._max_faxes = max_faxes

    def letter(self, campaign: Campaign, variant: Variant = FIRST) -> tuple[CampaignSpec, RenderedLetter]:
        """The campaign's spec and one variant of its letter (by default the letter to the first "To")."""
        entry = self._campaign(campaign)
        with self._lock:
            if variant in entry.letters:
                return entry.spec, entry.letters[variant]
        letter = build_letter(entry.spec, entry.template, date=entry.date, variant=variant)
        with self._lock:
            entry.letters[variant] = letter
        return entry.spec, letter

    def _campaign(self, campaign: Campaign) -> _CampaignLetters:
        key = (campaign.id, campaign.spec_sha256, campaign.letter_date)
        with self._lock:
            if key in self._campaigns:
                return self._campaigns[key]
        spec = CampaignSpec.model_validate(campaign.spec)
        template = compile_letter(campaign.letter.template_source, name=campaign.letter.template_name)
        entry = _CampaignLetters(spec=spec, template=template, date=campaign.letter_date or date.today())
        with self._lock:
            if len(self._campaigns) >= self._max:
                self._campaigns.pop(next(iter(self._campaigns)))
            return self._campaigns.setdefault(key, entry)

    def fax_document(self, delivery: Delivery) -> FaxDocument:
        """The delivery's fax, kept (bounded, least recently used out) by what it is rendered from: the
        delivery, its campaign's version and letter date, and the number; with a shared store, also found
        there (rendered by another process) and put there once rendered here."""
        campaign = delivery.campaign
        key = (delivery.id, campaign.spec_sha256, campaign.letter_date, delivery.destination)
        with self._lock:
            if key in self._faxes:
                self._faxes.move_to_end(key)
                return self._faxes[key]
        shared = hashlib.sha256(repr(key).encode()).hexdigest()  # the number stays out of the store's keys
        document = self._shared(shared)
        if document is None:
            document = self._render_fax(delivery)
            if self._store is not None:
                self._store.put(shared, document.page_count.to_bytes(4, "big") + document.pdf)
        with self._lock:
            self._faxes[key] = document
            while len(self._faxes) > self._max_faxes:
                self._faxes.popitem(last=False)
        return document

    def _render_fax(self, delivery: Delivery) -> FaxDocument:
        spec, letter = self.letter(delivery.campaign, self.variant(delivery))
        return render_fax(spec, letter, to=addressee_spec(spec, delivery), fax_number=delivery.destination)

    def _shared(self, key: str) -> FaxDocument | None:
        kept = self._store.get(key) if self._store is not None else None
        if kept is None or len(kept) < 5 or not kept[4:].startswith(b"%PDF"):
            return None
        pdf = kept[4:]
        return FaxDocument(pdf=pdf, page_count=int.from_bytes(kept[:4], "big"), sha256=hashlib.sha256(pdf).hexdigest())

    def variant(self, delivery: Delivery) -> Variant:
        """The letter a delivery carries: its addressee's (see templating.variant_for); a supporter copy
        shows the letter to the first "To" addressee."""
        person = delivery.addressee
        if delivery.kind == DeliveryKind.COPY or person is None:
            return FIRST
        return variant_for(self._campaign(delivery.campaign).spec, person.role, person.position)

    def render(
        self,
        delivery: Delivery,
        *,
        media_url: str | None = None,
        unsubscribe_url: str | None = None,
        outcomes: Sequence[OfficialOutcome] | None = None,
    ) -> Rendered:
        """The message for one delivery, its content hash and page count. A supporter copy needs its
        ``unsubscribe_url``, and, sent after delivery, the officials' ``outcomes``."""
        spec, letter = self.letter(delivery.campaign, self.variant(delivery))
        key = delivery.idempotency_key
        if delivery.kind == DeliveryKind.COPY:
            if unsubscribe_url is None:
                raise ValueError(f"supporter copy #{delivery.id} has no unsubscribe link")
            supporter = delivery.supporter
            doc = render_supporter_copy(
                spec,
                letter,
                supporter_email=delivery.destination,
                supporter_name=supporter.name if supporter else None,
                locale=supporter.locale if supporter else None,
                reference=key,
                unsubscribe_url=unsubscribe_url,
                outcomes=outcomes,
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
