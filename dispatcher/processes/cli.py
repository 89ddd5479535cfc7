"""The `dispatch` command line (typer + rich)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import db
from dispatcher.domain.errors import DispatchError, Problem
from dispatcher.domain.settings import get_settings, load_settings
from dispatcher.processes import views
from dispatcher.processes.accounts_cli import token_app, user_app
from dispatcher.processes.logs import configure_logging, leave_celery_logging_alone
from dispatcher.processes.supporters_cli import supporters_app
from dispatcher.processes.views import text

if TYPE_CHECKING:  # imported where used: rendering and validation cost a second that schedule need not wait
    from dispatcher.domain.campaign_file import CampaignSpec
    from dispatcher.domain.validation import Report

app = typer.Typer(help="Deliver urgent letters to officials by fax and email.", no_args_is_help=True)
campaign_app = typer.Typer(help="Validate, preview, load and inspect campaigns.", no_args_is_help=True)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
app.add_typer(db_app, name="db")
app.add_typer(supporters_app, name="supporters")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

console = Console()
err_console = Console(stderr=True)
logger = logging.getLogger(__name__)


@app.callback()
def _every_command() -> None:
    # before any command: settings are read (a malformed one stops here) and logging is configured
    configure_logging(get_settings())


FileArg = Annotated[Path, typer.Argument(help="campaign TOML file", exists=False)]


def _factory() -> sessionmaker[Session]:
    engine = db.make_engine(get_settings().database_url)
    db.ensure_schema(engine)
    return db.session_factory(engine)


def _read(file: Path) -> tuple[CampaignSpec, Report]:
    from dispatcher.domain.campaign_file import load_spec
    from dispatcher.domain.validation import validate

    spec = load_spec(file)
    return spec, validate(spec, file=file)


def _print_problems(problems: list[Problem], *, left_out: frozenset[int] = frozenset()) -> None:
    """Each problem once; those in ``left_out`` (by id) are errors that --skip-invalid turns into skips."""
    for problem in problems:
        label = "skipped" if id(problem) in left_out else problem.severity
        style = "red" if label == "error" else "yellow"
        err_console.print(Text.assemble((label, style), ": ", text(problem)), highlight=False)


def say(message: str, *, error: bool = False) -> None:
    """One line that may hold user data (names, paths, values): printed as text, never as markup."""
    (err_console if error else console).print(text(message, lines=True), highlight=False)


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
        say(f"{len(report.errors)} error(s) in {file}", error=True)
        raise typer.Exit(1)
    console.print(Text.assemble(("ok", "green"), ": ", text(f"{spec.campaign.name} is valid")))


@campaign_app.command("preview")
def campaign_preview(
    file: FileArg,
    pdf: Annotated[
        Path | None, typer.Option(help='write the fax PDF here (several "To": one each, e.g. out-2-Wang-Yi.pdf)')
    ] = None,
    eml: Annotated[
        Path | None, typer.Option(help='write the email (.eml) here (several "To": one each, e.g. out-2-Wang-Yi.eml)')
    ] = None,
) -> None:
    """Write the exact fax PDF and email that would go out, for each "To" addressee's letter; print
    every file written."""
    from dispatcher.domain.planning import fatal_problems
    from dispatcher.domain.rendering.preview import write_preview

    spec, report = _read(file)
    _print_problems(report.problems)
    # what a load with --skip-invalid leaves out (a route, a CSV row, an addressee) is left out here too
    fatal = fatal_problems(spec, report, skip_invalid=True)
    if fatal:
        err_console.print(f"preview refused: {len(fatal)} error(s) that `campaign load --skip-invalid` refuses too")
        raise typer.Exit(1)
    written = write_preview(spec, file.parent, pdf_path=pdf, eml_path=eml)
    for line in written:
        say(f"wrote {line}")


@campaign_app.command("load")
def campaign_load(
    file: FileArg,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="leave out invalid routes (recorded as skipped with the reason) and invalid supporter rows",
        ),
    ] = False,
) -> None:
    """Validate, then write the campaign and all its planned deliveries in one transaction."""
    from dispatcher.domain.planning import fatal_problems, load_campaign, skippable_problems

    spec, report = _read(file)
    skippable = frozenset(id(p) for p in skippable_problems(spec, report))
    _print_problems(report.problems, left_out=skippable if skip_invalid else frozenset())
    fatal = fatal_problems(spec, report, skip_invalid=skip_invalid)
    if fatal:  # each problem is printed above, once
        hint = "" if skip_invalid or not skippable else SKIP_INVALID_HINT
        say(f"{len(fatal)} error(s) in {file}: nothing was loaded{hint}", error=True)
        raise typer.Exit(1)
    with db.transaction(_factory()) as session:
        result = load_campaign(session, spec, report, source=file.resolve(), skip_invalid=skip_invalid)
    for place in result.skipped_addressees:
        say(f"skipped {place}: no usable electronic route")
    say(f"{spec.campaign.name}: {result.status} ({result.planned} planned, {result.skipped} skipped)")
    copies = result.copies_line()
    if copies is not None:
        say(copies)


SKIP_INVALID_HINT = (
    "; with --skip-invalid, invalid routes and addressees without a usable route are left out and recorded as "
    "skipped with the reason, and invalid supporter rows are left out"
)


@campaign_app.command("list")
def campaign_list() -> None:
    """Every campaign in the ledger with delivery counts per state."""
    with db.reading(_factory()) as session:
        console.print(views.campaign_table(session))


@campaign_app.command("show")
def campaign_show(name: str) -> None:
    """Addressees, routes and delivery states of one campaign; above them, any paused gateway."""
    with db.reading(_factory()) as session:
        renderables = views.campaign_detail(session, name)
        for alert in views.gateway_alerts(session):
            console.print(alert, style="bold red", soft_wrap=True, markup=False, highlight=False)
        for renderable in renderables:
            console.print(renderable)


def main() -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from workers.gateways.errors import GatewayConfigError

    try:
        app()
    except (DispatchError, GatewayConfigError) as err:
        _print_error(str(err))
        raise SystemExit(1) from err
    except SQLAlchemyError as err:
        _print_error(database_error(err))
        raise SystemExit(1) from err


def _print_error(message: str) -> None:
    err_console.print(Text.assemble(("error", "red"), ": ", text(message, lines=True)), highlight=False)


def database_error(err: Exception) -> str:
    """One line for an error from the ledger: its kind only. The database's own text, the statement
    and its parameters are never shown: they may hold supporters' names and addresses."""
    cause = getattr(err, "orig", None) or err
    hint = " Another process holds the ledger's lock: try again." if "locked" in str(cause) else ""
    return (
        f"the ledger refused this command ({type(cause).__name__}); what it was writing was not kept. "
        f"Its statement and values are not shown (they may hold personal data).{hint}"
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _campaign_action(verb: str, name: str, reason: str | None) -> None:
    from dispatcher.domain.accounts import command_line
    from dispatcher.processes import operations

    try:
        done = operations.campaign_action(
            _factory(), verb, name, by=command_line(_os_user()), reason=reason, now=_now()
        )
    except operations.Refused as err:
        raise SystemExit(_refused(err)) from err
    say(done.message)


def _refused(err: Exception) -> int:
    _print_error(str(err))
    return 1


ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="why; kept in the operator actions log", show_default=False)
]


