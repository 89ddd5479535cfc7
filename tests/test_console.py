"""The console's pages through the real app on SQLite and PostgreSQL (the browser half is tests/browser/):
the server checks every permission and form token, bad input is a 4xx naming the problem, the campaign
form's problems go beside their fields, the letter preview is served apart, the live log's fragment."""

from __future__ import annotations

import html as html_module
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.db import transaction
from dispatcher.domain.holds import hold
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Campaign, Delivery, OperatorAction, Supporter
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.states import DeliveryKind, State
from dispatcher.processes.api import create_app
from dispatcher.processes.console import Previews

from .builders import NAME, SENDER, build_campaign
from .test_access import HTML, Clock, add_user, context, log_in
from .test_planning import load

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BODY = "{{ to.salutation or to.name }}\n\nPlease let them go.\n\n{{ sender.signatory }}"
ADDRESSEES = '[[to]]\nname = "A. Minister"\ncountry = "GB"\ntimezone = "Europe/London"\nemail = ["m@gov.example"]\n'


def client_for(factory: sessionmaker[Session], *roles: str, name: str = "mina") -> tuple[TestClient, str]:
    """A logged-in client and its session's form token."""
    add_user(factory, name, *roles)
    client = TestClient(create_app(context(factory, Clock())))
    assert log_in(client, name).status_code == 303  # type: ignore[attr-defined]
    page = client.get("/", headers=HTML)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return client, found.group(1)


def form(csrf: str, **changes: str) -> dict[str, str]:
    fields = {
        "csrf": csrf,
        "campaign.name": "free-them",
        "campaign.title": "Free them",
        "letter.subject": "Free them",
        "letter.body": BODY,
        "addressees": ADDRESSEES,
        "schedule.mode": "now",
        **{f"sender.{k}": "\n".join(v) if isinstance(v, list) else v for k, v in SENDER.items()},
    }
    return {**fields, **changes}


