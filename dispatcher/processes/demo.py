"""`dispatch demo`: the example campaign (or another) end to end in one process, on the embedded default.

SQLite ledger, previews and oracles under DISPATCH_VAR_DIR/demo/ (var/demo/ by default), Celery with an
in-memory transport and an in-process worker, the Telnyx emulator for faxes (signed status webhooks to
our own web app, which also serves the fax PDFs the emulator downloads), the local SMTP sink for email.
One fax line is scripted busy once: it is retried and goes through. The malformed number in the seed
is reported and its route recorded as skipped with the reason.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nacl.signing
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel

from dispatcher.domain import accounts, control, db
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.media import media_url
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.queries import get_campaign
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.rendering.preview import write_preview
from dispatcher.domain.scheduling import SchedulerConfig
from dispatcher.domain.settings import Settings, get_settings
from dispatcher.domain.states import CampaignStatus
from dispatcher.domain.unsubscribe import unsubscribe_url
from dispatcher.domain.validation import validate
from dispatcher.processes import views
from dispatcher.processes.api import create_app
from dispatcher.processes.live import state_summary
from dispatcher.processes.logs import configure_logging
from dispatcher.processes.scheduler import run_forever
from dispatcher.processes.wakeup import EventWakeup
from dispatcher.processes.web_context import WebContext
from workers.gateways.base import Gateway
from workers.gateways.registry import build_gateway
from workers.sandbox import telnyx as telnyx_sandbox
from workers.sandbox.core import REACHING, SandboxState
from workers.sandbox.server import ThreadedServer, listening_socket
from workers.sandbox.smtp_sink import SmtpSink

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "campaigns" / "north-korean-refugees" / "campaign.toml"
DEMO_USER = "demo"
BUSY_NUMBER = "+861065591516"  # Wang Yi's fax: busy on the first call
# quicker than a deployment's
RETRY = RetryPolicy(base_seconds=1.0, cap_seconds=5.0, max_attempts=5, no_fax_tone_limit=2)


def now() -> datetime:
    return datetime.now(UTC)


def run_demo(
    *,
    console: Console,
    workdir: Path,
    timeout: float = 90.0,
    campaign_file: Path = EXAMPLE,
    log_settings: Settings | None = None,
    serve: bool = False,
    port: int = 8000,
) -> bool:
    """Run the whole path; True when every delivery ended and no reference was accepted twice.

    With ``log_settings``, the log goes to ``workdir``/demo.log at their level and format, away from
    the live view. The console is up from the start, at ``port`` (another free port when it is taken),
    with a login made for the demo; with ``serve`` it stays up after the run until Ctrl-C.
    """
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if log_settings is not None:
        configure_logging(log_settings, file=workdir / "demo.log")
    url = f"sqlite:///{workdir / 'ledger.db'}"
    name = _prepare(console, campaign_file, url, workdir)
    with ExitStack() as stack:
        sandbox = stack.enter_context(_sandbox(workdir, port=port))
        factory = db.session_factory(db.make_engine(url))
        stack.enter_context(_web(factory, sandbox))
        login = _console_login(factory)
        console.print(
            views.text(f"console: {sandbox.web_url}/  (log in as {login[0]}, password {login[1]})"),
            highlight=False,
            soft_wrap=True,  # one line, whatever the terminal's width: the address and password stay whole
        )
        wakeup = stack.enter_context(_worker(factory, sandbox))
        with db.transaction(factory) as session:
            control.schedule(session, name, now=now())
        wakeup.wake()
        console.rule("[bold]4. schedule and send")
        finished = _run_until_done(console, factory, name, timeout)
        ok = _report(console, factory, name, sandbox, finished)
        if serve:
            _serve_until_interrupted(console, sandbox, login)
        return ok


def _console_login(factory) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A user for the demo's console, manager and operator, with a new random password each run."""
    password = secrets.token_urlsafe(12)
    with db.transaction(factory) as session:
        accounts.add_user(session, DEMO_USER, roles=["manager", "operator"], password=password, now=now(), replace=True)
    return DEMO_USER, password


