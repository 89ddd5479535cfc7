"""A person's data: everything the ledger holds about one supporter's address, exported, or erased.

What the ledger holds about an address:
- its memberships (``supporters``), one per list: name, locale, consent with its date and source, custom fields;
- its copies (``deliveries`` of kind copy): those linked to one of the memberships, and those addressed to it
  whose membership has since gone (removed from a list), with their events and attempts;
- whether it is suppressed, and why (``suppressions``, keyed by a hash of the address).

The address is looked up in the one form the ledger keeps (``emails.normalise_email``) and, for rows written
before addresses were normalised, in any letter case and with its domain in Unicode as well.

Erasure deletes the memberships and cancels the copies still waiting (through the ledger's move, so no worker
can send them); every copy row stays, with its state, times and attempts, so counts and reports still add up,
and the ledger takes the person out of it (``Ledger.erase``: address replaced by ``erased``, provider
evidence replaced, events' data cleared). A copy already handed to a provider cannot be called back; its record
is erased all the same. Erasure is not an unsubscribe: a suppression entry stays (it is a hash, not the
address), and none is added. Only counts are logged, never the address or a name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, Engine, delete, func, or_, select
from sqlalchemy.orm import Session

from dispatcher.domain.control import WAITING
from dispatcher.domain.emails import normalise_email
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Campaign, Delivery, DeliveryEvent, Supporter, SupporterList, Suppression
from dispatcher.domain.states import DeliveryKind, State
from dispatcher.domain.suppression import address_hash

ERASED = "erased"  # what an erased copy shows where the person's address and data were
ERASURE_REASON = "the supporter's data was erased"

log = logging.getLogger(__name__)


class AddressError(DispatchError):
    """The address given is not a valid email address (the message never repeats it)."""


@dataclass(frozen=True)
class Held:
    """How much the ledger holds about one address: what an operator is asked to confirm before erasing."""

    memberships: int
    copies: int
    waiting: int  # copies not yet sent, which erasure cancels

    @property
    def found(self) -> bool:
        return bool(self.memberships or self.copies)

    def question(self) -> str:
        return (
            f"Erase {_count(self.memberships, 'list membership')} and {_count(self.copies, 'copy', 'copies')} "
            f"({self.waiting} still waiting, to be cancelled)? This cannot be undone."
        )


@dataclass(frozen=True)
class ErasureResult:
    """What an erasure did, in counts only."""

    memberships: int  # supporters rows deleted
    copies: int  # copies kept, the person taken out of them
    cancelled: int  # of those, copies that were still waiting
    events: int  # the copies' events, their data cleared
    attempts: int  # the copies' attempts, their provider evidence replaced

    @property
    def found(self) -> bool:
        return bool(self.memberships or self.copies)

    def summary(self) -> str:
        if not self.found:
            return "nothing found: no list membership or copy holds this address"
        return (
            f"erased: {_count(self.memberships, 'list membership')}, {_count(self.copies, 'copy', 'copies')} "
            f"({self.cancelled} cancelled), {_count(self.events, 'event')}"
        )


def export_person(session: Session, email: str) -> dict[str, Any]:
    """Everything the ledger holds about ``email``, JSON-serialisable: ``lists`` (memberships), ``copies`` (with
    their events) and ``suppressed`` (None, or why and since when). Nothing held: empty lists and None."""
    address = _address(email)
    members = _members(session, address)
    copies = _copies(session, address, [m.id for m, _ in members])
    events = _events(session, [d.id for d, _ in copies])
    suppression = session.get(Suppression, address_hash(address))
    exported = {
        "email": address,
        "lists": [_membership(member, list_name) for member, list_name in members],
        "copies": [_copy(copy, campaign, events.get(copy.id, [])) for copy, campaign in copies],
        "suppressed": _suppression(session, suppression),
    }
    log.info("exported a person's data: %s, %s", counted(exported), "suppressed" if suppression else "not suppressed")
    return exported


def counted(exported: dict[str, Any]) -> str:
    """What an export holds, in counts: "2 list memberships, 3 copies"."""
    return f"{_count(len(exported['lists']), 'list membership')}, {_count(len(exported['copies']), 'copy', 'copies')}"


def held(session: Session, email: str) -> Held:
    """How many memberships and copies the ledger holds for ``email``, and how many of the copies still wait."""
    address = _address(email)
    members = _members(session, address)
    copies = _copies(session, address, [m.id for m, _ in members])
    return Held(len(members), len(copies), sum(1 for d, _ in copies if d.state in WAITING))


def erase_person(session: Session, email: str, *, now: datetime, actor: str) -> ErasureResult:
    """Take ``email``'s person out of the ledger (see the module's description); the caller commits."""
    address = _address(email)
    members = [member for member, _ in _members(session, address)]
    copies = [copy for copy, _ in _copies(session, address, [m.id for m in members], lock=True)]
    ledger = SqlLedger(session)
    waiting = [copy for copy in copies if copy.state in WAITING]
    for copy in waiting:
        ledger.move(copy, State.CANCELLED, actor=actor, at=now, reason=ERASURE_REASON)
    session.flush()
    personal = {address, *_forms(address), *(c.destination for c in copies), *(m.name for m in members if m.name)}
    erased = ledger.erase([c.id for c in copies], marker=ERASED, personal=sorted(personal))
    ids = [m.id for m in members]
    for start in range(0, len(ids), 500):
        session.execute(delete(Supporter).where(Supporter.id.in_(ids[start : start + 500])))
    result = ErasureResult(len(members), len(copies), len(waiting), erased.events, erased.attempts)
    log.info("erased a person's data: %s", result.summary().removeprefix("erased: "))
    return result


def settle_files(bind: Engine | Connection) -> None:
    """After an erasure is committed, on SQLite: write the write-ahead log into the database file and empty it,
    so that no page image in it still holds what was erased (deleted and overwritten content in the file
    itself is zeroed: ``secure_delete``, dispatcher/domain/db.py). Nothing to do on PostgreSQL (see README)."""
    engine = bind.engine if isinstance(bind, Connection) else bind
    if engine.dialect.name != "sqlite":
        return
    connection = engine.raw_connection()
    try:
        connection.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def _address(email: str) -> str:
    address = normalise_email(email)
    if address is None:
        raise AddressError("the address given is not a valid email address")
    return address


def _forms(address: str) -> set[str]:
    """The normalised ``address`` and, for rows written before normalisation, its domain in Unicode; lower case."""
    forms = {address}
    try:
        unicode_domain = validate_email(address, check_deliverability=False).domain
    except EmailNotValidError:  # pragma: no cover - a normalised address is valid
        return forms
    local = address.rsplit("@", 1)[0]
    forms.add(f"{local}@{unicode_domain}".lower())
    return forms


def _members(session: Session, address: str) -> list[tuple[Supporter, str]]:
    rows = session.execute(
        select(Supporter, SupporterList.name)
        .join(SupporterList, SupporterList.id == Supporter.list_id)
        .where(func.lower(Supporter.email).in_(sorted(_forms(address))))
        .order_by(SupporterList.name, Supporter.id)
    ).all()
    return [(member, name) for member, name in rows]


def _copies(session: Session, address: str, member_ids: list[int], *, lock: bool = False) -> list[tuple[Delivery, str]]:
    """The person's copies with their campaign's name, oldest first: linked to a membership, or addressed to them."""
    query = (
        select(Delivery, Campaign.name)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(
            Delivery.kind == DeliveryKind.COPY,
            or_(Delivery.supporter_id.in_(member_ids), func.lower(Delivery.destination).in_(sorted(_forms(address)))),
        )
        .order_by(Delivery.id)
    )
    if lock:
        query = query.with_for_update(of=Delivery)
    return [(copy, name) for copy, name in session.execute(query).all()]


def _events(session: Session, delivery_ids: list[int]) -> dict[int, list[DeliveryEvent]]:
    found: dict[int, list[DeliveryEvent]] = {}
    for start in range(0, len(delivery_ids), 500):
        chunk = delivery_ids[start : start + 500]
        query = select(DeliveryEvent).where(DeliveryEvent.delivery_id.in_(chunk)).order_by(DeliveryEvent.id)
        for event in session.scalars(query):
            found.setdefault(event.delivery_id, []).append(event)
    return found


def _membership(member: Supporter, list_name: str) -> dict[str, Any]:
    return {
        "list": list_name,
        "name": member.name,
        "locale": member.locale,
        "consent": member.consent,
        "consent_at": _time(member.consent_at),
        "consent_source": member.consent_source,
        "fields": dict(member.fields or {}),
        "created_at": _time(member.created_at),
        "updated_at": _time(member.updated_at),
    }


def _copy(copy: Delivery, campaign: str, events: list[DeliveryEvent]) -> dict[str, Any]:
    return {
        "campaign": campaign,
        "channel": copy.channel,
        "state": copy.state,
        "created_at": _time(copy.created_at),
        "updated_at": _time(copy.updated_at),
        "events": [
            {
                "at": _time(event.at),
                "kind": "note" if event.from_state == event.to_state else "change",
                "from_state": event.from_state,
                "to_state": event.to_state,
                "reason": event.reason,
                "data": event.data,
            }
            for event in events
        ],
    }


def _suppression(session: Session, entry: Suppression | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    campaign = session.get(Campaign, entry.campaign_id) if entry.campaign_id is not None else None
    return {
        "reason": entry.reason,
        "source": entry.source,
        "at": _time(entry.at),
        "campaign": campaign.name if campaign else None,
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
