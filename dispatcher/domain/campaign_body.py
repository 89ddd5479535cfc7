"""A campaign file sent as a request body (the API, the console's form), read without touching the filesystem.

The body is the campaign file's TOML, or the same tables as a JSON object. A campaign file on disk may
name a letter ``template`` and a supporters ``csv`` by path; a body may not: a path from a request never
reaches the filesystem. Such a body is refused whole, with a Problem saying to use the inline
``letter.body`` and supporter ``lists`` (imported through the lists API) instead, and nothing else of it
is read. Every other check is the campaign file's own (:mod:`.validation`), every problem at once.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.errors import Problem
from dispatcher.domain.input_files import CAMPAIGN_FILE_MAX_BYTES
from dispatcher.domain.shape import shape_problems, usable_sections
from dispatcher.domain.validation import Report, validate, validate_sections

BODY = "request body"  # how problems name the file
_UTF8_BOM = b"\xef\xbb\xbf"

# (table, key) a body must not hold, and what to use instead
PATH_KEYS = {
    ("letter", "template"): "a template file cannot be sent by path: put the letter in 'letter.body' (inline)",
    ("supporters", "csv"): "a supporters CSV cannot be sent by path: import it with POST /api/lists/{name}/import "
    "and name the list in 'supporters.lists'",
}


def parse_body(raw: bytes, *, json_body: bool) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The body's tables, or the problems that stop it being read (size, encoding, syntax)."""
    if len(raw) > CAMPAIGN_FILE_MAX_BYTES:
        return None, [_problem(f"the campaign is {len(raw)} bytes: at most {CAMPAIGN_FILE_MAX_BYTES}")]
    raw = raw.removeprefix(_UTF8_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, [_problem(f"not UTF-8: byte offset {err.start}")]
    try:
        data = json.loads(text) if json_body else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as err:
        kind = "JSON" if json_body else "TOML"
        return None, [_problem(f"not valid {kind}: {err}")]
    if not isinstance(data, dict):
        return None, [_problem("the campaign must be an object of tables: campaign, sender, letter, to, ...")]
    return data, []


def path_problems(data: dict[str, Any]) -> list[Problem]:
    """A Problem for each file path the body names (whatever its value): refused before anything is read."""
    found = []
    for (table, key), message in PATH_KEYS.items():
        section = data.get(table)
        if isinstance(section, dict) and key in section:
            found.append(Problem(file=BODY, where=table, field=key, message=message))
    return found


def check_body(data: dict[str, Any]) -> tuple[CampaignSpec | None, Report]:
    """Validate a body's tables as a campaign file: the spec (None if its shape is wrong) and every problem.

    A body naming a file path gets only those problems: nothing of it is validated (nor read)."""
    report = Report(file=BODY)
    refused = path_problems(data)
    if refused:
        report.problems = refused
        return None, report
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as err:
        sections = usable_sections(data)
        found = validate_sections(sections, file=Path(BODY))
        report.problems = [*shape_problems(err, file=BODY), *found.problems]
        return None, report
    except (RecursionError, TypeError, ValueError) as err:  # a value pydantic cannot even look at
        report.problems = [_problem(f"cannot be read as a campaign: {type(err).__name__}")]
        return None, report
    return spec, validate(spec, file=Path(BODY))


def _problem(message: str) -> Problem:
    return Problem(file=BODY, where="", message=message)
