"""TEMPORARY STUB (integrator's local testing only; replaced by the import branch)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.emails import normalise_email
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.models import Supporter, SupporterList


@dataclass(frozen=True, kw_only=True)
class MemberRow:
    line: int
    email: str
    name: str | None
    locale: str | None = None
    consent_at: datetime | None = None
    consent_source: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Rejected:
    line: int
    kind: str
    reason: str
    email: str | None
    cells: dict[str, str]


class SupporterFileError(DispatchError):
    pass


def read_rows(
    stream: BinaryIO, *, source: str, encoding: str | None = None, mapping: Mapping[str, str] | None = None
) -> Iterator[MemberRow | Rejected]:
    text = io.TextIOWrapper(stream, encoding=encoding or "utf-8-sig", newline="")
    reader = csv.DictReader(text)
    seen: set[str] = set()
    for row in reader:
        cells = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        email = normalise_email(cells.get("email", ""))
        line = reader.line_num
        if email is None:
            yield Rejected(line=line, kind="invalid-email", reason="invalid email", email=None, cells=cells)
            continue
        if email in seen:
            yield Rejected(line=line, kind="duplicate", reason="duplicate", email=email, cells=cells)
            continue
        seen.add(email)
        consent = cells.get("consent", "").lower()
        if consent in ("yes", "y", "true", "1"):
            yield MemberRow(line=line, email=email, name=cells.get("name") or None, locale=cells.get("locale") or None)
        elif consent in ("no", "n", "false", "0"):
            yield Rejected(line=line, kind="consent-refused", reason="consent refused", email=email, cells=cells)
        else:
            yield Rejected(line=line, kind="consent-missing", reason="consent missing", email=email, cells=cells)


def import_rows(
    session: Session,
    list_name: str,
    rows: Iterable[MemberRow | Rejected],
    *,
    now: datetime,
    on_rejected: Callable[[Rejected], None] | None = None,
) -> None:
    lst = session.scalar(select(SupporterList).where(SupporterList.name == list_name))
    if lst is None:
        lst = SupporterList(name=list_name)
        session.add(lst)
        session.flush()
    for row in rows:
        existing = session.scalar(select(Supporter).where(Supporter.list_id == lst.id, Supporter.email == row.email))
        if isinstance(row, MemberRow):
            if existing is None:
                session.add(
                    Supporter(
                        list_id=lst.id, email=row.email, name=row.name, locale=row.locale, consent=True, fields={}
                    )
                )
            else:
                existing.name, existing.consent = row.name, True
        elif row.kind == "consent-refused" and existing is not None:
            existing.consent = False
    session.flush()
