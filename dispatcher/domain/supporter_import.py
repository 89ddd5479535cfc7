"""Importing a supporter list from a CSV file: the rows read and checked, then written in batches.

:func:`read_rows` streams the file (:mod:`.csv_in`): its header is matched to the columns an import reads
(:mod:`.supporter_columns`), then each row is a :class:`MemberRow` (a valid, new address with consent) or a
:class:`Rejected` row, with its line and the reason. A reason never holds the address or the name: the line
says which row. A problem with the file itself (no email column, a byte the encoding cannot decode, ...)
is a :class:`SupporterFileError`, and nothing of it is imported.

:func:`import_rows` writes members with consent to a list, 1,000 rows per round trip; a refusal
(``consent=no``) withdraws the consent of a member already on the list and never adds anyone. Importing
the same file again changes nothing. The caller owns the transaction: the CLI commits once, at the end.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, BinaryIO

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from dispatcher.domain import supporter_columns
from dispatcher.domain.characters import IN_LINE, unsafe_in_line
from dispatcher.domain.csv_in import Record, UndecodableByte, Utf16Bom, records, text_encoding
from dispatcher.domain.emails import normalise_email
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.models import Supporter, SupporterList
from dispatcher.domain.supporter_columns import ROLES, ColumnError, Columns, read_header

# The kinds of rejected row.
INVALID_EMAIL = "invalid-email"
DUPLICATE = "duplicate"
CONSENT_REFUSED = "consent-refused"
CONSENT_MISSING = "consent-missing"
INVALID_CONSENT_DATE = "invalid-consent-date"
INVALID_LOCALE = "invalid-locale"
INVALID_FIELD = "invalid-field"  # a name or consent source with a control character, or too long
MALFORMED_ROW = "malformed-row"

YES = frozenset({"yes", "y", "true", "1"})
NO = frozenset({"no", "n", "false", "0"})
_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")
MAX_LENGTH = {"name": 200, "consent_source": 300}  # the ledger's column sizes
BATCH = 1000
LIST_NAME_MAX = 100


class SupporterFileError(DispatchError):
    """The file cannot be imported at all; the message names the file and, where it can, the line."""


@dataclass(frozen=True, kw_only=True)
class MemberRow:
    """A row with a valid address, new in its file, and consent."""

    line: int
    email: str  # normalised (emails.normalise_email)
    name: str | None
    locale: str | None = None
    consent_at: datetime | None = None
    consent_source: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # the other columns' non-empty cells, by header


@dataclass(frozen=True, kw_only=True)
class Rejected:
    """A row left out, and why. ``email`` is the normalised address when it is valid (a refusal needs it);
    ``cells`` are the row's cells as the file gave them, by header (extra cells as "column N")."""

    line: int
    kind: str
    reason: str
    email: str | None
    cells: dict[str, str]
    column: str = ""  # the column at fault ("email", "consent", "name", ...), "" for the row as a whole


@dataclass
class ImportResult:
    list_name: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    created: bool = False  # the list was new

    @property
    def changed(self) -> bool:
        return bool(self.created or self.added or self.updated or self.withdrawn)

    def summary(self) -> str:
        rejected = sum(self.rejected.values())
        return (
            f"list {self.list_name!r}: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.withdrawn} consent withdrawn, {rejected} {'row' if rejected == 1 else 'rows'} rejected"
        )


def parse_mapping(spec: str) -> dict[str, str]:
    """``--map "E-Mail Adresse=email,Vorname=first_name"`` as {header: column}."""
    try:
        return supporter_columns.parse_mapping(spec)
    except ColumnError as err:
        raise SupporterFileError(str(err)) from None


def read_rows(
    stream: BinaryIO, *, source: str, encoding: str | None = None, mapping: Mapping[str, str] | None = None
) -> SupporterRows:
    """The rows of a supporter list, read as they are iterated; its header is read at once (a
    SupporterFileError for a header no import can read). ``source`` names the file in messages."""
    return SupporterRows(stream, source=source, encoding=encoding, mapping=mapping)


