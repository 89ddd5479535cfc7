"""Unsubscribe links: the signed per-copy token, what unsubscribing writes, and the public page and one-click
POST (RFC 8058) of the real web app, through Starlette's TestClient, on SQLite and PostgreSQL.

End to end (a copy received by a real SMTP server, its List-Unsubscribe URL posted to over real HTTP):
tests/integration/test_unsubscribe.py."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.errors import SettingsError
from dispatcher.domain.media import make_token
from dispatcher.domain.models import Delivery, DeliveryEvent, Suppression
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.settings import load_settings
from dispatcher.domain.unsubscribe import (
    Outcome,
    copy_link,
    masked,
    unsubscribe,
    unsubscribe_url,
    verify,
)
from dispatcher.domain.validation import validate
from dispatcher.processes.api import create_app
from dispatcher.processes.logs import RedactMediaTokens
from dispatcher.processes.web_context import WebContext
from workers.limits import NoLimits
from workers.runtime import build_worker_context

from .builders import build_campaign, official
from .spawn import base_env

SECRET = b"0123456789abcdef0123456789abcdef"
# HMAC-SHA256 under SECRET of b"campaign-dispatch/unsubscribe/v1:42", base64url without padding: worked out
# with Python's hmac module, apart from the code under test
TOKEN_42 = "42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg"
TOKEN_7 = "7.9A1ThDYLzoksbLqbAQz52GpMMc0l_kteYncS8F5Qu8o"
PLAIN_42 = "42.OxLQQS2xhcmP9Ygl7UyBz7x72rzzOsSL2qrl85_GVEU"  # the same HMAC of b"42" alone: no purpose label

ADA, GRACE = "ada.supporter@example.org", "grace.supporter@example.net"
ADA_SHA256 = "0033f2f0fb340d867feac06d964706aae31cf79561121cd8fed7f3f74164d5c1"
MINISTER = "minister@gov.example"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
# HTTP behaviour alone: the ledger's part (unsubscribe, copy_link) runs on both databases in the other tests
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# -- the token ---------------------------------------------------------------------------------------


def test_the_link_names_the_copy_and_carries_its_signature() -> None:
    assert unsubscribe_url("https://dispatch.example.org/", SECRET, 42) == (
        f"https://dispatch.example.org/unsubscribe/{TOKEN_42}"
    )
    assert unsubscribe_url("https://dispatch.example.org", SECRET, 7) == (
        f"https://dispatch.example.org/unsubscribe/{TOKEN_7}"
    )
    assert verify(SECRET, TOKEN_42) == 42
    assert verify(SECRET, TOKEN_7) == 7


@pytest.mark.parametrize(
    "token",
    [
        "43.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg",  # another copy's number, 42's signature
        "42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtG",  # one character changed
        "42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixth",  # same bytes, non-canonical last character
        "42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixt",  # cut short
        "42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg=",  # padded
        "042.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg",
        "+42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg",
        "\u0664\u0662.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg",  # Arabic-Indic digits for 42
        "42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg.7",
        PLAIN_42,  # signed without the purpose label: not an unsubscribe token
        "",
        "42",
        "42.",
        ".Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg",
        "9" * 400 + ".Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtg",
        "42.\x00",
        "42.\ud800",
    ],
)
def test_a_tampered_or_malformed_token_names_no_copy(token: str) -> None:
    assert verify(SECRET, token) is None


def test_a_token_verifies_only_under_its_own_key_and_a_document_token_is_not_one() -> None:
    assert verify(b"another key of at least 32 characters", TOKEN_42) is None
    media = make_token(42, secret=SECRET, now=NOW)  # the fax document URL's token, same key, same delivery
    assert verify(SECRET, media) is None
    assert verify(SECRET, media.replace(".", "-", 1)) is None


def test_the_page_shows_the_address_masked() -> None:
    assert masked("ada.supporter@example.org") == "a***@example.org"
    assert masked("x@example.org") == "x***@example.org"
    assert masked("not an address") == "***"


def test_unsubscribe_tokens_are_redacted_from_logs_like_document_tokens() -> None:
    access = ("127.0.0.1", "POST", f"/unsubscribe/{TOKEN_42}", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/1.1" %d', access, None)
    assert RedactMediaTokens().filter(record)
    assert record.getMessage() == '127.0.0.1 - "POST /unsubscribe/<redacted> HTTP/1.1" 200'


# -- unsubscribing, in the ledger -----------------------------------------------------------------------


def load(factory: sessionmaker[Session], folder: Path, **fields: object) -> dict[str, int]:
    """Load (not schedule) an email-only campaign copying Ada and Grace; delivery id by destination."""
    path = build_campaign(
        folder,
        to=[official("A. Minister", email=[MINISTER], salutation="Dear Minister,")],
        cc=[],
        supporters=[(ADA, "Ada Lovelace"), (GRACE, "Grace Hopper")],
        **fields,
    )
    spec = load_spec(path)
    report = validate(spec, file=path)
    with transaction(factory) as session:
        load_campaign(session, spec, report, source=path)
    with factory() as session:
        return {d.destination: d.id for d in session.scalars(select(Delivery))}


def suppressions(factory: sessionmaker[Session]) -> list[tuple[str, str, str, bool]]:
    with factory() as session:
        return [
            (s.email_sha256, s.reason, s.source, s.campaign_id is not None)
            for s in session.scalars(select(Suppression).order_by(Suppression.email_sha256))
        ]


def test_unsubscribing_suppresses_the_address_once_and_keeps_the_member(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ids = load(factory, tmp_path)
    with transaction(factory) as session:
        assert unsubscribe(session, ids[ADA], now=NOW, source="one-click") is Outcome.UNSUBSCRIBED
    with transaction(factory) as session:
        assert unsubscribe(session, ids[ADA], now=NOW, source="unsubscribe-page") is Outcome.ALREADY
    assert suppressions(factory) == [(ADA_SHA256, "unsubscribed", "one-click", True)]
    with factory() as session:
        ada = session.get(Delivery, ids[ADA])
        assert ada is not None and ada.state == "planned"  # withheld at claim time, not cancelled here
        assert ada.supporter is not None and ada.supporter.consent is True  # the member stays as recorded


def test_two_unsubscribes_at_once_add_one_entry_and_neither_fails(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The person's click and their mail client's one-click POST, in two transactions at once."""
    ids = load(factory, tmp_path)
    inserted, outcomes = threading.Event(), []

    def first() -> None:
        with transaction(factory) as session:
            outcomes.append(unsubscribe(session, ids[ADA], now=NOW, source="unsubscribe-page"))
            inserted.set()
            time.sleep(0.3)  # not committed yet when the second one writes

    thread = threading.Thread(target=first)
    thread.start()
    assert inserted.wait(10)
    with transaction(factory) as session:  # waits for the first to commit, then finds its entry
        outcomes.append(unsubscribe(session, ids[ADA], now=NOW, source="one-click"))
    thread.join()
    assert outcomes == [Outcome.UNSUBSCRIBED, Outcome.ALREADY]
    assert suppressions(factory) == [(ADA_SHA256, "unsubscribed", "unsubscribe-page", True)]


