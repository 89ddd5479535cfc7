"""Which column of a supporter list's header holds what: names and their aliases, and ``--map``.

A header is matched case-insensitively, with spaces, hyphens and underscores alike ("E-Mail", "e_mail" and
"e mail" are one name). ``--map "E-Mail Adresse=email,Vorname=first_name"`` names other headers; it wins over
the aliases. Every column that is none of these is kept, by its header, in the member's ``fields``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ROLES = ("email", "name", "first_name", "last_name", "consent", "consent_date", "consent_source", "locale")
MAX_COLUMNS = 200


def key(header: str) -> str:
    """The form headers are compared in: lower case, spaces, hyphens and underscores made one space."""
    return re.sub(r"[\s_\-]+", " ", header.casefold()).strip()


ALIASES: dict[str, str] = {
    **{key(role): role for role in ROLES},
    "e mail": "email",
    "email address": "email",
    "given": "first_name",
    "family": "last_name",
}


class ColumnError(ValueError):
    """The header (or ``--map``) cannot be read as a supporter list's; the message says why."""


def parse_mapping(spec: str) -> dict[str, str]:
    """``"E-Mail Adresse=email,Vorname=first_name"`` as {header: column}; ColumnError if malformed."""
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        header, sep, role = part.partition("=")
        if not sep or not header.strip():
            raise ColumnError(f"--map: {part.strip()!r} is not HEADER=COLUMN")
        known = ALIASES.get(key(role))
        if known is None:
            raise ColumnError(f"--map: {role.strip()!r} is not a column an import reads ({', '.join(ROLES)})")
        mapping[header.strip()] = known
    return mapping


@dataclass(frozen=True)
class Columns:
    """A header read: each column's name as written (an empty one is "column N"), the role of those that
    have one, and the others, kept in ``fields``."""

    names: tuple[str, ...]
    roles: dict[str, int]  # role -> column index
    custom: tuple[int, ...]

    def index(self, role: str) -> int | None:
        return self.roles.get(role)


def read_header(cells: Sequence[str], mapping: Mapping[str, str] | None = None) -> Columns:
    """The columns of a header row; ColumnError for a header no import can read. A missing email column
    is the caller's to report (it knows whether the row looks like data)."""
    if len(cells) > MAX_COLUMNS:
        raise ColumnError(f"the header has {len(cells)} columns; at most {MAX_COLUMNS}")
    names = tuple(cell.strip() or f"column {i + 1}" for i, cell in enumerate(cells))
    wanted = {key(h): role for h, role in (mapping or {}).items()}
    keys = [key(n) for n in names]
    for header in mapping or {}:
        if key(header) not in keys:
            shown = ", ".join(repr(n) for n in names)
            raise ColumnError(f"--map names {header!r}, which the header does not have (its columns: {shown})")
    roles: dict[str, int] = {}
    custom: list[int] = []
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in seen:
            first = seen[k]
            raise ColumnError(f"columns {first + 1} ({names[first]!r}) and {i + 1} ({names[i]!r}) have the same name")
        seen[k] = i
        role = wanted.get(k) or ALIASES.get(k)
        if role is None:
            custom.append(i)
        elif role in roles:
            first = roles[role]
            raise ColumnError(f"columns {first + 1} ({names[first]!r}) and {i + 1} ({names[i]!r}) are both {role}")
        else:
            roles[role] = i
    return Columns(names=names, roles=roles, custom=tuple(custom))
