"""The organisation-wide suppression list: addresses that receive no supporter copy, from any list.

Fed by unsubscribes (the link and the one-click POST in every copy), by hard bounces and by complaints
reported by the email gateways' webhooks; a soft bounce does not suppress. Checked when copies are
planned and again when a copy is claimed for sending.

An entry is the SHA-256 of the normalised address, never the address: it outlives the person's erasure
(erasing someone must not resubscribe them) without keeping their data.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from dispatcher.domain.emails import normalise_email
from dispatcher.domain.messages import StatusEvent
from dispatcher.domain.models import Delivery, Suppression
from dispatcher.domain.states import DeliveryKind

log = logging.getLogger(__name__)


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCE = "hard-bounce"
    COMPLAINT = "complaint"


def address_hash(email: str) -> str:
    """The suppression key of a (normalised) address: SHA-256 of it, lower-cased, as hex."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def suppress(
    session: Session,
    email: str,
    *,
    reason: SuppressionReason,
    source: str,
    at: datetime,
    campaign_id: int | None = None,
) -> bool:
    """Add ``email`` to the suppression list; False if it was already there (the first entry stays).

    Two requests at once (a mail client's one-click POST and the person's own click, two webhooks) add one
    entry, and neither fails: on PostgreSQL by INSERT ... ON CONFLICT DO NOTHING; on SQLite every writing
    transaction holds the write lock from its BEGIN IMMEDIATE (dispatcher/domain/db.py), so nobody inserts
    between the look-up and the insert.

    What is no address (an erased copy's ``erased``) suppresses nothing: False."""
    if normalise_email(email) is None:
        return False
    key = address_hash(email)
    values = {"email_sha256": key, "reason": str(reason), "source": source, "campaign_id": campaign_id, "at": at}
    if session.get_bind().dialect.name == "postgresql":
        statement = (
            postgresql.insert(Suppression)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["email_sha256"])
            .returning(Suppression.email_sha256)
        )
        return session.execute(statement).scalar_one_or_none() is not None
    if session.get(Suppression, key) is not None:
        return False
    session.add(Suppression(**values))
    session.flush()
    return True


def suppress_reported(session: Session, delivery: Delivery, event: StatusEvent, *, actor: str, at: datetime) -> bool:
    """A provider reported a hard bounce or a complaint (``event.suppress``, set by the gateway's mapping):
    a supporter copy's address goes on the suppression list, whatever state the copy is in (a complaint
    comes after the delivery). An official's letter never suppresses anything. True if an entry was added.

    The source is the webhook (``webhook:postmark``), or the provider when a status look-up reported it."""
    if event.suppress is None or delivery.kind != DeliveryKind.COPY:
        return False
    source = actor if actor.startswith("webhook:") else f"lookup:{event.provider}"
    added = suppress(
        session,
        delivery.destination,
        reason=SuppressionReason(event.suppress),
        source=source,
        at=at,
        campaign_id=delivery.campaign_id,
    )
    if added:  # the copy by its number: never the address
        log.info("copy %s: address suppressed (%s reported by %s)", delivery.id, event.suppress, event.provider)
    return added


def is_suppressed(session: Session, email: str) -> bool:
    return session.get(Suppression, address_hash(email)) is not None


def suppressed_among(session: Session, emails: Iterable[str]) -> set[str]:
    """Which of ``emails`` are suppressed (queried in chunks, for planning many copies at once)."""
    by_hash = {address_hash(e): e for e in emails}
    keys = list(by_hash)
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found.update(
            by_hash[k]
            for k in session.scalars(select(Suppression.email_sha256).where(Suppression.email_sha256.in_(chunk)))
        )
    return found