def test_a_letter_to_an_official_cannot_be_unsubscribed(factory: sessionmaker[Session], tmp_path: Path) -> None:
    ids = load(factory, tmp_path)
    with transaction(factory) as session:
        assert unsubscribe(session, ids[MINISTER], now=NOW, source="one-click") is Outcome.NOT_A_COPY
        assert unsubscribe(session, 987654, now=NOW, source="one-click") is Outcome.NOT_A_COPY
    assert suppressions(factory) == []
    with factory() as session:
        assert copy_link(session, ids[MINISTER]) is None
        link = copy_link(session, ids[ADA])
    assert link is not None
    assert (link.masked, link.organisation, link.suppressed) == ("a***@example.org", "Human Rights Watch", False)


# -- the page and the one-click POST ---------------------------------------------------------------------


@pytest.fixture
def client(factory: sessionmaker[Session]) -> TestClient:
    app = create_app(
        WebContext(
            factory=factory,
            gateways={},
            secret=SECRET,
            retry=RetryPolicy(base_seconds=1, cap_seconds=2, max_attempts=2, no_fax_tone_limit=2),
            documents=DocumentCache(),
        )
    )
    return TestClient(app)


def token_for(delivery_id: int) -> str:
    return unsubscribe_url("http://testserver", SECRET, delivery_id).rsplit("/", 1)[1]


