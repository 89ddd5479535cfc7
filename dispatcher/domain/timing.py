"""When a delivery may go out: now, at a fixed time, or within the addressee's office hours
in the addressee's own timezone; and how long to wait before retrying a route."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dispatcher.domain.campaign_file import OfficeHours, Schedule

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def first_send_time(schedule: Schedule, *, timezone: str, now: datetime) -> datetime:
    """The earliest moment a letter to an addressee in ``timezone`` may be sent."""
    if schedule.mode == "at" and schedule.at is not None:
        return max(now, schedule.at)
    if schedule.mode == "office-hours":
        return next_office_time(schedule.office_hours, timezone=timezone, after=now)
    return now


def next_office_time(hours: OfficeHours, *, timezone: str, after: datetime) -> datetime:
    """``after`` itself when it falls in office hours there, else the start of the next window."""
    zone = ZoneInfo(timezone)
    local = after.astimezone(zone)
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        if DAYS[day.weekday()] not in hours.days:
            continue
        start = datetime.combine(day, hours.start, tzinfo=zone)
        end = datetime.combine(day, hours.end, tzinfo=zone)
        if local < end:
            return max(local, start).astimezone(after.tzinfo)
    raise ValueError("office hours name no day of the week")


def backoff(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with +-50% jitter, at most ``cap``, at least
    the provider's Retry-After."""
    delay = base * 2 ** max(0, attempt - 1) * (0.5 + (rng or random).random())
    return float(max(min(cap, delay), retry_after or 0.0))  # the cap is a true maximum, Retry-After wins
