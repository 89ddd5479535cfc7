"""The `dispatch` command line (typer + rich)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from . import db, views
from .campaign_file import CampaignSpec, load_spec
from .errors import DispatchError, Problem
from .settings import get_settings
from .validation import Report, validate

app = typer.Typer(help="Deliver urgent letters to officials by fax and email.", no_args_is_help=True)
campaign_app = typer.Typer(help="Validate, preview, load and inspect campaigns.", no_args_is_help=True)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

FileArg = Annotated[Path, typer.Argument(help="campaign TOML file", exists=False)]


def _factory() -> sessionmaker[Session]:
    engine = db.make_engine(get_settings().database_url)
    db.ensure_schema(engine)
    return db.session_factory(engine)


def _read(file: Path) -> tuple[CampaignSpec, Report]:
    spec = load_spec(file)
    return spec, validate(spec, file=file)


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        style = "red" if problem.severity == "error" else "yellow"
        err_console.print(f"[{style}]{problem.severity}[/{style}]: {problem}", highlight=False, markup=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the ledger's migrations (Alembic) to DISPATCH_DATABASE_URL."""
    url = get_settings().database_url
    db.upgrade(url)
    console.print(f"ledger at revision {db.head_revision()}")


@campaign_app.command("validate")
def campaign_validate(file: FileArg) -> None:
    """Check a campaign file and report every problem at once (exit 1 on any error)."""
    spec, report = _read(file)
    _print_problems(report.problems)
    if not report.ok:
        err_console.print(f"{len(report.errors)} error(s) in {file}")
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {spec.campaign.name} is valid")


@campaign_app.command("preview")
def campaign_preview(
    file: FileArg,
    pdf: Annotated[Path | None, typer.Option(help="write the fax PDF here")] = None,
    eml: Annotated[Path | None, typer.Option(help="write the email (.eml) here")] = None,
) -> None:
    """Write the exact fax PDF and email that would go out."""
    from .rendering.preview import write_preview

    spec, report = _read(file)
    if report.template_source == "" and not report.ok:
        _print_problems(report.errors)
        raise typer.Exit(1)
    written = write_preview(spec, file.parent, pdf_path=pdf, eml_path=eml)
    for line in written:
        console.print(f"wrote {line}")


@campaign_app.command("load")
def campaign_load(
    file: FileArg,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="leave out invalid routes and CSV rows, recording each as skipped with its reason",
    )] = False,
) -> None:
    """Validate, then write the campaign and all its planned deliveries in one transaction."""
    from .planning import load_campaign

    spec, report = _read(file)
    _print_problems(report.problems)
    with db.transaction(_factory()) as session:
        result = load_campaign(session, spec, report, source=file.resolve(), skip_invalid=skip_invalid)
    console.print(f"{spec.campaign.name}: {result.status} ({result.planned} planned, {result.skipped} skipped)")


@campaign_app.command("list")
def campaign_list() -> None:
    """Every campaign in the ledger with delivery counts per state."""
    with db.transaction(_factory()) as session:
        console.print(views.campaign_table(session))


@campaign_app.command("show")
def campaign_show(name: str) -> None:
    """Addressees, routes and delivery states of one campaign."""
    with db.transaction(_factory()) as session:
        for renderable in views.campaign_detail(session, name):
            console.print(renderable)


@app.command("log")
def log(name: str) -> None:
    """The delivery events of a campaign, newest last."""
    with db.transaction(_factory()) as session:
        console.print(views.event_table(session, name))


def main() -> None:
    try:
        app()
    except DispatchError as err:
        err_console.print(f"[red]error[/red]: {err}")
        raise SystemExit(1) from err
