"""What the domain hands to gateways and what gateways hand back: messages, receipts, status events.

The domain renders :class:`FaxMessage` / :class:`EmailMessage`; a gateway (``workers.gateways``)
turns one into a provider call and answers with a :class:`Receipt`, or turns a provider's report
(webhook, poll, lookup) into :class:`StatusEvent` values in the shared :class:`EventKind` vocabulary.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


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


# What a provider's report says of the address itself, for the suppression list (dispatcher/domain/suppression.py):
# it refused for good (a hard bounce), or the person marked the message as spam (a complaint).
Suppress = Literal["hard-bounce", "complaint"]


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
    # "configuration": our settings are at fault, not the route (the provider could not fetch our document)
    error_class: Literal["transient", "permanent", "configuration"] | None = None
    error_code: str | None = None
    setting: str | None = None  # for a configuration fault: the variable an operator should check
    detail: str | None = None
    pages: int | None = None
    duration_secs: float | None = None
    remote_station_id: str | None = None
    no_fax_tone: bool = False  # a fax call answered, but not by a fax machine (the gateway's mapping says)
    # email: the address is to be suppressed (the gateway's mapping says); acted on for supporter copies only
    suppress: Suppress | None = None
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
