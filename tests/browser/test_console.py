"""The console in headless Chromium, against a real `dispatch web` process (tests/browser/conftest.py).

A manager creates a campaign from the form (a validation error shown beside its field first) and schedules
it; the live log shows the events of a real scheduler and worker path (run_once and deliver_many in this
process, the Telnyx emulator and the SMTP sink) without a reload; the fax that failed has a timeline with
its attempt. An operator resolves a delivery held for an operator, with a reason, and finds their name in its
timeline. Markup in a campaign title, an addressee name and a supporter name is shown as text; a viewer sees
no button; the log of 100,000 deliveries shows its last events, a page at a time, quickly (measured)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import accounts, control
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Delivery
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.scheduling import SchedulerConfig, run_once
from dispatcher.domain.states import DeliveryKind, State
from dispatcher.domain.validation import validate
from workers.delivery import WorkerContext, deliver_many
from workers.reconcile import reconcile

from ..builders import SENDER, build_campaign, official
from ..integration.conftest import SETTINGS, Sandbox
from .conftest import SCREENSHOTS, Web

PASSWORD = "correct horse battery staple"
MARKUP = "<img src=x onerror=\"document.title='injected'\">"
FAILING_FAX = "+86 10 6307 0900"  # scripted "invalid_number" in the Telnyx emulator
FAILING_FAX_E164 = "+861063070900"
NAME = "free-the-nine"
BODY = (
    "{{ to.salutation or ('Dear ' ~ to.name ~ ',') }}\n\nPlease let the nine travel to safety.\n\n"
    "{{ sender.signatory }}"
)
ADDRESSEES = f"""\
[[to]]
name = "A. Minister"
title = "Minister"
country = "CN"
timezone = "Asia/Shanghai"
fax = ["{FAILING_FAX}"]
email = ["minister@gov.example"]
"""


def add_user(factory: sessionmaker[Session], name: str, *roles: str) -> None:
    with transaction(factory) as session:
        accounts.add_user(session, name, roles=roles, password=PASSWORD, now=datetime.now(UTC))


def log_in(page: webdriver.Chrome, web: Web, factory: sessionmaker[Session], name: str, *roles: str) -> None:
    add_user(factory, name, *roles)
    page.get(web.url("/login"))
    page.find_element(By.NAME, "name").send_keys(name)
    page.find_element(By.NAME, "password").send_keys(PASSWORD)
    page.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(page, 10).until(lambda p: p.title.startswith("Campaigns"))


def fill(page: webdriver.Chrome, fields: dict[str, str]) -> None:
    """Set the form's fields at once (typing a letter key by key would take seconds)."""
    for name, value in fields.items():
        page.execute_script("arguments[0].value = arguments[1]", page.find_element(By.NAME, name), value)