@SQLITE_ONLY
def test_get_shows_a_button_and_unsubscribes_nobody(
    factory: sessionmaker[Session], tmp_path: Path, client: TestClient
) -> None:
    ids = load(factory, tmp_path)
    page = client.get(f"/unsubscribe/{token_for(ids[ADA])}")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<form method="post">' in page.text
    assert '<input type="hidden" name="confirm" value="unsubscribe">' in page.text
    assert "a***@example.org" in page.text
    assert "Human Rights Watch" in page.text
    assert ADA not in page.text and "Ada Lovelace" not in page.text
    assert suppressions(factory) == []


def test_the_page_button_and_the_one_click_post_unsubscribe_and_say_so_twice(
    factory: sessionmaker[Session], tmp_path: Path, client: TestClient
) -> None:
    ids = load(factory, tmp_path)
    button = client.post(f"/unsubscribe/{token_for(ids[GRACE])}", data={"confirm": "unsubscribe"})
    assert button.status_code == 200
    assert "You are unsubscribed" in button.text
    assert "g***@example.net" in button.text and GRACE not in button.text
    # RFC 8058 3.1: the one-click POST, multipart/form-data preferred, urlencoded allowed
    one_click = client.post(f"/unsubscribe/{token_for(ids[ADA])}", files={"List-Unsubscribe": (None, "One-Click")})
    assert one_click.status_code == 200
    assert "You are unsubscribed" in one_click.text
    again = client.post(
        f"/unsubscribe/{token_for(ids[ADA])}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 200
    assert "You were already unsubscribed" in again.text
    assert [(reason, source) for _, reason, source, _ in suppressions(factory)] == [
        ("unsubscribed", "one-click"),  # Ada's hash sorts first
        ("unsubscribed", "unsubscribe-page"),
    ]
    # the page now says it is done, and still offers nothing that would undo or repeat it
    page = client.get(f"/unsubscribe/{token_for(ids[ADA])}")
    assert page.status_code == 200 and "already unsubscribed" in page.text and "<form" not in page.text


BAD_TOKENS = ["42.Ura2Kj9YSz6LFWKBRBEtNPca3QCeN2KpH77ow6oixtG", "nonsense", "%00%ff", "9" * 5000]


@SQLITE_ONLY
def test_a_bad_token_gets_a_clear_page_never_a_5xx(factory: sessionmaker[Session], client: TestClient) -> None:
    for token in BAD_TOKENS:
        for response in (
            client.get(f"/unsubscribe/{token}"),
            client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}),
        ):
            assert response.status_code == 404, token
            assert "This unsubscribe link is not valid" in response.text
            assert "<form" not in response.text
    assert suppressions(factory) == []


