"""The supporter lists in the ledger, each with how many members it holds and how many gave consent."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from dispatcher.domain.models import Supporter, SupporterList


@dataclass(frozen=True)
class ListCount:
    name: str
    members: int
    consenting: int


def list_counts(session: Session) -> list[ListCount]:
    """Every list by name, with its member and consenting-member counts (counts only: no personal data)."""
    rows = session.execute(
        select(
            SupporterList.name,
            func.count(Supporter.id),
            func.coalesce(func.sum(cast(Supporter.consent, Integer)), 0),
        )
        .outerjoin(Supporter, Supporter.list_id == SupporterList.id)
        .group_by(SupporterList.id, SupporterList.name)
        .order_by(SupporterList.name)
    )
    return [ListCount(name, members, consenting) for name, members, consenting in rows]