class SupporterRows(Iterator[MemberRow | Rejected]):
    """The rows of one file; ``columns`` is its header as read."""

    def __init__(
        self, stream: BinaryIO, *, source: str, encoding: str | None, mapping: Mapping[str, str] | None
    ) -> None:
        self.source = source
        try:
            text_encoding(encoding)
        except LookupError:
            raise SupporterFileError(f"{source}: unknown encoding {encoding!r}") from None
        self._records = records(stream, encoding=encoding)
        header = self._next_record()
        if header is None:
            raise SupporterFileError(f"{source}: the file is empty: it needs a header row (email,name,consent,...)")
        where = f"{source}: line {header.line}"
        if header.error:
            raise SupporterFileError(f"{where}: the header row is {header.error}")
        try:
            self.columns: Columns = read_header(header.cells, mapping)
        except ColumnError as err:
            raise SupporterFileError(f"{where}: {err}") from None
        if self.columns.index("email") is None:
            raise SupporterFileError(f"{where}: {_no_email_column(header, self.columns)}")
        # hash of an address -> the line it was first on: a 64-bit hash, seeded per process, keeps 200,000
        # addresses in a few MiB (two addresses sharing one is about as likely as 1 in 10**9)
        self._seen: dict[int, int] = {}

    def __iter__(self) -> SupporterRows:
        return self

    def __next__(self) -> MemberRow | Rejected:
        record = self._next_record()
        if record is None:
            raise StopIteration
        return self._row(record)

    def _next_record(self) -> Record | None:
        try:
            return next(self._records, None)
        except Utf16Bom:
            raise SupporterFileError(
                f"{self.source}: the file starts with a UTF-16 byte-order mark: save it as UTF-8, or name the "
                "encoding: --encoding utf-16"
            ) from None
        except UndecodableByte as err:
            hint = (
                " If the file is in another encoding, name it: --encoding latin-1 (or cp1252, ...)"
                if err.encoding == "UTF-8"
                else ""
            )
            raise SupporterFileError(f"{self.source}: {err}; nothing was imported.{hint}") from None

    def _row(self, record: Record) -> MemberRow | Rejected:
        line, cells = record.line, record.cells
        names = self.columns.names

        def rejected(kind: str, reason: str, email: str | None = None, column: str = "") -> Rejected:
            given = {name: cells[i] if i < len(cells) else "" for i, name in enumerate(names)}
            given.update((f"column {i + 1}", cells[i]) for i in range(len(names), len(cells)))
            return Rejected(line=line, kind=kind, reason=reason, email=email, cells=given, column=column)

        if record.error:
            return rejected(MALFORMED_ROW, record.error)
        if len(cells) > len(names) and any(cell.strip() for cell in cells[len(names) :]):
            return rejected(MALFORMED_ROW, f"{len(cells)} cells, but the header has {len(names)} columns")
        cell = dict.fromkeys(ROLES, "")
        cell.update((role, cells[i].strip()) for role, i in self.columns.roles.items() if i < len(cells))
        raw = cell["email"]
        email = normalise_email(raw) if raw else None
        if email is None:
            return rejected(INVALID_EMAIL, "not a valid email address" if raw else "no email address", column="email")
        first = self._seen.setdefault(hash(email), line)
        if first != line:
            return rejected(DUPLICATE, f"duplicate of line {first}", email, "email")
        consent = self._consent(cell["consent"])
        if consent is False:
            return rejected(CONSENT_REFUSED, "consent refused", email, "consent")
        if isinstance(consent, str):
            return rejected(CONSENT_MISSING, consent, email, "consent")
        try:
            consent_at = _consent_at(cell["consent_date"])
        except ValueError:
            return rejected(
                INVALID_CONSENT_DATE,
                "consent_date is not an ISO date or date-time (2026-11-02, 2026-11-02T10:30:00+01:00)",
                email,
                "consent_date",
            )
        try:
            locale = _locale(cell["locale"])
        except ValueError:
            return rejected(INVALID_LOCALE, "locale is not a language tag like en, fr or pt-BR", email, "locale")
        name = cell["name"] or " ".join(p for p in (cell["first_name"], cell["last_name"]) if p)
        for what, value in (("name", name), ("consent_source", cell["consent_source"])):
            problem = _text_problem(what, value)
            if problem:
                return rejected(INVALID_FIELD, problem, email, what)
        return MemberRow(
            line=line,
            email=email,
            name=name or None,
            locale=locale,
            consent_at=consent_at,
            consent_source=cell["consent_source"] or None,
            fields={names[i]: cells[i].strip() for i in self.columns.custom if i < len(cells) and cells[i].strip()},
        )

    def _consent(self, raw: str) -> bool | str:
        """True, False, or why there is no answer."""
        if self.columns.index("consent") is None:
            return "no consent column"
        if not raw:
            return "no consent given (the consent cell is empty)"
        value = raw.casefold()
        if value in YES or value in NO:
            return value in YES
        return "consent is not yes/no, true/false, 1/0 or y/n"


