"""Read-side look-ups shared by the domain's own rules and the processes on top (CLI, web, console)."""

from __future__ import annotations

import re
from collections import Counter

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import NotFound
from dispatcher.domain.models import Campaign, Delivery

# No campaign name holds these (the campaign file refuses control characters), and PostgreSQL cannot
# even compare a text with a NUL: a name holding one is answered "not found" without a query.
_NEVER_IN_A_NAME = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = None if _NEVER_IN_A_NAME.search(name) else session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        known = ", ".join(session.scalars(select(Campaign.name).order_by(Campaign.name))) or "none loaded yet"
        raise NotFound(f"no campaign named {name!r} (campaigns: {known})")
    return campaign


def state_counts(session: Session, campaign_id: int | None = None) -> dict[int, Counter[str]]:
    """Deliveries per state, by campaign id (every campaign, or the one given), in one GROUP BY."""
    query = select(Delivery.campaign_id, Delivery.state, func.count()).group_by(Delivery.campaign_id, Delivery.state)
    if campaign_id is not None:
        query = query.where(Delivery.campaign_id == campaign_id)
    counts: dict[int, Counter[str]] = {}
    for cid, state, n in session.execute(query):
        counts.setdefault(cid, Counter())[state] = int(n)
    return counts