def _serve_until_interrupted(console: Console, sandbox: Sandbox, login: tuple[str, str]) -> None:
    console.print(
        Panel(
            views.text(
                f"The console is up at {sandbox.web_url}/ : log in as {login[0]} with the password {login[1]}.\n"
                "The sandbox, the worker and the scheduler keep running: create, schedule and watch campaigns "
                "there.\nPress Ctrl-C to stop.",
                lines=True,
            ),
            title="console",
        )
    )

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and `kill` (SIGTERM) too: a demo started in the background (where SIGINT is ignored) stops cleanly
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopped")


def _prepare(console: Console, file: Path, url: str, workdir: Path) -> str:
    spec = load_spec(file)
    report = validate(spec, file=file)
    console.rule("[bold]1. validate")
    for problem in report.problems:
        console.print(views.text(f"{problem.severity}: {problem}"), highlight=False)
    console.rule("[bold]2. preview")
    for line in write_preview(spec, file.parent, pdf_path=workdir / "preview.pdf", eml_path=workdir / "preview.eml"):
        console.print(f"wrote {line}")
    console.rule("[bold]3. load (leaving out the invalid route, recorded as skipped)")
    db.upgrade(url)
    factory = db.session_factory(db.make_engine(url))
    with db.transaction(factory) as session:
        result = load_campaign(session, spec, report, source=file, skip_invalid=True)
    console.print(f"{spec.campaign.name}: {result.status}, {result.planned} planned, {result.skipped} skipped")
    copies = result.copies_line()
    if copies is not None:
        console.print(copies)
    return spec.campaign.name


class Sandbox:
    def __init__(self, workdir: Path, *, port: int = 0) -> None:
        self.signing_key = nacl.signing.SigningKey.generate()
        self.api_key = "KEYdemo" + secrets.token_hex(8)
        self.web_socket = _reserve(port)  # held until the web server serves on it: no other process takes it
        self.web_port: int = self.web_socket.getsockname()[1]
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.fax = SandboxState(provider="telnyx", webhook_delay=0.3, oracle_path=workdir / "oracle-telnyx.jsonl")
        self.fax.script(BUSY_NUMBER, ["busy"])
        self.mail = SandboxState(provider="smtp", oracle_path=workdir / "oracle-smtp.jsonl")
        self.secret = secrets.token_bytes(32)
        self.fax_server: ThreadedServer | None = None
        self.smtp: SmtpSink | None = None

    def gateways(self) -> dict[str, Gateway]:
        assert self.fax_server is not None and self.smtp is not None
        public_key = base64.b64encode(bytes(self.signing_key.verify_key)).decode()
        fax = build_gateway(
            "telnyx",
            api_key=self.api_key,
            connection_id="demo-connection",
            public_key=public_key,
            base_url=self.fax_server.url,
            webhook_url=f"{self.web_url}/webhooks/telnyx",
        )
        mail = build_gateway("smtp", host=self.smtp.host, port=self.smtp.port, security="plain")
        return {"fax": fax, "email": mail}


def _reserve(port: int) -> socket.socket:
    """The console's socket on `port` when it is free, else on one the kernel chooses."""
    if port:
        try:
            return listening_socket(port=port)
        except OSError:
            pass
    return listening_socket()


@contextmanager
def _sandbox(workdir: Path, *, port: int = 0) -> Iterator[Sandbox]:
    sandbox = Sandbox(workdir, port=port)
    app = telnyx_sandbox.create_app(sandbox.fax, api_key=sandbox.api_key, signing_key=sandbox.signing_key)
    sandbox.fax_server = ThreadedServer(app).start()
    sandbox.smtp = SmtpSink(sandbox.mail)
    sandbox.smtp.start()
    try:
        yield sandbox
    finally:
        sandbox.smtp.stop()
        sandbox.fax_server.stop()
        sandbox.web_socket.close()


