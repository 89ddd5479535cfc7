"""README.md's Settings table lists every setting with its default: a new, renamed or re-defaulted
Settings field fails here until the table says so."""

from __future__ import annotations

import re
from pathlib import Path

from dispatcher.domain.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def settings_rows() -> dict[str, str]:
    """``| `DISPATCH_X` | default | meaning |`` rows of the "## Settings" section, as {field: default}."""
    text = README.read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `DISPATCH_([A-Z0-9_]+)` \| ([^|]*) \|", section, flags=re.MULTILINE)
    return {name.lower(): default.strip() for name, default in rows}


def shown(default: object) -> str:
    """A default as the table writes it."""
    if default is None:
        return "none"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if default == "":
        return "empty"
    if isinstance(default, int | float):
        return f"{default:g}"
    return f"`{default}`"


def test_every_setting_has_a_row_with_its_default() -> None:
    rows = settings_rows()
    assert sorted(rows) == sorted(Settings.model_fields), "the README Settings table and Settings differ"
    for name, field in Settings.model_fields.items():
        assert rows[name] == shown(field.default), f"DISPATCH_{name.upper()}: README says {rows[name]}"
