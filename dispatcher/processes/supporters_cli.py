"""`dispatch supporters ...`: supporter lists (import, list), and a person's data (export, erase)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported by the commands that use it: `dispatch` starts without it
    from dispatcher.domain.supporter_import import ImportResult, MemberRow, Rejected

supporters_app = typer.Typer(help="Supporter lists, consent, and a person's data.", no_args_is_help=True)

# --- lists and import ------------------------------------------------------------------------------------

SHOWN_REJECTED = 20  # rejected rows printed; --rejects writes them all


@supporters_app.command("import")
def supporters_import(
    file: Annotated[Path, typer.Argument(help="the list as a CSV file", exists=True, dir_okay=False)],
    list_name: Annotated[str, typer.Option("--list", help="the list to import into (created if needed)")],
    encoding: Annotated[
        str | None,
        typer.Option(help="the file's encoding, e.g. latin-1 (default: UTF-8, with or without a byte-order mark)"),
    ] = None,
    mapping: Annotated[
        str | None,
        typer.Option("--map", help='columns of other headers, e.g. "E-Mail Adresse=email,Vorname=first_name"'),
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="write every rejected row here: a CSV of line, kind, reason and its cells")
    ] = None,
) -> None:
    """Import a CSV of supporters into a list: rows with consent are added or updated, a "no" withdraws a
    member's consent; every rejected row is reported by line. Nothing is written if the file is refused."""
    from dispatcher.domain import db
    from dispatcher.domain.csv_out import write_csv
    from dispatcher.domain.supporter_import import SupporterFileError, import_rows, parse_mapping, read_rows
    from dispatcher.processes.cli import _factory, _now, _print_error

    shown: list[Rejected] = []
    try:
        header_map = parse_mapping(mapping) if mapping else None
        with file.open("rb") as stream:
            rows = read_rows(stream, source=str(file), encoding=encoding, mapping=header_map)
            out = write_csv(rejects) if rejects is not None else contextlib.nullcontext(None)
            with out as writer, db.transaction(_factory()) as session:
                if writer is not None:
                    writer.writerow(["line", "kind", "reason", *rows.columns.names])

                def rejected(row: Rejected) -> None:
                    if len(shown) < SHOWN_REJECTED:
                        shown.append(row)
                    if writer is not None:
                        writer.writerow([row.line, row.kind, row.reason, *row.cells.values()])

                result = import_rows(
                    session, list_name, _with_progress(rows, stream, file), now=_now(), on_rejected=rejected
                )
    except SupporterFileError as err:
        _print_error(str(err))
        raise typer.Exit(2) from None
    except OSError as err:  # the file cannot be read, or --rejects cannot be written: nothing was imported
        _print_error(f"{err.filename or file}: {err.strerror or err}; nothing was imported")
        raise typer.Exit(2) from None
    _report(result, shown, rejects)


