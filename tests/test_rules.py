"""The sending rules shared by the scheduler and the worker (dispatcher/domain/rules.py), with literal cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.domain.rules import SENDING_STATUSES, Gate, campaign_gate, deadline_passed, fax_line_wait

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("deadline", "passed"),
    [
        (None, False),
        (datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC), False),
        (datetime(2026, 3, 2, 12, 0, tzinfo=UTC), True),  # at the deadline itself nothing more goes out
        (datetime(2026, 3, 2, 11, 59, 59, tzinfo=UTC), True),
    ],
)
def test_deadline_passed(deadline: datetime | None, passed: bool) -> None:
    assert deadline_passed(deadline, now=NOON) is passed


@pytest.mark.parametrize(
    ("status", "gate"),
    [
        ("scheduled", Gate.SEND),
        ("paused", Gate.HOLD),
        ("draft", Gate.HOLD),
        ("completed", Gate.HOLD),
        ("cancelled", Gate.CANCEL),
    ],
)
def test_campaign_gate(status: str, gate: Gate) -> None:
    assert campaign_gate(status) is gate


def test_only_a_scheduled_campaign_is_claimed_from() -> None:
    assert set(SENDING_STATUSES) == {"scheduled"}


@pytest.mark.parametrize(
    ("busy", "last_call_ended", "gap", "wait"),
    [
        (False, None, MINUTE, None),  # never called: free
        (False, None, timedelta(0), None),
        (True, None, timedelta(0), timedelta(seconds=5)),  # our own call in progress: at least 5 s
        (True, None, MINUTE, MINUTE),  # ... or the gap, when it is longer
        (True, NOON - timedelta(hours=1), MINUTE, MINUTE),
        (False, NOON - timedelta(seconds=20), MINUTE, timedelta(seconds=40)),  # the rest of the gap
        (False, NOON - MINUTE, MINUTE, None),  # the gap has just run out
        (False, NOON - timedelta(hours=1), MINUTE, None),
        (False, NOON - timedelta(seconds=20), timedelta(0), None),  # no gap asked for
        (False, NOON + timedelta(seconds=3), timedelta(0), None),  # another clock a little ahead, no gap
        (False, NOON + timedelta(seconds=3), MINUTE, timedelta(seconds=63)),
    ],
)
def test_fax_line_wait(busy: bool, last_call_ended: datetime | None, gap: timedelta, wait: timedelta | None) -> None:
    assert fax_line_wait(busy=busy, last_call_ended=last_call_ended, gap=gap, now=NOON) == wait