@contextmanager
def _web(factory, sandbox: Sandbox) -> Iterator[ThreadedServer]:  # type: ignore[no-untyped-def]
    gateways = sandbox.gateways()
    app = create_app(
        WebContext(
            factory=factory,
            gateways={"telnyx": gateways["fax"]},  # type: ignore[dict-item]
            secret=sandbox.secret,
            retry=RETRY,
            documents=DocumentCache(),
        )
    )
    server = ThreadedServer(app, sock=sandbox.web_socket).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def _worker(factory, sandbox: Sandbox) -> Iterator[EventWakeup]:  # type: ignore[no-untyped-def]
    """An in-process Celery worker on the in-memory transport, and the scheduler in a thread; yields what
    wakes the scheduler."""
    from celery.contrib.testing.worker import start_worker

    from workers import runtime
    from workers.celery_app import app as celery_app
    from workers.delivery import WorkerContext
    from workers.tasks import publisher, reconcile_publisher

    celery_app.conf.broker_url = "memory://localhost/"
    runtime.install(
        WorkerContext.from_settings(
            get_settings(),
            factory=factory,
            gateways=sandbox.gateways(),
            retry=RETRY,
            reconcile_grace=timedelta(seconds=2),
            fax_gap=timedelta(0),  # the busy line is called again after its backoff, not a minute later
            media_url=lambda delivery_id, at: media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=at),
            unsubscribe_url=lambda delivery_id: unsubscribe_url(sandbox.web_url, sandbox.secret, delivery_id),
        )
    )
    stop = threading.Event()
    wakeup = EventWakeup()
    ticker = threading.Thread(
        target=run_forever,
        daemon=True,
        name="scheduler",
        kwargs=dict(
            factory=factory,
            publisher=publisher,
            reconciler=reconcile_publisher,
            clock=now,
            stop=stop,
            interval=0.25,
            config=SchedulerConfig.from_settings(get_settings(), reconcile_every=timedelta(seconds=2)),
            wakeup=wakeup,
        ),
    )
    os.environ.setdefault("CELERY_RDBSIG", "0")
    with start_worker(
        celery_app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10
    ):
        ticker.start()
        try:
            yield wakeup
        finally:
            stop.set()
            wakeup.wake()
            ticker.join(timeout=5)
    runtime.install(None)


def _run_until_done(console: Console, factory, name: str, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while time.monotonic() < deadline:
            with factory() as session:
                campaign = get_campaign(session, name)
                live.update(Group(state_summary(session, name), *views.campaign_detail(session, name)[1:2]))
                if campaign.status == CampaignStatus.COMPLETED:
                    return True
            time.sleep(0.3)
    return False


def _show_a_copy(console: Console, sandbox: Sandbox) -> None:
    """The first supporter copy the SMTP sink accepted: its unsubscribe headers and the officials' outcomes."""
    assert sandbox.smtp is not None
    copies = [m for m in sandbox.smtp.messages() if m.message["List-Unsubscribe"]]
    if not copies:
        console.print("no supporter copy was sent")
        return
    message = copies[0].message
    body = message.get_body(preferencelist=("plain",))
    text = str(body.get_content()).replace("\r\n", "\n") if body is not None else ""  # type: ignore[attr-defined]
    lines = [f"{h}: {message[h]}" for h in ("Subject", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")]
    report = [text.split("Addressed to:")[0].strip()]  # the greeting, and each official's outcome
    console.print(
        Panel(
            views.text("\n".join(lines) + "\n\n" + "\n\n".join(report), lines=True),
            title=f"a supporter's copy, as the SMTP server received it ({len(copies)} copies sent)",
        )
    )


def _report(console: Console, factory, name: str, sandbox: Sandbox, finished: bool) -> bool:  # type: ignore[no-untyped-def]
    console.rule("[bold]5. result")
    with factory() as session:
        for renderable in views.campaign_detail(session, name):
            console.print(renderable)
        console.print(views.event_table(session, name))
    faxes, mails = sandbox.fax.oracle(), sandbox.mail.oracle()
    failed_calls = sum(1 for e in faxes if e.outcome not in REACHING)
    references = {e.reference for e in faxes + mails}
    twice = {**sandbox.fax.duplicates(), **sandbox.mail.duplicates()}
    _show_a_copy(console, sandbox)
    console.print(
        Panel(
            f"sandbox oracle: {len(faxes)} fax sends accepted ({failed_calls} of them failed on the line and were "
            f"retried), {len(mails)} emails accepted, {len(references)} distinct references, "
            f"{len(twice)} delivered more than once\n"
            f"campaign finished: {'yes' if finished else 'NO (timed out)'}",
            title="never twice, never lose one",
        )
    )
    return finished and not twice
