"""A campaign's own supporters CSV (``[supporters] csv``): read as `dispatch supporters import` reads a list.

The file is found through :mod:`dispatcher.domain.input_files` (inside the campaign's folder, a regular file,
at most 16 MiB), then read by :func:`dispatcher.domain.supporter_import.read_rows`: the same columns, consent
values and normalisation as an import. On loading, its rows become the list the campaign names
(``list_name``, by default the campaign's own name).

For validation, each rejected row is a problem on its line: an invalid address or field is an error (left
out by ``--skip-invalid``), a row that says nothing about consent, or repeats an earlier address, is a
warning (no copy for it). A supporter who refused consent is no problem of the file: the row is counted
(``rejected``) and gets nothing. A problem never quotes the address or the name: the line number says which
row.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.domain.errors import CampaignFileError, Problem
from dispatcher.domain.input_files import SUPPORTERS_CSV_MAX_BYTES, read_named_file
from dispatcher.domain.supporter_import import (
    CONSENT_REFUSED,
    INVALID_CONSENT_DATE,
    INVALID_EMAIL,
    INVALID_FIELD,
    INVALID_LOCALE,
    MALFORMED_ROW,
    MemberRow,
    Rejected,
    SupporterFileError,
    read_rows,
)

# a row whose data is wrong is an error (left out by --skip-invalid); no consent value or a repeated address
# is a warning (that row is not copied); a refusal is the supporter's answer, not a fault in the file
ERROR_KINDS = frozenset({INVALID_EMAIL, INVALID_FIELD, INVALID_CONSENT_DATE, INVALID_LOCALE, MALFORMED_ROW})
NOT_A_PROBLEM = frozenset({CONSENT_REFUSED})


@dataclass
class CampaignCsv:
    """The rows of a campaign's CSV: members with consent, and the rows left out (as problems too)."""

    members: list[MemberRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_supporters(base: Path, name: str, *, campaign_file: str) -> CampaignCsv:
    """The members and rejected rows of the supporters CSV named ``name`` (relative to ``base``)."""
    out = CampaignCsv()
    try:
        text = read_named_file(
            base,
            name,
            limit=SUPPORTERS_CSV_MAX_BYTES,
            what="a supporters CSV",
            campaign_file=campaign_file,
            where="supporters",
            field="csv",
        )
    except CampaignFileError as err:
        out.problems = err.problems
        return out
    path = str(base / name)
    try:
        for row in read_rows(io.BytesIO(text.encode()), source=path):
            if isinstance(row, MemberRow):
                out.members.append(row)
                continue
            out.rejected.append(row)
            if row.kind in NOT_A_PROBLEM:
                continue
            severity = "error" if row.kind in ERROR_KINDS else "warning"
            message = row.reason if severity == "error" else f"{row.reason}: no copy for this row"
            out.problems.append(
                Problem(file=path, where=f"line {row.line}", field=row.column, severity=severity, message=message)
            )
    except SupporterFileError as err:
        out.members, out.rejected = [], []
        out.problems.append(Problem(file=path, where="supporters", field="csv", message=str(err)))
    return out