def problems(html: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, message in re.findall(r'class="field-error" id="problem-([^"]+)">([^<]*)<', html):
        found.setdefault(key, []).append(html_module.unescape(message))
    return found


@pytest.fixture
def loaded(factory: sessionmaker[Session], tmp_path: Path) -> str:
    load(factory, build_campaign(tmp_path))
    return NAME


def test_a_viewer_is_refused_every_action_by_the_server(factory: sessionmaker[Session], loaded: str) -> None:
    client, csrf = client_for(factory, "viewer", name="vera")
    for url in [f"/campaigns/{loaded}/schedule", "/deliveries/1/retry", "/new-campaign", "/lists/upload"]:
        answer = client.post(url, data={"csrf": csrf, "reason": "because"}, headers=HTML)
        assert answer.status_code == 403, url
        assert "may not do this: it needs the" in answer.text
    assert client.get("/new-campaign", headers=HTML).status_code == 403
    with factory() as session:
        assert session.scalars(select(OperatorAction)).all() == []
        assert session.scalars(select(Campaign.status)).one() == "draft"


def test_an_action_without_the_form_token_is_refused(factory: sessionmaker[Session], loaded: str) -> None:
    client, _csrf = client_for(factory, "manager")
    answer = client.post(f"/campaigns/{loaded}/schedule", data={"reason": "x"}, headers=HTML)
    assert answer.status_code == 403
    assert "the form token (csrf) is missing or wrong" in answer.text


def test_campaign_actions_show_their_result_or_refusal(factory: sessionmaker[Session], loaded: str) -> None:
    client, csrf = client_for(factory, "manager")
    done = client.post(f"/campaigns/{loaded}/schedule", data={"csrf": csrf, "reason": "board said so"}, headers=HTML)
    assert done.status_code == 200
    assert f"{loaded}: scheduled (now)" in done.text
    assert "<td>user:mina</td><td>campaign.schedule</td><td></td><td>board said so</td>" in done.text
    again = client.post(f"/campaigns/{loaded}/resume", data={"csrf": csrf}, headers=HTML)
    assert again.status_code == 409
    assert "Refused: " in again.text
    assert client.post(f"/campaigns/{loaded}/explode", data={"csrf": csrf}, headers=HTML).status_code == 404
    assert client.get("/campaigns/no-such-campaign", headers=HTML).status_code == 404


def test_a_delivery_action_needs_a_reason(factory: sessionmaker[Session], loaded: str) -> None:
    client, csrf = client_for(factory, "operator", name="olga")
    with factory() as session:
        first = session.scalars(select(Delivery.id).order_by(Delivery.id)).first()
    refused = client.post(f"/deliveries/{first}/cancel", data={"csrf": csrf, "reason": "  "}, headers=HTML)
    assert refused.status_code == 422
    assert "a reason is required" in refused.text
    done = client.post(f"/deliveries/{first}/cancel", data={"csrf": csrf, "reason": "duplicate"}, headers=HTML)
    assert done.status_code == 200
    assert f"delivery #{first}: cancelled" in done.text
    assert "operator:olga" in done.text and "duplicate" in done.text  # the timeline's new event
    assert client.get("/deliveries/999999", headers=HTML).status_code == 404


def test_the_campaign_form_shows_each_problem_beside_its_field(factory: sessionmaker[Session]) -> None:
    client, csrf = client_for(factory, "manager")
    answer = client.post(
        "/new-campaign",
        data=form(
            csrf,
            **{
                "campaign.name": "Not A Name",
                "sender.email": "nobody",
                "letter.body": "{{ nobody_knows }}",
                "addressees": "[[to]\nname=",
            },
        ),
        headers=HTML,
        follow_redirects=False,
    )
    assert answer.status_code == 422
    found = problems(answer.text)
    assert set(found) == {"campaign-name", "sender-email", "addressees"}, found
    assert "Not A Name" in found["campaign-name"][0]
    assert "not valid TOML" in found["addressees"][0]
    assert 'value="Free them"' in answer.text  # what was typed is kept

    answer = client.post("/new-campaign", data=form(csrf, **{"letter.body": "{{ nobody_knows }}"}), headers=HTML)
    assert answer.status_code == 422
    assert "nobody_knows" in problems(answer.text)["letter-body"][0]
    with factory() as session:
        assert session.scalars(select(Campaign)).all() == []


def test_a_draft_is_created_edited_and_previewed(factory: sessionmaker[Session]) -> None:
    client, csrf = client_for(factory, "manager")
    created = client.post("/new-campaign", data=form(csrf), headers=HTML, follow_redirects=False)
    assert created.status_code == 303
    assert created.headers["location"] == "/campaigns/free-them"
    taken = client.post("/new-campaign", data=form(csrf), headers=HTML)
    assert taken.status_code == 422
    assert "a campaign named 'free-them' exists" in problems(taken.text)["campaign-name"][0]

    edit = client.get("/campaigns/free-them/edit", headers=HTML)
    assert edit.status_code == 200
    assert "m@gov.example" in edit.text and "Please let them go." in edit.text
    saved = client.post(
        "/campaigns/free-them/edit",
        data=form(csrf, **{"campaign.title": "Free them now", "campaign.name": "ignored"}),
        headers=HTML,
        follow_redirects=False,
    )
    assert saved.status_code == 303
    with factory() as session:
        assert [(c.name, c.title) for c in session.scalars(select(Campaign))] == [("free-them", "Free them now")]

    email = client.get("/campaigns/free-them/preview/email", headers=HTML)
    assert email.status_code == 200
    assert "Please let them go." in email.text
    assert "sandbox" in email.headers["content-security-policy"]
    png = client.get("/campaigns/free-them/preview/fax/1.png", headers=HTML)
    assert png.status_code == 200
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    page = client.get("/campaigns/free-them", headers=HTML)
    pages = int(re.search(r"Fax \((\d+) pages\)", page.text).group(1))  # type: ignore[union-attr]
    with factory() as session:
        pdf = Previews(DocumentCache()).of(session.scalars(select(Campaign)).one())["pdf"]
    assert pages == len(pypdf.PdfReader(io.BytesIO(pdf)).pages)
    assert client.get(f"/campaigns/free-them/preview/fax/{pages + 1}.png", headers=HTML).status_code == 404


def test_a_supporter_list_is_uploaded(factory: sessionmaker[Session]) -> None:
    client, csrf = client_for(factory, "manager")
    csv = b"email,name,consent\nada@example.org,Ada,yes\nnot-an-address,Bob,yes\n"
    done = client.post(
        "/lists/upload", data={"csrf": csrf, "list_name": "friends"}, files={"file": ("f.csv", csv)}, headers=HTML
    )
    assert done.status_code == 200
    assert "list &#39;friends&#39;: 1 added" in done.text
    assert "not-an-address" not in done.text and "Bob" not in done.text  # rejected rows: line and reason only
    bad_name = client.post(
        "/lists/upload", data={"csrf": csrf, "list_name": "../etc"}, files={"file": ("f.csv", csv)}, headers=HTML
    )
    assert bad_name.status_code == 422
    no_email = client.post(
        "/lists/upload",
        data={"csrf": csrf, "list_name": "others"},
        files={"file": ("f.csv", b"a,b\n1,2\n")},
        headers=HTML,
    )
    assert no_email.status_code == 422
    assert "Nothing was imported" in no_email.text
    with factory() as session:
        assert [s.email for s in session.scalars(select(Supporter))] == ["ada@example.org"]


def test_the_log_filters_and_its_live_fragment(factory: sessionmaker[Session], loaded: str) -> None:
    client, _csrf = client_for(factory, "viewer", name="vera")
    page = client.get(f"/log?campaign={loaded}&channel=fax", headers=HTML)
    assert page.status_code == 200
    assert page.text.count("<tr data-event=") > 0
    assert "/ email " not in page.text
    assert "supporter copy #" not in client.get("/log?channel=fax", headers=HTML).text
    assert client.get("/log?state=lost", headers=HTML).status_code == 422
    assert "no delivery state named &#39;lost&#39;" in client.get("/log?state=lost", headers=HTML).text
    last = int(re.search(r'data-after="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
    fragment = client.get(f"/log/rows?after={last}&campaign={loaded}&channel=fax", headers=HTML)
    assert fragment.status_code == 200
    assert fragment.text.strip() == ""
    assert fragment.headers["x-last-event"] == str(last)
    everything = client.get("/log/rows?after=0", headers=HTML)
    with factory() as session:
        copies = session.scalars(select(Delivery).where(Delivery.kind == DeliveryKind.COPY)).all()
    assert everything.text.count("<tr data-event=") >= len(copies) > 0
    for copy in copies:
        assert copy.destination not in everything.text  # "supporter copy #id", never the address
    assert client.get("/log/rows?after=x", headers=HTML).status_code == 422


def test_held_lists_unknown_and_overdue_submitted_deliveries_and_failed_ones(
    factory: sessionmaker[Session], loaded: str
) -> None:
    now = datetime.now(UTC)
    with transaction(factory) as session:
        control.schedule(session, loaded, now=now)
        ledger = SqlLedger(session)
        letters = list(
            session.scalars(select(Delivery).where(Delivery.kind == DeliveryKind.LETTER).order_by(Delivery.id))
        )
        unknown, overdue, waiting, failed = letters[:4]
        for delivery, last in (
            (unknown, State.UNKNOWN),
            (overdue, State.SUBMITTED),
            (waiting, State.SUBMITTED),
            (failed, State.FAILED),
        ):
            for state in (State.QUEUED, State.SENDING, last):
                ledger.move(delivery, state, actor="worker:test", at=now, reason=f"test: {state}")
        assert hold(session, ledger, overdue, actor="poller", at=now, why="no report after 2 hours")
        ids = [d.id for d in (unknown, overdue, waiting, failed)]
    client, csrf = client_for(factory, "operator", name="olga")
    page = client.get("/held", headers=HTML)
    held = re.search(r'id="held">(.*?)</table>', page.text, re.S).group(1)  # type: ignore[union-attr]
    failed_rows = re.search(r'id="failed">(.*?)</table>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert re.findall(r'data-delivery="(\d+)"', held) == [str(ids[0]), str(ids[1])]
    assert "no report after 2 hours" in held
    assert re.findall(r'data-delivery="(\d+)"', failed_rows) == [str(ids[3])]
    assert held.count('name="reason"') == 2 * 3  # resolve sent, resolve not sent, cancel: each asks why
    retried = client.post(
        f"/deliveries/{ids[3]}/retry", data={"csrf": csrf, "reason": "number fixed", "back": "held"}, headers=HTML
    )
    assert retried.status_code == 200
    assert f"delivery #{ids[3]}: planned" in retried.text
    assert "<h1>Held for an operator</h1>" in retried.text
    # the reason is shown where the person will look for it: the delivery's timeline and its campaign's page
    assert "retry requested by an operator: number fixed" in client.get(f"/deliveries/{ids[3]}", headers=HTML).text
    campaign = client.get(f"/campaigns/{NAME}", headers=HTML).text
    assert re.search(
        r"<td>user:olga</td><td>delivery.retry</td><td><a [^>]*>#\d+</a></td><td>number fixed</td>", campaign
    )


@pytest.mark.parametrize(
    "url",
    [
        "/deliveries/99999999999999999999",
        "/deliveries/-1",
        "/deliveries/x",
        "/log?before=99999999999999999999",
        "/log/rows?after=99999999999999999999",
        "/log?before=-5",
        "/campaigns/x/preview/fax/99999999999999999999.png",
    ],
)
def test_numbers_out_of_range_are_a_4xx(factory: sessionmaker[Session], loaded: str, url: str) -> None:
    client, _csrf = client_for(factory, "viewer", name="vera")
    answer = client.get(url, headers=HTML)
    assert 400 <= answer.status_code < 500, (url, answer.status_code, answer.text[:200])


def test_a_campaign_named_new_opens_at_its_own_page(factory: sessionmaker[Session]) -> None:
    client, csrf = client_for(factory, "manager")
    created = client.post("/new-campaign", data=form(csrf, **{"campaign.name": "new"}), headers=HTML)
    assert created.status_code == 200  # followed to the campaign's page
    page = client.get("/campaigns/new", headers=HTML)
    assert page.status_code == 200
    assert "Free them" in page.text and 'name="campaign.name"' not in page.text  # its page, not the empty form


def test_the_letter_bodys_hint_names_variables_a_letter_can_use(factory: sessionmaker[Session]) -> None:
    client, csrf = client_for(factory, "manager")
    page = client.get("/new-campaign", headers=HTML)
    hint = re.search(r"Body <span class=\"muted\">Jinja2: (.*?), \.\.\.</span>", page.text)
    assert hint is not None
    body = html_module.unescape(hint.group(1)).replace(", ", "\n")  # every variable the hint shows, one a line
    created = client.post("/new-campaign", data=form(csrf, **{"letter.body": body}), headers=HTML)
    assert created.status_code == 200, problems(created.text)
    with factory() as session:
        assert session.scalars(select(Campaign.name)).all() == ["free-them"]


def test_an_email_accepted_by_smtp_counts_as_ended_in_the_progress(factory: sessionmaker[Session], loaded: str) -> None:
    # SMTP reports nothing after its acceptance: "submitted" is that delivery's outcome
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        for delivery in session.scalars(select(Delivery).order_by(Delivery.id)):
            ledger.move(delivery, State.QUEUED, actor="test", at=NOW)
            ledger.move(delivery, State.SENDING, actor="test", at=NOW)
            delivery.expects_report = delivery.channel == "fax"
            ledger.move(
                delivery, State.SUBMITTED if delivery.channel == "email" else State.DELIVERED, actor="test", at=NOW
            )
        total = len(session.scalars(select(Delivery.id)).all())
    client, _ = client_for(factory, "viewer", name="vera")
    shown = f"{total} / {total} ended (100%)"
    assert shown in client.get("/", headers=HTML).text
    assert shown in client.get(f"/campaigns/{loaded}", headers=HTML).text