def _no_email_column(header: Record, columns: Columns) -> str:
    if any("@" in cell and normalise_email(cell) for cell in header.cells):  # data, not a header: never quoted
        return (
            f"no email column, and line {header.line} holds an email address: the file seems to have no header "
            "row; add one (email,name,consent,...)"
        )
    shown = ", ".join(repr(n) for n in columns.names[:20]) + (", ..." if len(columns.names) > 20 else "")
    return (
        f"no email column (the header has: {shown}); name it email, e-mail or email address, "
        "or map it with --map 'HEADER=email'"
    )


def _consent_at(raw: str) -> datetime | None:
    """The consent date as an aware UTC datetime (a date is its midnight, UTC; a time without an offset is
    UTC), None if empty; ValueError if it is not ISO 8601."""
    if not raw:
        return None
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _locale(raw: str) -> str | None:
    """The locale written "pt-BR" (language, optional script and region), None if empty; ValueError if
    it is not such a tag."""
    if not raw:
        return None
    found = _LOCALE.fullmatch(raw)
    if found is None:
        raise ValueError("not a language tag")
    language, script, region = found.groups()
    return "-".join(p for p in (language.lower(), script and script.title(), region and region.upper()) if p)


def _text_problem(what: str, value: str) -> str | None:
    """Why a one-line cell cannot be kept (a control character, or longer than its column), or None."""
    unsafe = unsafe_in_line(value)
    if unsafe:
        return f"{what} contains {unsafe}: {IN_LINE}"
    if len(value) > MAX_LENGTH[what]:
        return f"{what} is longer than {MAX_LENGTH[what]} characters"
    return None


# --- writing ---------------------------------------------------------------------------------------------


def import_rows(
    session: Session,
    list_name: str,
    rows: Iterable[MemberRow | Rejected],
    *,
    now: datetime,
    on_rejected: Callable[[Rejected], None] | None = None,
) -> ImportResult:
    """Write ``rows`` to the list ``list_name`` (created if needed): members with consent added or updated,
    refusals withdrawing consent; every other row is counted as rejected and given to ``on_rejected``.

    An empty cell never erases what the list holds (a name, locale, source or custom field stays); a
    member's ``consent_at`` is the file's consent_date, or, without one, the time of the import that
    recorded the consent. Reads and writes 1,000 rows per statement; flushes, never commits."""
    result = ImportResult(list_name=list_name)
    list_id, result.created = _list_id(session, list_name, now=now)
    postgres = session.get_bind().dialect.name == "postgresql"
    analyze_at = BATCH
    it = iter(rows)
    while batch := list(islice(it, BATCH)):
        _write_batch(session, list_id, batch, now=now, result=result, on_rejected=on_rejected)
        if postgres and result.added >= analyze_at:
            # PostgreSQL plans each batch's SELECT from statistics that do not know the rows this import
            # added: it would scan the whole list for every batch (time growing with the square of the
            # rows). ANALYZE counts this transaction's own rows; each time the rows added double, it keeps
            # the plan on the (list_id, email) index.
            session.execute(text("ANALYZE supporters"))
            analyze_at = 2 * result.added
    if result.added or result.updated or result.withdrawn:
        session.execute(update(SupporterList).where(SupporterList.id == list_id).values(updated_at=now))
    return result


