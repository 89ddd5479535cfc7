"""Read-side look-ups shared by the domain's own rules and the processes on top (CLI, web, console)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import NotFound
from dispatcher.domain.models import Campaign

# No campaign name holds these (the campaign file refuses control characters), and PostgreSQL cannot
# even compare a text with a NUL: a name holding one is answered "not found" without a query.
_NEVER_IN_A_NAME = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = None if _NEVER_IN_A_NAME.search(name) else session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        known = ", ".join(session.scalars(select(Campaign.name).order_by(Campaign.name))) or "none loaded yet"
        raise NotFound(f"no campaign named {name!r} (campaigns: {known})")
    return campaign