def test_a_valid_token_for_a_letter_or_an_unknown_delivery_is_not_found(
    factory: sessionmaker[Session], tmp_path: Path, client: TestClient
) -> None:
    ids = load(factory, tmp_path)
    for delivery_id in (ids[MINISTER], 987654):
        response = client.post(f"/unsubscribe/{token_for(delivery_id)}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 404
        assert "This unsubscribe link is not valid" in response.text
    assert suppressions(factory) == []


NOT_ONE_CLICK: list[tuple[bytes, str | None]] = [
    (b"", None),
    (b"List-Unsubscribe=Yes", "application/x-www-form-urlencoded"),
    (b"List-Unsubscribe=One-Click", "text/plain"),
    (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
]


@SQLITE_ONLY
def test_a_post_without_the_one_click_field_or_the_button_changes_nothing(
    factory: sessionmaker[Session], tmp_path: Path, client: TestClient
) -> None:
    ids = load(factory, tmp_path)
    for body, content_type in NOT_ONE_CLICK:
        headers = {"content-type": content_type} if content_type else {}
        response = client.post(f"/unsubscribe/{token_for(ids[ADA])}", content=body, headers=headers)
        assert response.status_code == 400, body
        assert "List-Unsubscribe=One-Click" in response.text
    assert suppressions(factory) == []


@SQLITE_ONLY
def test_an_oversize_post_is_refused(factory: sessionmaker[Session], tmp_path: Path, client: TestClient) -> None:
    ids = load(factory, tmp_path)
    body = b"List-Unsubscribe=One-Click&pad=" + b"x" * 20_000
    response = client.post(
        f"/unsubscribe/{token_for(ids[ADA])}",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert suppressions(factory) == []


@SQLITE_ONLY
def test_without_a_secret_key_the_page_says_unsubscribing_is_unavailable(
    factory: sessionmaker[Session], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = load(factory, tmp_path)
    app = create_app(
        WebContext(
            factory=factory,
            gateways={},
            secret=None,
            retry=RetryPolicy(base_seconds=1, cap_seconds=2, max_attempts=2, no_fax_tone_limit=2),
            documents=DocumentCache(),
        )
    )
    with caplog.at_level(logging.ERROR):
        response = TestClient(app).post(f"/unsubscribe/{token_for(ids[ADA])}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 503
    assert "cannot be handled right now" in response.text
    assert "DISPATCH_SECRET_KEY" in caplog.text
    assert suppressions(factory) == []


@SQLITE_ONLY
def test_unsubscribing_writes_no_address_or_name_to_the_log_or_the_delivery_log(
    factory: sessionmaker[Session], tmp_path: Path, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    ids = load(factory, tmp_path)
    with caplog.at_level(logging.DEBUG):
        client.post(f"/unsubscribe/{token_for(ids[ADA])}", data={"List-Unsubscribe": "One-Click"})
        client.post("/unsubscribe/42.tampered", data={"List-Unsubscribe": "One-Click"})
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("dispatcher", "uvicorn")))
    assert f"copy {ids[ADA]}" in ours
    for secret in (ADA, "Ada Lovelace", "ada.supporter", token_for(ids[ADA]).split(".")[1]):
        assert secret not in ours
    with factory() as session:
        reasons = session.scalars(select(DeliveryEvent.reason)).all()
    assert all(ADA not in reason for reason in reasons)


# -- the worker's links and its start-up check -----------------------------------------------------------


def test_the_worker_signs_each_copy_link_under_the_public_base_url(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        fax_gateway="",
        secret_key=SECRET.decode(),
        public_base_url="https://dispatch.example.org",
    )
    context = build_worker_context(settings, gateways={}, limiter=NoLimits())
    assert context.unsubscribe_url is not None
    assert context.unsubscribe_url(42) == f"https://dispatch.example.org/unsubscribe/{TOKEN_42}"


def test_a_worker_sending_copies_needs_the_secret_key_and_one_without_the_copies_queue_does_not(
    tmp_path: Path,
) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", fax_gateway="")
    for queues in (None, ["copies"], ["email", "copies", "reconcile"]):
        with pytest.raises(SettingsError, match=r"^DISPATCH_SECRET_KEY: .*unsubscribe link"):
            build_worker_context(settings, gateways={}, limiter=NoLimits(), queues=queues)
    context = build_worker_context(settings, gateways={}, limiter=NoLimits(), queues=["fax", "email", "reconcile"])
    assert context.unsubscribe_url is None


def test_dispatch_worker_refuses_to_start_without_the_secret_key_naming_it(tmp_path: Path) -> None:
    env = base_env(
        tmp_path,
        DISPATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}",
        DISPATCH_FAX_GATEWAY="",
        DISPATCH_SMTP_HOST="127.0.0.1",
        DISPATCH_CHECK_CREDENTIALS="false",
    )
    command = [sys.executable, "-m", "dispatcher", "worker"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 1
    printed = " ".join(result.stderr.split())  # the console wraps long lines
    assert printed.endswith(
        "error: DISPATCH_SECRET_KEY: must be set (32+ characters): every supporter copy carries a signed "
        "unsubscribe link that `dispatch web` checks (or leave the `copies` queue to another worker)"
    )
    assert "Traceback" not in result.stderr


def test_the_web_app_without_the_secret_key_says_at_start_that_unsubscribe_links_cannot_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a refusal (a deployment that sends no copies serves its webhooks without a key), but said once at
    start, naming the variable, rather than only on the first supporter's click."""
    from dispatcher.processes.web import build_web_app

    caplog.set_level(logging.WARNING)
    build_web_app(load_settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", fax_gateway=""), gateways={})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "DISPATCH_SECRET_KEY is not set: fax documents (404) and the unsubscribe links of supporter copies "
        "(503) are refused until it is"
    ]
    caplog.clear()
    build_web_app(
        load_settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", fax_gateway="", secret_key=SECRET.decode()),
        gateways={},
    )
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
