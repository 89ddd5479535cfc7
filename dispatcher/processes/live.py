"""`dispatch log NAME --follow`: new delivery events as they happen, with a live state summary."""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import reading
from dispatcher.domain.models import Delivery, DeliveryEvent
from dispatcher.domain.queries import get_campaign
from dispatcher.processes.views import event_table, styled, text


def state_summary(session: Session, name: str) -> Table:
    campaign = get_campaign(session, name)
    counts = Counter(
        {
            state: n
            for state, n in session.execute(
                select(Delivery.state, func.count()).where(Delivery.campaign_id == campaign.id).group_by(Delivery.state)
            )
        }
    )
    table = Table(title=text(f"{campaign.name}: {campaign.status}"), show_header=False)
    table.add_row(*[Text.assemble(styled(state), f" {n}") for state, n in sorted(counts.items())])
    return table


def follow_log(
    factory: sessionmaker[Session],
    name: str,
    *,
    console: Console,
    interval: float = 1.0,
    tail: int = 25,
    until: float | None = None,
) -> None:
    """Redraw the summary and the last ``tail`` events every ``interval`` seconds (Ctrl-C stops)."""
    stop_at = None if until is None else time.monotonic() + until
    with Live(console=console, refresh_per_second=4) as live:
        try:
            while stop_at is None or time.monotonic() < stop_at:
                with reading(factory) as session:
                    campaign = get_campaign(session, name)
                    last = (
                        session.scalar(
                            select(func.max(DeliveryEvent.id)).where(DeliveryEvent.campaign_id == campaign.id)
                        )
                        or 0
                    )
                    live.update(
                        Group(state_summary(session, name), event_table(session, name, after_id=max(0, last - tail)))
                    )
                time.sleep(interval)
        except KeyboardInterrupt:
            return
