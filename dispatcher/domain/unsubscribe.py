"""Unsubscribe links: a signed token per supporter copy, and what following one does.

Every copy carries ``<public base URL>/unsubscribe/<token>`` in its body and in ``List-Unsubscribe``
(RFC 2369), with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058). The token is the copy's
delivery id and an HMAC-SHA256 of it under DISPATCH_SECRET_KEY: ``42.<signature>``, the signature in
base64url without padding. It has no expiry: a link in an old email must still work.

Domain separation: the HMAC covers ``campaign-dispatch/unsubscribe/v1:<id>``, a label the fax document
tokens (dispatcher/domain/media.py, which sign ``<id>:<expiry>`` under the same key) never start with, so
neither kind of token can stand for the other. The id is written in one form only (ASCII digits, no sign or
leading zero) and the whole token is compared in constant time with the one we would issue, so a token has
exactly one spelling.

Unsubscribing puts the copy's address on the organisation-wide suppression list (reason ``unsubscribed``,
with the campaign it came from); the member stays on their lists as recorded, and nothing is cancelled
here: a copy planned and not yet sent is withheld when a worker claims it (copies.copy_blocker).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from dispatcher.domain.emails import normalise_email
from dispatcher.domain.models import Delivery
from dispatcher.domain.states import DeliveryKind
from dispatcher.domain.suppression import SuppressionReason, is_suppressed, suppress

PURPOSE = b"campaign-dispatch/unsubscribe/v1:"
TOKEN_MAX_CHARS = 80  # a 19-digit id, the dot and 43 characters of signature fit


class Outcome(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    ALREADY = "already"  # the address was on the suppression list already (for any reason)
    NOT_A_COPY = "not-a-copy"  # no such delivery, or not a supporter copy: nothing to unsubscribe


@dataclass(frozen=True)
class CopyLink:
    """What the unsubscribe page may show about the copy a link names: never the address itself."""

    delivery_id: int
    masked: str  # "a***@example.org"
    organisation: str  # the sender of the campaign the copy came from
    suppressed: bool


def _signature(secret: bytes, delivery_id: int) -> str:
    digest = hmac.new(secret, PURPOSE + str(delivery_id).encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def make_token(secret: bytes, delivery_id: int) -> str:
    return f"{delivery_id}.{_signature(secret, delivery_id)}"


def unsubscribe_url(base_url: str, secret: bytes, delivery_id: int) -> str:
    """The link a supporter copy carries, under the public base URL of `dispatch web`."""
    return f"{base_url.rstrip('/')}/unsubscribe/{make_token(secret, delivery_id)}"


def verify(secret: bytes, token: str) -> int | None:
    """The delivery id a token names, or None when it is malformed, altered or signed with another key."""
    if len(token) > TOKEN_MAX_CHARS or not token.isascii():
        return None
    number, dot, _ = token.partition(".")
    if not dot or not number.isdigit() or (number.startswith("0") and number != "0"):
        return None
    delivery_id = int(number)
    expected = make_token(secret, delivery_id)
    return delivery_id if hmac.compare_digest(token.encode("ascii"), expected.encode("ascii")) else None


def masked(email: str) -> str:
    """``a***@example.org``: enough for a person to recognise their address, not to read it."""
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return "***"
    return f"{local[0]}***@{domain}"


def _copy(session: Session, delivery_id: int) -> Delivery | None:
    """The supporter copy ``delivery_id``, if it still has an address (an erased copy has none)."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.kind != DeliveryKind.COPY or normalise_email(delivery.destination) is None:
        return None
    return delivery


def copy_link(session: Session, delivery_id: int) -> CopyLink | None:
    """What the page shows for the copy ``delivery_id``; None when it is no supporter copy."""
    delivery = _copy(session, delivery_id)
    if delivery is None:
        return None
    return CopyLink(
        delivery_id=delivery.id,
        masked=masked(delivery.destination),
        organisation=str(delivery.campaign.sender.get("organisation", "")),
        suppressed=is_suppressed(session, delivery.destination),
    )


def unsubscribe(session: Session, delivery_id: int, *, now: datetime, source: str) -> Outcome:
    """Put the address of copy ``delivery_id`` on the suppression list; idempotent."""
    delivery = _copy(session, delivery_id)
    if delivery is None:
        return Outcome.NOT_A_COPY
    added = suppress(
        session,
        delivery.destination,
        reason=SuppressionReason.UNSUBSCRIBED,
        source=source,
        at=now,
        campaign_id=delivery.campaign_id,
    )
    return Outcome.UNSUBSCRIBED if added else Outcome.ALREADY
