"""When a delivery may go out: the rules the scheduler and the worker both apply, as pure functions.

The scheduler applies them when it claims rows; the worker applies them again under its claim's lock,
because a campaign may be paused or cancelled, or its deadline pass, while a message waits in the broker.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from dispatcher.domain.states import CampaignStatus

BUSY_LINE_WAIT = timedelta(seconds=5)  # the least wait for a fax line in use: our own call may end soon


class Gate(enum.StrEnum):
    """What a campaign's status means for a delivery that is due."""

    SEND = "send"
    HOLD = "hold"  # back to planned: the campaign may be resumed
    CANCEL = "cancel"


def deadline_passed(deadline: datetime | None, *, now: datetime) -> bool:
    """A campaign's deadline is the last moment to send; at that moment nothing more goes out."""
    return deadline is not None and now >= deadline


def campaign_gate(status: str) -> Gate:
    """Only a scheduled campaign sends; a cancelled one cancels what waits; any other status holds it."""
    if status == CampaignStatus.SCHEDULED:
        return Gate.SEND
    if status == CampaignStatus.CANCELLED:
        return Gate.CANCEL
    return Gate.HOLD


# the statuses under which the scheduler claims deliveries, for its WHERE clause
SENDING_STATUSES = frozenset(s for s in CampaignStatus if campaign_gate(s) is Gate.SEND)


def fax_line_wait(*, busy: bool, last_call_ended: datetime | None, gap: timedelta, now: datetime) -> timedelta | None:
    """How long to wait before faxing a number again, or None when the line is free.

    One call at a time to a number (``busy``: another of our faxes to it is in progress), and at least
    ``gap`` between the end of the last call and the next one."""
    if busy:
        return max(gap, BUSY_LINE_WAIT)
    if gap > timedelta(0) and last_call_ended is not None and now - last_call_ended < gap:
        return gap - (now - last_call_ended)
    return None
