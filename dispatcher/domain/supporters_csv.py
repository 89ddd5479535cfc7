"""The supporters CSV: one copy of the letter per row, read row by row, each problem on its line.

The file is read through :mod:`dispatcher.domain.input_files` (inside the campaign's folder, at most
16 MiB, UTF-8); a row whose email is invalid or whose name holds control characters is a problem on its
line, a repeated address a warning, and malformed CSV (e.g. a field over the ``csv`` module's limit)
a problem on the line where reading stopped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from dispatcher.domain.characters import IN_LINE, unsafe_in_line
from dispatcher.domain.emails import check_email
from dispatcher.domain.errors import CampaignFileError, Problem
from dispatcher.domain.input_files import SUPPORTERS_CSV_MAX_BYTES, read_named_file


@dataclass(frozen=True, kw_only=True)
class SupporterRow:
    line: int
    email: str
    name: str | None
    problem: Problem | None = None


def read_supporters(base: Path, name: str, *, campaign_file: str) -> tuple[list[SupporterRow], list[Problem]]:
    """The rows of the supporters CSV named ``name`` (relative to ``base``), and every problem found."""
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
        return [], err.problems
    path = base / name
    reader = csv.DictReader(io.StringIO(text))
    problems: list[Problem] = []
    try:
        header = reader.fieldnames
    except csv.Error as err:
        return [], [_malformed(err, path=path, line=reader.reader.line_num)]
    if header is None or "email" not in [f.strip().lower() for f in header]:
        message = "the CSV needs a header with an 'email' column (and optionally 'name')"
        return [], [Problem(file=str(path), where="line 1", field="header", message=message)]
    rows = _rows(reader, path, problems)
    return rows, problems


def _rows(reader: csv.DictReader[str], path: Path, problems: list[Problem]) -> list[SupporterRow]:
    rows: list[SupporterRow] = []
    seen: set[str] = set()
    try:
        for row in reader:
            line = reader.line_num
            cells = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
            raw = cells.get("email", "")
            value, problem = check_email(raw, file=str(path), where=f"line {line}", field="email")
            if value and value.lower() in seen:
                message = "this address appears on an earlier line; one copy is sent"
                problems.append(
                    Problem(file=str(path), where=f"line {line}", field="email", severity="warning", message=message)
                )
                continue
            name = cells.get("name") or None
            problem = problem or _name_problem(name, path=path, line=line)
            if problem:
                problems.append(problem)
            if value:
                seen.add(value.lower())
            rows.append(SupporterRow(line=line, email=value or raw, name=name, problem=problem))
    except csv.Error as err:  # the underlying reader counts the line it failed on; DictReader does not yet
        problems.append(_malformed(err, path=path, line=reader.reader.line_num))
    return rows


def _malformed(err: csv.Error, *, path: Path, line: int) -> Problem:
    return Problem(file=str(path), where=f"line {line}", message=f"not valid CSV: {err}")


def _name_problem(name: str | None, *, path: Path, line: int) -> Problem | None:
    what = unsafe_in_line(name or "")
    if not what:
        return None
    return Problem(file=str(path), where=f"line {line}", field="name", message=f"contains {what}: {IN_LINE}")