@campaign_app.command("schedule")
def campaign_schedule(name: str, reason: ReasonOption = None) -> None:
    """Schedule a loaded campaign: its deliveries go out per the file's schedule (now, at, office hours)."""
    _campaign_action("schedule", name, reason)  # the scheduler ticks as soon as this commits


@campaign_app.command("pause")
def campaign_pause(name: str, reason: ReasonOption = None) -> None:
    """Stop sending; queued deliveries go back to planned. Faxes already handed to a provider go on."""
    _campaign_action("pause", name, reason)


@campaign_app.command("resume")
def campaign_resume(name: str, reason: ReasonOption = None) -> None:
    """Resume a paused campaign."""
    _campaign_action("resume", name, reason)


@campaign_app.command("cancel")
def campaign_cancel(name: str, reason: ReasonOption = None) -> None:
    """Cancel every delivery not yet handed to a provider (a fax mid-call is never interrupted)."""
    _campaign_action("cancel", name, reason)


gateway_app = typer.Typer(
    help="Gateways: their state; resume one paused by a configuration fault or its circuit breaker.",
    no_args_is_help=True,
)
app.add_typer(gateway_app, name="gateway")


@gateway_app.command("list")
def gateway_list() -> None:
    """Each configured gateway (DISPATCH_FAX_GATEWAY, _EMAIL_GATEWAY, _COPIES_GATEWAY): sending or paused, and why."""
    from workers.gateways.registry import provider_of, slots

    by_name: dict[str, list[str]] = {}
    for slot in slots(get_settings()):
        by_name.setdefault(slot.name, []).append(slot.key)
    configured = [(name, ", ".join(keys), provider_of(name)) for name, keys in by_name.items()]
    with db.reading(_factory()) as session:
        console.print(views.gateway_table(session, configured, now=_now()))


@gateway_app.command("resume")
def gateway_resume(name: str) -> None:
    """Send through a paused gateway again, once its setting is fixed; what waited on it goes next tick."""
    from dispatcher.domain import gateway_pauses
    from dispatcher.domain.ledger_sql import SqlLedger

    with db.transaction(_factory()) as session:
        resumed = gateway_pauses.resume(SqlLedger(session), name, at=_now())
    console.print(f"gateway {name}: " + ("resumed" if resumed else "was not paused"))


