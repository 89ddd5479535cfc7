"""When letters may go out: office hours in each addressee's own timezone, fixed times, and retry backoff.

The clock is always an argument (``now``/``after``): nothing here sleeps or reads the wall clock.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.campaign_file import OfficeHours, Schedule, load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Delivery
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.scheduling import claim_due
from dispatcher.domain.states import State
from dispatcher.domain.timing import backoff, first_send_time, next_office_time
from dispatcher.domain.validation import validate

from .builders import build_campaign, guo_shengkun, wang_yi

SHANGHAI, NEW_YORK = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")
HOURS = OfficeHours()  # 09:00-17:00, Monday to Friday
FRIDAY_EVENING_SHANGHAI = datetime(2024, 3, 15, 18, 0, tzinfo=SHANGHAI)  # 2024-03-15 is a Friday
MONDAY_MORNING_SHANGHAI = datetime(2024, 3, 18, 9, 0, tzinfo=SHANGHAI)


# -- office hours ----------------------------------------------------------------------------------


def test_friday_evening_moves_to_monday_morning_in_shanghai() -> None:
    after = FRIDAY_EVENING_SHANGHAI.astimezone(UTC)
    when = next_office_time(HOURS, timezone="Asia/Shanghai", after=after)
    assert when == MONDAY_MORNING_SHANGHAI
    assert when.tzinfo == UTC  # handed back in the caller's timezone
    assert when.astimezone(SHANGHAI).replace(tzinfo=None) == datetime(2024, 3, 18, 9, 0)


@pytest.mark.parametrize(
    "local",
    [
        datetime(2024, 3, 13, 9, 0),  # the window's first minute
        datetime(2024, 3, 13, 11, 37),
        datetime(2024, 3, 15, 16, 59),  # Friday, just before closing
    ],
)
def test_a_time_inside_the_window_stays(local: datetime) -> None:
    after = local.replace(tzinfo=SHANGHAI).astimezone(UTC)
    assert next_office_time(HOURS, timezone="Asia/Shanghai", after=after) == after


def test_closing_time_itself_is_outside_the_window() -> None:
    after = datetime(2024, 3, 13, 17, 0, tzinfo=SHANGHAI)
    assert next_office_time(HOURS, timezone="Asia/Shanghai", after=after) == datetime(
        2024, 3, 14, 9, 0, tzinfo=SHANGHAI
    )


def test_same_instant_gives_each_addressee_their_own_morning() -> None:
    instant = datetime(2024, 3, 16, 3, 0, tzinfo=UTC)  # Saturday 11:00 in Shanghai, Friday 23:00 in New York
    shanghai = next_office_time(HOURS, timezone="Asia/Shanghai", after=instant)
    new_york = next_office_time(HOURS, timezone="America/New_York", after=instant)
    assert shanghai == datetime(2024, 3, 18, 9, 0, tzinfo=SHANGHAI) == datetime(2024, 3, 18, 1, 0, tzinfo=UTC)
    assert new_york == datetime(2024, 3, 18, 9, 0, tzinfo=NEW_YORK) == datetime(2024, 3, 18, 13, 0, tzinfo=UTC)
    assert shanghai != new_york


def test_custom_days_and_hours_are_honoured() -> None:
    hours = OfficeHours(start=time(10, 30), end=time(12, 0), days=["sat"])
    after = FRIDAY_EVENING_SHANGHAI
    assert next_office_time(hours, timezone="Asia/Shanghai", after=after) == datetime(
        2024, 3, 16, 10, 30, tzinfo=SHANGHAI
    )


def test_office_hours_without_days_is_an_error() -> None:
    with pytest.raises(ValueError, match="no day"):
        next_office_time(OfficeHours(days=[]), timezone="Asia/Shanghai", after=FRIDAY_EVENING_SHANGHAI)


# -- first send time -------------------------------------------------------------------------------


def test_mode_at_returns_the_given_time_or_now_when_past() -> None:
    now = datetime(2024, 3, 13, 12, 0, tzinfo=UTC)
    later = now + timedelta(days=2, hours=3)
    assert first_send_time(Schedule(mode="at", at=later), timezone="Asia/Shanghai", now=now) == later
    earlier = now - timedelta(minutes=5)
    assert first_send_time(Schedule(mode="at", at=earlier), timezone="Asia/Shanghai", now=now) == now


def test_mode_now_and_office_hours() -> None:
    now = FRIDAY_EVENING_SHANGHAI.astimezone(UTC)
    assert first_send_time(Schedule(), timezone="Asia/Shanghai", now=now) == now
    office = Schedule(mode="office-hours")
    assert first_send_time(office, timezone="Asia/Shanghai", now=now) == MONDAY_MORNING_SHANGHAI
    assert first_send_time(office, timezone="America/New_York", now=now) == datetime(2024, 3, 15, 9, 0, tzinfo=NEW_YORK)


# -- scheduling a campaign in office hours, claimed by the scheduler at the window's start ----------


SATURDAY = datetime(2024, 3, 16, 3, 0, tzinfo=UTC)  # outside every addressee's office hours
MONDAY_SHANGHAI_OPENS = datetime(2024, 3, 18, 1, 0, tzinfo=UTC)
MONDAY_NEW_YORK_OPENS = datetime(2024, 3, 18, 13, 0, tzinfo=UTC)
XI, XI_2, GUO, WANG = "+861063070900", "+861062381025", "gabzfwz@mps.gov.cn", "+861065591516"


def office_hours_campaign(tmp_path: Path) -> Path:
    """The example campaign in office hours, with Wang Yi moved to New York."""
    return build_campaign(
        tmp_path,
        schedule={"mode": "office-hours"},
        cc=[guo_shengkun(), wang_yi(timezone="America/New_York")],
    )


def load_and_schedule(factory: sessionmaker[Session], path: Path, *, now: datetime) -> str:
    spec = load_spec(path)
    report = validate(spec, file=path)
    assert report.ok, [str(p) for p in report.problems]
    with transaction(factory) as session:
        load_campaign(session, spec, report, source=path)
        control.schedule(session, spec.campaign.name, now=now)
    return spec.campaign.name


def claim_letters(factory: sessionmaker[Session], *, now: datetime) -> set[str]:
    """Run the scheduler's claim at ``now``; the destinations of the letters it queued."""
    with transaction(factory) as session:
        return {d.destination for d in claim_due(session, now=now, limit=100) if d.kind == "letter"}