def _list_id(session: Session, name: str, *, now: datetime) -> tuple[int, bool]:
    """The list's id, and whether it was created now."""
    problem = unsafe_in_line(name)
    if not name.strip() or problem or len(name) > LIST_NAME_MAX:
        why = f"contains {problem}" if problem else f"must be 1 to {LIST_NAME_MAX} characters"
        raise SupporterFileError(f"the list name {name!r} {why}")
    found = session.scalar(select(SupporterList.id).where(SupporterList.name == name))
    if found is not None:
        return found, False
    created = SupporterList(name=name, created_at=now, updated_at=now)
    session.add(created)
    session.flush()
    return created.id, True


_CURRENT = (
    Supporter.id,
    Supporter.email,
    Supporter.name,
    Supporter.locale,
    Supporter.consent,
    Supporter.consent_at,
    Supporter.consent_source,
    Supporter.fields,
)


def _write_batch(
    session: Session,
    list_id: int,
    batch: list[MemberRow | Rejected],
    *,
    now: datetime,
    result: ImportResult,
    on_rejected: Callable[[Rejected], None] | None,
) -> None:
    emails = {r.email for r in batch if isinstance(r, MemberRow) or (r.kind == CONSENT_REFUSED and r.email)}
    current = {
        row.email: row
        for row in session.execute(select(*_CURRENT).where(Supporter.list_id == list_id, Supporter.email.in_(emails)))
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    done: set[str] = set()
    for row in batch:
        member = current.get(row.email) if row.email is not None and row.email not in done else None
        if isinstance(row, Rejected):
            if row.kind != CONSENT_REFUSED or member is None:
                result.rejected[row.kind] += 1
                if on_rejected is not None:
                    on_rejected(row)
            elif member.consent:
                updates.append({"id": member.id, "consent": False, "updated_at": now})
                result.withdrawn += 1
            else:
                result.unchanged += 1
        elif row.email in done:  # read_rows never repeats an address; other callers might
            result.rejected[DUPLICATE] += 1
        elif member is None:
            inserts.append(_new_member(list_id, row, now=now))
            result.added += 1
        else:
            values = _changed_member(member, row, now=now)
            if values is None:
                result.unchanged += 1
            else:
                updates.append(values)
                result.updated += 1
        if row.email is not None:
            done.add(row.email)
    if inserts:
        session.execute(insert(Supporter), inserts)
    if updates:
        session.execute(update(Supporter), updates)


def _new_member(list_id: int, row: MemberRow, *, now: datetime) -> dict[str, Any]:
    return {
        "list_id": list_id,
        "email": row.email,
        "name": row.name,
        "locale": row.locale,
        "consent": True,
        "consent_at": row.consent_at or now,
        "consent_source": row.consent_source,
        "fields": row.fields,
        "created_at": now,
        "updated_at": now,
    }


def _changed_member(member: Any, row: MemberRow, *, now: datetime) -> dict[str, Any] | None:
    """The values of a member updated by ``row``, or None if it changes nothing."""
    kept = member.consent_at if member.consent else now  # without a date: consent recorded at this import
    consent_at = row.consent_at if row.consent_at is not None else kept
    values = {
        "name": row.name if row.name is not None else member.name,
        "locale": row.locale or member.locale,
        "consent": True,
        "consent_at": consent_at,
        "consent_source": row.consent_source or member.consent_source,
        "fields": {**(member.fields or {}), **row.fields},
    }
    if all(values[key] == getattr(member, key) for key in values):
        return None
    return {"id": member.id, **values, "updated_at": now}