delivery_app = typer.Typer(help="Operator actions on one delivery.", no_args_is_help=True)
app.add_typer(delivery_app, name="delivery")


@delivery_app.command("retry")
def delivery_retry(
    delivery_id: int,
    force: Annotated[bool, typer.Option("--force", help="even if another route of the addressee succeeded")] = False,
    reason: ReasonOption = None,
) -> None:
    """Send a failed delivery again (same route, same idempotency key)."""
    from dispatcher.domain import control
    from dispatcher.domain.accounts import command_line, record_action
    from dispatcher.processes.wakeup import notify

    who = command_line(_os_user())
    with db.transaction(_factory()) as session:
        delivery = control.retry(session, delivery_id, now=_now(), actor=who.actor, force=force, reason=reason or "")
        record_action(
            session,
            who,
            "delivery.retry",
            now=_now(),
            reason=reason or "",
            campaign_id=delivery.campaign_id,
            delivery_id=delivery_id,
        )
        notify(session)
    console.print(f"delivery #{delivery_id}: planned again")


@delivery_app.command("resolve")
def delivery_resolve(
    delivery_id: int,
    sent: Annotated[bool, typer.Option("--sent/--not-sent", help="what the provider's records show")],
    reason: Annotated[str, typer.Option("--reason", help="what you checked and found; kept in the delivery's log")],
    by: Annotated[
        str | None, typer.Option("--by", help="who settles it  [default: the OS user]", show_default=False)
    ] = None,
) -> None:
    """Settle a delivery held for an operator (`unknown`, or `submitted` with no final report) after checking
    with the provider by hand: --sent ends it as delivered (the addressee's later routes are settled by the
    policy), --not-sent sends it again on the same route."""
    from dispatcher.domain import control
    from dispatcher.domain.accounts import command_line, record_action

    who = command_line(by or _os_user())
    with db.transaction(_factory()) as session:
        state = control.resolve(session, delivery_id, sent=sent, now=_now(), reason=reason, by=who.name)
        action = "delivery.resolve-sent" if sent else "delivery.resolve-not-sent"
        record_action(session, who, action, now=_now(), reason=reason.strip(), delivery_id=delivery_id)
    console.print(f"delivery #{delivery_id}: {state}")


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the password database
        return "operator"


@app.command("log")
def log(
    name: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep showing new events live")] = False,
) -> None:
    """The delivery events of a campaign, newest last."""
    factory = _factory()
    if not follow:
        with db.reading(factory) as session:
            console.print(views.event_table(session, name))
        return
    from dispatcher.processes.live import follow_log

    follow_log(factory, name, console=console)