def _with_progress(
    rows: Iterable[MemberRow | Rejected], stream: IO[bytes], file: Path
) -> Iterator[MemberRow | Rejected]:
    """``rows``, with a progress bar by bytes read on stderr when it is a terminal."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from dispatcher.processes.cli import err_console

    if not err_console.is_terminal:
        yield from rows
        return
    columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("import", total=file.stat().st_size)
        for n, row in enumerate(rows):
            if n % 500 == 0:
                progress.update(task, completed=stream.tell())
            yield row
        progress.update(task, completed=stream.tell())


def _report(result: ImportResult, shown: list[Rejected], rejects: Path | None) -> None:
    lines = [result.summary()]
    if not result.changed:
        lines.append("nothing changed")
    total = sum(result.rejected.values())
    if total:
        kinds = sorted(result.rejected.items(), key=lambda item: (-item[1], item[0]))
        lines.append("rejected: " + ", ".join(f"{n} {kind}" for kind, n in kinds))
        lines += [f"  line {row.line}: {row.reason}" for row in shown]
        if total > len(shown):
            lines.append(f"  ... and {total - len(shown)} more")
        if rejects is not None:
            lines.append(f"every rejected row, with its cells: {rejects}")
        else:
            lines.append("(--rejects FILE writes every rejected row with its cells)")
    _print_lines(lines)


def _print_lines(lines: list[str]) -> None:
    """Lines that may hold user data (a list name, a path), as text; never wrapped, so each stays one line."""
    from dispatcher.processes.cli import console
    from dispatcher.processes.views import text

    for line in lines:
        console.print(text(line), soft_wrap=True, highlight=False)


@supporters_app.command("lists")
def supporters_lists() -> None:
    """Each supporter list, with its number of members and of those who gave consent."""
    from rich.table import Table

    from dispatcher.domain import db
    from dispatcher.domain.supporter_lists import list_counts
    from dispatcher.processes.cli import _factory, console
    from dispatcher.processes.views import text

    with db.reading(_factory()) as session:
        counts = list_counts(session)
    if not counts:
        _print_lines(["no supporter lists yet: import one with `dispatch supporters import FILE --list NAME`"])
        return
    table = Table(title="Supporter lists")
    table.add_column("list", overflow="fold")
    table.add_column("members", justify="right")
    table.add_column("consenting", justify="right")
    for count in counts:
        table.add_row(text(count.name), str(count.members), str(count.consenting))
    console.print(table)


# -- a person's data: export, erase ---------------------------------------------------------------


def _valid_address(email: str) -> str:
    """The EMAIL argument, refused as a usage error (exit 2) when it is not an address; never repeated."""
    from dispatcher.domain.emails import normalise_email

    if normalise_email(email) is None:
        raise typer.BadParameter("the address given is not a valid email address")
    return email


EmailArg = Annotated[
    str, typer.Argument(metavar="EMAIL", help="the person's email address, in any case", callback=_valid_address)
]


@supporters_app.command("export")
def supporters_export(
    email: EmailArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="write the JSON to this file (readable by you only) instead")
    ] = None,
) -> None:
    """Everything held about one address, as JSON: list memberships with consent, copies with their events, and
    whether it is suppressed."""
    import json

    from dispatcher.domain import db, privacy
    from dispatcher.processes.cli import _factory, say

    with db.reading(_factory()) as session:
        data = privacy.export_person(session, email)
    document = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        typer.echo(document, nl=False)
    else:
        try:
            _write_private(out, document)
        except OSError as err:
            say(f"error: cannot write {out}: {err.strerror or err}", error=True)
            raise typer.Exit(1) from None
        say(f"wrote {out}: {privacy.counted(data)}")
    if not data["lists"] and not data["copies"] and data["suppressed"] is None:
        say("nothing found for this address", error=True)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all, readable and writable by the owner only."""
    import os
    import tempfile

    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@supporters_app.command("erase")
def supporters_erase(
    email: EmailArg,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="erase without asking (needed when not on a terminal)")
    ] = False,
) -> None:
    """Take one person out of the ledger: their list memberships are deleted, their copies still waiting are
    cancelled, and every copy stays, counted, without their address or data. Prints counts only."""
    import sys
    from datetime import UTC, datetime

    from dispatcher.domain import db, privacy
    from dispatcher.processes.cli import _factory, say

    factory = _factory()
    if not yes:
        if not sys.stdin.isatty():
            say("error: not a terminal, so nothing was asked and nothing erased: add --yes to erase", error=True)
            raise typer.Exit(1)
        with db.reading(factory) as session:
            held = privacy.held(session, email)
        if held.found and not typer.confirm(held.question(), default=False):
            say("nothing erased")
            raise typer.Exit(1)
    with db.transaction(factory) as session:
        result = privacy.erase_person(session, email, now=datetime.now(UTC), actor="operator")
        bind = session.get_bind()
    if result.found:
        privacy.settle_files(bind)
    say(result.summary())