def snapshot(page: webdriver.Chrome, name: str) -> None:
    """A screenshot on the way (the ``page`` fixture saves one where the test ends)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def notice(page: webdriver.Chrome) -> str:
    return page.find_element(By.CSS_SELECTOR, ".notice").text


def state_of(factory: sessionmaker[Session], delivery_id: int) -> str:
    with factory() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery.state


@contextmanager
def scheduler_and_worker(worker: WorkerContext) -> Iterator[list[Exception]]:
    """Scheduler ticks (run_once) and worker batches (deliver_many), reconciliation too, in a thread, every
    0.2 s: the path `dispatch scheduler` and `dispatch worker` run; yields the errors it met."""
    stop, errors = threading.Event(), list[Exception]()
    config = SchedulerConfig.from_settings(SETTINGS)

    def collect(into: list[list[int]]) -> Callable[[str, Sequence[int]], None]:
        return lambda _queue, ids: into.append(list(ids))

    def loop() -> None:
        while not stop.is_set():
            published: list[list[int]] = []
            reconciling: list[list[int]] = []
            try:
                run_once(worker.factory, collect(published), collect(reconciling), now=worker.clock(), config=config)
                for ids in published:
                    deliver_many(worker, ids)
                for ids in reconciling:
                    for delivery_id in ids:
                        reconcile(worker, delivery_id)
            except Exception as error:  # the test reports it
                errors.append(error)
            stop.wait(0.2)

    thread = threading.Thread(target=loop, name="scheduler-and-worker", daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(timeout=10)


def test_a_manager_creates_and_schedules_a_campaign_and_watches_the_log_live(
    page: webdriver.Chrome,
    web: Web,
    factory: sessionmaker[Session],
    sandbox: Sandbox,
    worker: WorkerContext,
) -> None:
    sandbox.fax.script(FAILING_FAX_E164, ["invalid_number"])
    log_in(page, web, factory, "mina", "manager", "operator")

    page.find_element(By.LINK_TEXT, "New campaign").click()
    fields = {
        "campaign.name": "Free The Nine",  # not a name: lowercase, digits and '-'
        "campaign.title": "Free the nine",
        "letter.subject": "Nine refugees",
        "letter.body": BODY,
        "addressees": ADDRESSEES,
        **{f"sender.{k}": ("\n".join(v) if isinstance(v, list) else v) for k, v in SENDER.items()},
    }
    fill(page, fields)
    page.find_element(By.CSS_SELECTOR, "form.campaign-form button[type=submit]").click()
    WebDriverWait(page, 10).until(lambda p: p.find_elements(By.ID, "problem-campaign-name"))
    error = page.find_element(By.ID, "problem-campaign-name")
    beside = error.find_element(By.XPATH, "..").find_element(By.TAG_NAME, "input")  # in the field's own label
    assert beside.get_attribute("name") == "campaign.name"
    assert "should match pattern" in error.text and "Free The Nine" in error.text
    assert page.find_element(By.NAME, "campaign.title").get_attribute("value") == "Free the nine"  # kept

    fill(page, {"campaign.name": NAME})
    page.find_element(By.CSS_SELECTOR, "form.campaign-form button[type=submit]").click()
    WebDriverWait(page, 10).until(lambda p: p.current_url.endswith(f"/campaigns/{NAME}"))
    assert page.find_element(By.ID, "status").text == "draft"
    assert len(page.find_elements(By.CSS_SELECTOR, "img.fax-page")) >= 2  # the fax preview: cover and letter
    frame = page.find_element(By.CSS_SELECTOR, "iframe.email-preview")
    assert frame.get_attribute("sandbox") == ""
    page.switch_to.frame(frame)
    assert "Please let the nine travel to safety." in page.find_element(By.TAG_NAME, "body").text
    page.switch_to.default_content()

    page.find_element(By.CSS_SELECTOR, "section.actions input[name=reason]").send_keys("approved by the board")
    page.find_element(By.XPATH, "//section[@class='actions']//button[text()='Schedule']").click()
    WebDriverWait(page, 10).until(lambda p: p.find_elements(By.CSS_SELECTOR, ".notice"))
    assert notice(page) == f"{NAME}: scheduled (now)"
    assert page.find_element(By.ID, "status").text == "scheduled"
    snapshot(page, "console-campaign-page")

    page.get(web.url(f"/log?campaign={NAME}"))
    page.execute_script("window.notReloaded = true")
    shown = len(page.find_elements(By.CSS_SELECTOR, "#log-rows tr"))
    with scheduler_and_worker(worker) as errors:
        started = time.monotonic()
        WebDriverWait(page, 15, poll_frequency=0.1).until(
            lambda p: len(p.find_elements(By.CSS_SELECTOR, "#log-rows tr")) > shown
        )
        first_row = time.monotonic() - started
        WebDriverWait(page, 30, poll_frequency=0.2).until(  # the fax refused, then the email accepted
            lambda p: (
                "fax +861063070900 sending → failed" in p.find_element(By.ID, "log-rows").text
                and "email minister@gov.example sending → submitted" in p.find_element(By.ID, "log-rows").text
            )
        )
    snapshot(page, "console-live-log")
    assert errors == []
    assert page.execute_script("return window.notReloaded") is True  # the rows came without a reload
    print(f"\nfirst live row {first_row:.2f} s after the scheduler started")

    page.get(web.url(f"/campaigns/{NAME}"))
    with factory() as session:
        failed = session.scalars(select(Delivery).where(Delivery.state == State.FAILED)).one()
    page.find_element(By.LINK_TEXT, f"#{failed.id}").click()
    WebDriverWait(page, 10).until(lambda p: p.title.startswith(f"Delivery #{failed.id}"))
    assert page.find_element(By.ID, "state").text == "failed"
    attempt = page.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")[0].find_elements(By.TAG_NAME, "td")
    assert attempt[1].text == "telnyx"
    assert attempt[3].text == "permanent"
    assert attempt[4].text  # the provider's error code
    assert "→ failed" in page.find_element(By.CSS_SELECTOR, "table.events").text
    assert "permanent" in page.find_element(By.CSS_SELECTOR, "table.events").text  # its error class
    assert page.find_element(By.XPATH, "//section[@class='actions']//button").text == "Retry"


def held_campaign(factory: sessionmaker[Session], folder: Path, **fields: object) -> tuple[str, list[int]]:
    """A campaign loaded and scheduled, its first letter moved to ``unknown`` (held for an operator) and
    its second to ``failed``, as a worker would leave them; its name and its letters' ids."""
    path = build_campaign(folder, **fields)  # type: ignore[arg-type]
    spec = load_spec(path)
    now = datetime.now(UTC)
    with transaction(factory) as session:
        load_campaign(session, spec, validate(spec, file=path), source=path, skip_invalid=True)
        control.schedule(session, spec.campaign.name, now=now)
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        letters = list(
            session.scalars(select(Delivery).where(Delivery.kind == DeliveryKind.LETTER).order_by(Delivery.id))
        )
        for delivery, last in ((letters[0], State.UNKNOWN), (letters[1], State.FAILED)):
            for state in (State.QUEUED, State.SENDING, last):
                ledger.move(delivery, state, actor="worker:test", at=now, reason=f"test: {state}")
        return spec.campaign.name, [d.id for d in letters]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_operator_resolves_a_held_delivery_with_a_reason(
    page: webdriver.Chrome, web: Web, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _name, (held, failed, *_) = held_campaign(factory, tmp_path)
    log_in(page, web, factory, "olga", "operator")
    page.find_element(By.LINK_TEXT, "Held for an operator").click()
    row = page.find_element(By.CSS_SELECTOR, f"#held tr[data-delivery='{held}']")
    assert page.find_elements(By.CSS_SELECTOR, f"#failed tr[data-delivery='{failed}']")
    form = _form(row, "Resolve: sent")
    form.find_element(By.CSS_SELECTOR, "button").click()  # no reason: the browser asks for one
    assert state_of(factory, held) == State.UNKNOWN
    form.find_element(By.NAME, "reason").send_keys("Telnyx portal shows the fax delivered, 3 pages")
    form.find_element(By.CSS_SELECTOR, "button").click()
    WebDriverWait(page, 10).until(lambda p: p.find_elements(By.CSS_SELECTOR, ".notice"))
    assert notice(page) == f"delivery #{held}: delivered"
    assert state_of(factory, held) == State.DELIVERED
    assert not page.find_elements(By.CSS_SELECTOR, f"#held tr[data-delivery='{held}']")

    page.get(web.url(f"/deliveries/{held}"))
    last = page.find_elements(By.CSS_SELECTOR, "table.events tbody tr")[-1].text
    assert "unknown → delivered" in last
    assert "operator:olga" in last
    assert "Telnyx portal shows the fax delivered, 3 pages" in last


def _form(row: WebElement, label: str) -> WebElement:
    return row.find_element(By.XPATH, f".//form[.//button[text()='{label}']]")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_markup_in_names_is_shown_as_text(
    page: webdriver.Chrome, web: Web, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    name, (held, *_) = held_campaign(
        factory,
        tmp_path,
        title=MARKUP,
        to=[official(MARKUP, email=["minister@gov.example", "office@gov.example"])],
        cc=[],
        supporters=[("ada.supporter@example.org", MARKUP)],
    )
    log_in(page, web, factory, "mina", "manager", "operator")
    with factory() as session:
        copy = session.scalars(select(Delivery.id).where(Delivery.kind == DeliveryKind.COPY)).one()
    pages = ["/", f"/campaigns/{name}", "/log", "/held", f"/deliveries/{held}", f"/deliveries/{copy}"]
    for path in pages:
        page.get(web.url(path))
        assert page.title != "injected", path
        assert page.find_elements(By.CSS_SELECTOR, "img:not(.fax-page)") == [], path
        assert "ada.supporter@example.org" not in page.page_source, path
    page.get(web.url(f"/campaigns/{name}"))
    assert page.find_element(By.TAG_NAME, "h1").text == MARKUP
    assert page.find_element(By.CSS_SELECTOR, "td.addressee").text == MARKUP
    page.switch_to.frame(page.find_element(By.CSS_SELECTOR, "iframe.email-preview"))
    assert page.find_elements(By.TAG_NAME, "img") == []
    page.switch_to.default_content()
    page.get(web.url("/log"))
    assert "supporter copy #" in page.find_element(By.ID, "log-rows").text
    assert MARKUP in page.find_element(By.ID, "log-rows").text  # the addressee's name, as text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_viewer_sees_no_action_buttons(
    page: webdriver.Chrome, web: Web, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    name, (held, failed, *_) = held_campaign(factory, tmp_path)
    log_in(page, web, factory, "vera", "viewer")
    for path in ["/", f"/campaigns/{name}", "/held", f"/deliveries/{held}", f"/deliveries/{failed}"]:
        page.get(web.url(path))
        assert page.find_elements(By.CSS_SELECTOR, "main form") == [], path
        assert page.find_elements(By.CSS_SELECTOR, "main button") == [], path
        assert page.find_elements(By.LINK_TEXT, "New campaign") == [], path
    page.get(web.url("/new-campaign"))
    assert "it needs the campaigns permission" in page.find_element(By.TAG_NAME, "body").text


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_the_log_of_100000_deliveries_shows_its_last_events_quickly(
    page: webdriver.Chrome, web: Web, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    name, _ = held_campaign(factory, tmp_path, cc=[])
    started = time.monotonic()
    with transaction(factory) as session:
        campaign_id, addressee_id = session.execute(
            text("SELECT campaign_id, id FROM addressees ORDER BY id LIMIT 1")
        ).one()
        session.execute(
            text(
                "INSERT INTO deliveries (campaign_id, kind, addressee_id, channel, destination, route_position, "
                "state, idempotency_key, attempt_count, expects_report, created_at, updated_at) "
                "SELECT :c, 'letter', :a, 'email', 'bulk' || g || '@gov.example', 0, 'planned', 'bulk-' || g, 0, "
                "true, now(), now() FROM generate_series(1, 100000) AS g"
            ),
            {"c": campaign_id, "a": addressee_id},
        )
        session.execute(
            text(
                "INSERT INTO delivery_events (delivery_id, campaign_id, at, actor, to_state, reason) "
                "SELECT id, campaign_id, now(), 'planner', 'planned', '' FROM deliveries "
                "WHERE idempotency_key LIKE 'bulk-%'"
            )
        )
        session.execute(text("ANALYZE deliveries; ANALYZE delivery_events"))
    print(f"\n100,000 deliveries and their events written in {time.monotonic() - started:.1f} s")
    log_in(page, web, factory, "vera", "viewer")
    for path in ["/log", f"/log?campaign={name}&state=planned&channel=email", "/"]:
        started = time.monotonic()
        page.get(web.url(path))
        took = time.monotonic() - started
        rows = len(page.find_elements(By.CSS_SELECTOR, "#log-rows tr"))
        print(f"{path}: {rows} rows in {took * 1000:.0f} ms (page load, in the browser)")
        if path != "/":
            assert rows == 200
            assert page.find_elements(By.LINK_TEXT, "Older events")
    page.get(web.url("/log"))
    page.find_element(By.LINK_TEXT, "Older events").click()
    WebDriverWait(page, 10).until(lambda p: "before=" in p.current_url)
    assert len(page.find_elements(By.CSS_SELECTOR, "#log-rows tr")) == 200
    assert page.find_elements(By.ID, "live-status") == []  # an older page is not live