@app.command("scheduler")
def scheduler(
    interval: Annotated[
        float | None, typer.Option(help="seconds between ticks  [default: DISPATCH_TICK_SECONDS]", show_default=False)
    ] = None,
) -> None:
    """Claim due deliveries every tick and publish them to the workers; sweep lost and dead ones."""
    import signal
    import threading

    from dispatcher.domain.scheduling import SchedulerConfig
    from dispatcher.processes.scheduler import run_forever
    from dispatcher.processes.startup import check_configured_gateways
    from dispatcher.processes.wakeup import PostgresWakeup
    from workers.tasks import publisher, reconcile_publisher, waiting_messages

    settings = get_settings()
    check_configured_gateways(settings)  # a refused key stops here, naming the variable
    interval = interval if interval is not None else settings.tick_seconds
    config = SchedulerConfig.from_settings(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logger.info("scheduler: ticking every %ss against %s", interval, settings.database_url.split("@")[-1])
    factory = _factory()
    engine = factory.kw["bind"]
    wakeup = PostgresWakeup(engine, stop=stop) if engine.dialect.name == "postgresql" else None  # commands wake it
    try:
        run_forever(
            factory,
            publisher,
            reconcile_publisher,
            clock=_now,
            stop=stop,
            interval=interval,
            config=config,
            waiting=waiting_messages,
            wakeup=wakeup,
        )
    except KeyboardInterrupt:
        stop.set()
    finally:
        if wakeup is not None:
            wakeup.close()


def _node_name(value: str | None) -> str | None:
    """``--name``: a Celery node name, NAME or NAME@HOST, without spaces."""
    if value is None:
        return None
    name, _, host = value.partition("@")
    if not name or ("@" in value and not host) or "@" in host or any(c.isspace() or not c.isprintable() for c in value):
        raise typer.BadParameter(f"{value!r} is not a node name: give NAME or NAME@HOST, without spaces")
    return value


@app.command("worker")
def worker(
    queues: Annotated[
        str, typer.Option(help="comma-separated queues; a worker on `reconcile` alone never waits behind sends")
    ] = "fax,email,copies,reconcile",
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 2,
    name: Annotated[
        str | None,
        typer.Option(
            help="Celery node name, NAME@<host> (give NAME@HOST to choose the host part too): two workers on one "
            "host need two names to show as two in Flower  [default: Celery's, celery@<host>]",
            show_default=False,
            callback=lambda value: _node_name(value),
        ),
    ] = None,
    loglevel: Annotated[
        str | None, typer.Option(help="overrides DISPATCH_LOG_LEVEL  [default: DISPATCH_LOG_LEVEL]", show_default=False)
    ] = None,
) -> None:
    """Run a Celery worker (prefork pool) on the broker at DISPATCH_BROKER_URL."""
    from dispatcher.processes.startup import check_gateways
    from workers.celery_app import app as celery_app
    from workers.celery_app import queue_name
    from workers.runtime import worker_context

    settings = get_settings() if loglevel is None else load_settings(log_level=loglevel)
    configure_logging(settings)
    leave_celery_logging_alone()
    # build gateways now: a missing setting fails at start-up, naming the variable, and so does a refused key
    served = [q.strip() for q in queues.split(",")]
    check_gateways(settings, worker_context(served).gateways.values())  # copies need DISPATCH_SECRET_KEY too
    if "fax" in served:  # parsed once in this parent: every process of the pool inherits it
        from dispatcher.domain.rendering.fpdf_fonts import preload

        preload()
    names = ",".join(queue_name(q) for q in served)
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner between the JSON lines
    node = ["--hostname", name if "@" in name else f"{name}@%h"] if name else []
    celery_app.worker_main(
        [
            *quiet,
            "worker",
            *node,
            "-Q",
            names,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            settings.log_level,
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command("web")
def web(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve the console, the JSON API (/api/), status webhooks (/webhooks/<gateway>), fax documents for providers
    (/media), unsubscribe pages, health and metrics."""
    import uvicorn

    from dispatcher.processes.startup import check_gateways
    from dispatcher.processes.web import build_web_app, configured_gateways

    settings = get_settings()
    gateways = configured_gateways(settings)
    check_gateways(settings, gateways.values())  # a refused key stops here, naming the variable
    # log_config=None: uvicorn's loggers keep the configuration every command sets (dispatcher/processes/logs.py)
    uvicorn.run(build_web_app(settings, gateways=gateways), host=host, port=port, log_config=None)


@app.command("demo")
def demo(
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 90.0,
    campaign: Annotated[
        Path | None, typer.Option(help="campaign TOML file  [default: the example campaign]", show_default=False)
    ] = None,
    serve: Annotated[
        bool | None,
        typer.Option(
            "--serve/--no-serve",
            help="keep the console up after the run, until Ctrl-C  [default: when run in a terminal]",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="the console's port (another free one when it is taken)")] = 8000,
) -> None:
    """Run a campaign end to end in one process: SQLite, in-process worker, sandbox gateways, and the console
    with a login made for the demo; files in DISPATCH_VAR_DIR/demo."""
    import sys

    from dispatcher.processes.demo import EXAMPLE, run_demo

    settings = get_settings()
    leave_celery_logging_alone()
    ok = run_demo(
        console=console,
        timeout=timeout,
        workdir=settings.var_dir / "demo",
        campaign_file=campaign or EXAMPLE,
        log_settings=settings,
        serve=sys.stdin.isatty() and sys.stdout.isatty() if serve is None else serve,
        port=port,
    )
    if not ok:
        raise typer.Exit(1)


sandbox_app = typer.Typer(help="Provider emulators for rehearsals, the demo and tests.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("serve")
def sandbox_serve(
    web_url: Annotated[
        str, typer.Option(help="where `dispatch web` listens (webhooks go there)")
    ] = "http://127.0.0.1:8000",
    oracle_dir: Annotated[
        Path | None,
        typer.Option(
            help="where each emulator appends its oracle  [default: DISPATCH_VAR_DIR/sandbox]", show_default=False
        ),
    ] = None,
    free_ports: Annotated[
        bool, typer.Option("--free-ports", help="any free local ports instead of 8101-8106 and 8025 (SMTP)")
    ] = False,
) -> None:
    """Run every provider emulator and the SMTP sink on localhost; print the settings that use them."""
    import threading

    from workers.sandbox.serve import DEFAULT_PORTS, serve_all
    from workers.sandbox.server import free_port

    ports = {name: free_port() for name in DEFAULT_PORTS} if free_ports else None
    oracles = oracle_dir or get_settings().var_dir / "sandbox"
    running = serve_all(web_url=web_url, oracle_dir=oracles, ports=ports)
    console.print("# sandbox running; export these to point the gateways at it (Ctrl-C stops):")
    for key, value in sorted(running.settings.items()):
        console.print(f"export {key}={value}", highlight=False, soft_wrap=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        running.stop()
