"""What a person does from the console or the API, in one place for both.

Each action runs in one transaction: the change (dispatcher/domain/control.py), an entry in the operator
actions log naming the identity and the reason (``accounts.record_action``), and the scheduler's wake-up
on commit. A refused action raises ``Refused`` with a message that names the problem (the API answers
it 404 or 409; the console shows it beside the button); nothing of a refused action is kept.

Campaigns and supporter lists written from a request (the API's body, the console's form, an uploaded
CSV) are in campaign_input.py, on the same ``run``, ``Refused`` and ``Invalid`` (a Refused, 422, with
every Problem).

These are blocking calls (the ledger): call them from a worker thread (a ``def`` route, or
``run_in_threadpool``), never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.accounts import Identity, record_action
from dispatcher.domain.db import transaction
from dispatcher.domain.errors import CampaignConflict, CampaignFileError, NotFound, Problem, TransitionError
from dispatcher.domain.models import Delivery
from dispatcher.domain.queries import get_campaign
from dispatcher.domain.states import State
from dispatcher.processes.wakeup import notify

MAX_REASON_CHARS = 2000


class Refused(Exception):
    """An action that cannot be done as asked; ``status`` is 404 (nothing by that name) or 409 (its state)."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Invalid(Refused):
    """Input that is not a valid campaign: every Problem, answered 422."""

    def __init__(self, problems: list[Problem]) -> None:
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{len(errors)} error(s): nothing was saved", status=422)
        self.problems = problems


@dataclass(frozen=True)
class Done:
    """What an action did, in a sentence for the person who asked (and its new state, for a delivery)."""

    message: str
    state: str | None = None


def _reason(reason: str | None, *, required: bool) -> str:
    text = (reason or "").strip()
    if required and not text:
        raise Refused("a reason is required: say what you checked and why you act", status=422)
    if len(text) > MAX_REASON_CHARS:
        raise Refused(f"the reason is {len(text)} characters long: at most {MAX_REASON_CHARS}", status=422)
    return text


def run(factory: sessionmaker[Session], work: Callable[[Session], Done]) -> Done:
    try:
        with transaction(factory) as session:
            return work(session)
    except NotFound as err:
        raise Refused(str(err), status=404) from err
    except (CampaignConflict, TransitionError) as err:
        raise Refused(str(err)) from err
    except CampaignFileError as err:
        raise Invalid(err.problems) from err


def campaign_action(
    factory: sessionmaker[Session], verb: str, name: str, *, by: Identity, reason: str | None, now: datetime
) -> Done:
    """``verb`` is schedule, pause, resume or cancel."""
    why = _reason(reason, required=False)

    def work(session: Session) -> Done:
        if verb == "schedule":
            campaign = control.schedule(session, name, now=now, actor=by.actor)
            message = f"{name}: scheduled ({campaign.schedule.get('mode', 'now')})"
            notify(session)
        elif verb == "pause":
            handed_back = control.pause(session, name, actor=by.actor)
            message = f"{name}: paused ({handed_back} queued deliveries handed back)"
        elif verb == "resume":
            campaign = control.resume(session, name, actor=by.actor)
            message = f"{name}: scheduled again"
            notify(session)
        elif verb == "cancel":
            cancelled = control.cancel(session, name, actor=by.actor)
            message = f"{name}: cancelled ({cancelled} deliveries will not be sent)"
        else:
            raise Refused(f"no campaign action named {verb!r}", status=404)
        campaign = get_campaign(session, name)
        record_action(session, by, f"campaign.{verb}", now=now, reason=why, campaign_id=campaign.id)
        return Done(message, campaign.status)

    return run(factory, work)


def retry_delivery(
    factory: sessionmaker[Session], delivery_id: int, *, by: Identity, reason: str | None, now: datetime, force: bool
) -> Done:
    """Send a delivery again: a failed one is planned again (``control.retry``); one held for an operator is
    confirmed not sent and sent again on the same route (``control.resolve``, not sent)."""
    why = _reason(reason, required=True)

    def work(session: Session) -> Done:
        delivery = _delivery(session, delivery_id)
        if control.resolvable(delivery):
            state: str = control.resolve(session, delivery_id, sent=False, now=now, reason=why, by=by.name)
        else:
            state = control.retry(session, delivery_id, now=now, actor=by.actor, force=force, reason=why).state
        _log(session, by, "delivery.retry", delivery, now=now, reason=why)
        notify(session)
        return Done(f"delivery #{delivery_id}: {state}", state)

    return run(factory, work)


def resolve_delivery(
    factory: sessionmaker[Session], delivery_id: int, *, sent: bool, by: Identity, reason: str | None, now: datetime
) -> Done:
    why = _reason(reason, required=True)

    def work(session: Session) -> Done:
        delivery = _delivery(session, delivery_id)
        state = control.resolve(session, delivery_id, sent=sent, now=now, reason=why, by=by.name)
        _log(
            session, by, "delivery.resolve-sent" if sent else "delivery.resolve-not-sent", delivery, now=now, reason=why
        )
        if state == State.RETRY_WAIT:
            notify(session)
        return Done(f"delivery #{delivery_id}: {state}", str(state))

    return run(factory, work)


def cancel_delivery(
    factory: sessionmaker[Session], delivery_id: int, *, by: Identity, reason: str | None, now: datetime
) -> Done:
    why = _reason(reason, required=True)

    def work(session: Session) -> Done:
        delivery = _delivery(session, delivery_id)
        state = control.cancel_delivery(session, delivery_id, now=now, reason=why, by=by.name)
        _log(session, by, "delivery.cancel", delivery, now=now, reason=why)
        notify(session)  # under first-success the addressee's next route may go now
        return Done(f"delivery #{delivery_id}: {state}", str(state))

    return run(factory, work)


def _delivery(session: Session, delivery_id: int) -> Delivery:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery #{delivery_id}")
    return delivery


def _log(session: Session, by: Identity, action: str, delivery: Delivery, *, now: datetime, reason: str) -> None:
    record_action(
        session, by, action, now=now, reason=reason, campaign_id=delivery.campaign_id, delivery_id=delivery.id
    )
