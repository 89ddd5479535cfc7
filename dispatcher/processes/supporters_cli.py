"""`dispatch supporters ...`: supporter lists (import, list), and a person's data (export, erase)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

supporters_app = typer.Typer(help="Supporter lists, consent, and a person's data.", no_args_is_help=True)


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
