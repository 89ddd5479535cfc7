"""The shared gateway base: messages in, receipts and status events out.

A provider module subclasses :class:`Gateway` (``channel`` "fax" or "email") and overrides what its
provider supports; the base answers the rest with :class:`NotImplementedError` naming the provider.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic_settings import BaseSettings

Channel = Literal["fax", "email"]


@dataclass(frozen=True, kw_only=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/pdf"


@dataclass(frozen=True, kw_only=True)
class FaxMessage:
    """One fax to one number."""

    to: str  # E.164, e.g. "+861063070900"
    from_number: str  # caller id, E.164
    pdf: bytes
    page_count: int
    reference: str  # our idempotency key for this delivery; sent where the provider keeps it
    media_url: str | None = None  # where the PDF is served, for providers that fetch it (Telnyx)
    header_text: str | None = None
    from_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class EmailMessage:
    """One email; ``to``/``cc`` are bare addresses, ``sender`` may carry a display name."""

    sender: str  # "Human Rights Watch <advocacy@example.org>"
    to: Sequence[str]
    subject: str
    text: str
    reference: str  # our idempotency key; also the left part of the Message-ID
    message_id: str  # "<key@domain>", stable for a delivery
    cc: Sequence[str] = ()
    reply_to: str | None = None
    html: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


Message = FaxMessage | EmailMessage


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A provider accepted a message."""

    provider: str
    provider_id: str
    accepted_at: datetime
    status: str  # the provider's own first status, e.g. "queued"
    raw: Any  # the decoded response body, kept as evidence


class EventKind(enum.StrEnum):
    """The shared status vocabulary; each provider maps its own names onto it with a dict table."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    DEFERRED = "deferred"


@dataclass(frozen=True, kw_only=True)
class StatusEvent:
    provider: str
    provider_id: str
    kind: EventKind
    occurred_at: datetime
    reference: str | None = None  # our idempotency key, where the provider echoes it
    error_class: Literal["transient", "permanent"] | None = None
    error_code: str | None = None
    detail: str | None = None
    pages: int | None = None
    duration_secs: float | None = None
    remote_station_id: str | None = None
    event_id: str | None = None  # the provider's id for this event, for de-duplication
    raw: Any = None


@dataclass(frozen=True, kw_only=True)
class WebhookRequest:
    """A raw incoming webhook, body kept byte for byte for signature checks."""

    method: str
    url: str  # the full URL as received, query included (Phaxio signs it)
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    received_at: datetime


class Gateway:
    """Base of every provider adapter."""

    provider: ClassVar[str]
    channel: ClassVar[Channel]
    settings_class: ClassVar[type[BaseSettings]]
    # False for gateways that never report delivery (SMTP): their acceptance is the final word
    reports_delivery: ClassVar[bool] = True
    # True for providers that fetch the document from a URL we serve (Telnyx): needs DISPATCH_SECRET_KEY
    needs_media_url: ClassVar[bool] = False

    def __init__(self, settings: BaseSettings, *, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or self.provider

    def send(self, message: Message) -> Receipt:
        """Hand one message to the provider; raise Transient, Permanent or Unknown otherwise."""
        raise NotImplementedError(f"{self.provider}: send is not supported")

    def fetch_status(self, provider_id: str) -> StatusEvent:
        """Ask the provider for the current state of a message."""
        raise NotImplementedError(f"{self.provider}: fetch_status is not supported")

    def find_by_reference(self, reference: str) -> StatusEvent | None:
        """Look a message up by our reference, to reconcile an Unknown outcome; None if never seen."""
        raise NotImplementedError(f"{self.provider}: lookup by reference is not supported")

    def parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        """Verify and decode a status webhook; raise WebhookAuthError / WebhookFormatError."""
        raise NotImplementedError(f"{self.provider}: webhooks are not supported")

    def close(self) -> None:
        """Release pooled connections."""
