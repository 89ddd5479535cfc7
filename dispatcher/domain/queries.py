"""Read-side look-ups shared by the domain's own rules and the processes on top (CLI, web, console)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import NotFound
from dispatcher.domain.models import Campaign


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        known = ", ".join(session.scalars(select(Campaign.name).order_by(Campaign.name))) or "none loaded yet"
        raise NotFound(f"no campaign named {name!r} (campaigns: {known})")
    return campaign