def test_schedule_in_office_hours_sets_not_before_per_addressee_timezone(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    load_and_schedule(factory, office_hours_campaign(tmp_path), now=SATURDAY)
    with factory() as session:
        letters = {
            d.destination: d.not_before for d in session.scalars(select(Delivery).where(Delivery.kind == "letter"))
        }
    assert letters == {
        XI: MONDAY_SHANGHAI_OPENS,
        XI_2: MONDAY_SHANGHAI_OPENS,
        GUO: MONDAY_SHANGHAI_OPENS,
        WANG: MONDAY_NEW_YORK_OPENS,
    }


def test_scheduler_claims_nothing_before_the_window_and_each_letter_at_its_start(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    load_and_schedule(factory, office_hours_campaign(tmp_path), now=SATURDAY)
    second = timedelta(seconds=1)
    assert claim_letters(factory, now=SATURDAY) == set()
    assert claim_letters(factory, now=MONDAY_SHANGHAI_OPENS - second) == set()
    assert claim_letters(factory, now=MONDAY_SHANGHAI_OPENS) == {XI, GUO}  # Xi's second fax waits its turn
    assert claim_letters(factory, now=MONDAY_NEW_YORK_OPENS - second) == set()
    assert claim_letters(factory, now=MONDAY_NEW_YORK_OPENS) == {WANG}
    with factory() as session:
        queued = {
            d.destination: d.queued_at
            for d in session.scalars(select(Delivery).where(Delivery.kind == "letter", Delivery.state == State.QUEUED))
        }
    assert queued == {XI: MONDAY_SHANGHAI_OPENS, GUO: MONDAY_SHANGHAI_OPENS, WANG: MONDAY_NEW_YORK_OPENS}


# -- backoff ---------------------------------------------------------------------------------------


def seeded(
    attempt: int, *, seed: int = 7, base: float = 60.0, cap: float = 1800.0, retry_after: float | None = None
) -> float:
    """Backoff with a fresh generator per call: every call draws the same jitter factor."""
    return backoff(attempt, base=base, cap=cap, retry_after=retry_after, rng=random.Random(seed))


def test_backoff_doubles_with_each_attempt() -> None:
    delays = [seeded(n) for n in range(1, 6)]  # nominal 60, 120, 240, 480, 960: below the cap
    assert [b / a for a, b in itertools.pairwise(delays)] == pytest.approx([2.0] * 4)
    assert seeded(0) == seeded(1)  # attempt 0 (nothing tried yet) waits like the first retry


def test_backoff_is_capped() -> None:
    """The cap is a true maximum, jitter included: once the smallest jittered delay passes it, it is the cap."""
    rng = random.Random(7)
    samples = [backoff(attempt, base=60.0, cap=1800.0, rng=rng) for attempt in range(1, 40) for _ in range(50)]
    assert max(samples) == 1800.0
    for attempt in (7, 10, 30, 200):  # 60 * 2**6 * 0.5 = 1920 > 1800
        assert seeded(attempt) == 1800.0


def test_backoff_honours_retry_after() -> None:
    assert seeded(1, retry_after=3600.0) == 3600.0  # the provider asked for longer than our backoff
    assert seeded(1, retry_after=1.0) == seeded(1)  # a shorter Retry-After does not shorten our wait
    assert seeded(10, retry_after=7200.0) == 7200.0  # Retry-After wins over the cap as well


def test_backoff_jitter_stays_within_half_either_way() -> None:
    rng = random.Random(20240315)
    for attempt, nominal in ((1, 60.0), (3, 240.0), (5, 960.0)):  # below the cap
        samples = [backoff(attempt, base=60.0, cap=1800.0, rng=rng) for _ in range(2000)]
        assert all(0.5 * nominal <= s <= 1.5 * nominal for s in samples)
        assert min(samples) < 0.55 * nominal and max(samples) > 1.45 * nominal  # the spread is used
        assert len(set(samples)) > 1900  # really jittered, not a handful of values
