"""Identity for the console and the API (dispatcher/domain/accounts.py, dispatcher/processes/access.py),
through the real app on SQLite and PostgreSQL: tokens, logins, sessions, CSRF, the login rate limit."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import accounts
from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.db import transaction
from dispatcher.domain.models import ApiToken, User, WebSession
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.processes.access import Access, install
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext

PASSWORD = "correct horse battery staple"
HTML = {"Accept": "text/html"}
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def context(factory: sessionmaker[Session], clock: Clock, *, secure: bool = False) -> WebContext:
    return WebContext(
        factory=factory,
        gateways={},
        secret=None,
        retry=RetryPolicy(base_seconds=1.0, cap_seconds=2.0, max_attempts=2, no_fax_tone_limit=2),
        documents=DocumentCache(),
        clock=clock,
        secure_cookies=secure,
    )


def add_user(factory: sessionmaker[Session], name: str, *roles: str, password: str | None = PASSWORD) -> None:
    with transaction(factory) as session:
        accounts.add_user(session, name, roles=roles, password=password, now=NOW)


def token_for(factory: sessionmaker[Session], name: str, label: str = "test") -> str:
    with transaction(factory) as session:
        return accounts.create_token(session, name, label=label, now=NOW)


def log_in(client: TestClient, name: str, password: str = PASSWORD, *, next_path: str = "/") -> object:
    form = client.get("/login", headers=HTML)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf": csrf.group(1), "next": next_path},
        headers=HTML,
        follow_redirects=False,
    )


def test_the_api_answers_401_without_a_valid_token_and_200_with_one(factory: sessionmaker[Session]) -> None:
    add_user(factory, "vera", "viewer")
    token = token_for(factory, "vera")
    client = TestClient(create_app(context(factory, Clock())))
    url = "/api/campaigns/none/deliveries"

    nobody = client.get(url)
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == "Bearer"
    assert client.get(url, headers={"Authorization": "Bearer cdt_not-a-token"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"Basic {token}"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 404  # known, no campaign

    with transaction(factory) as session:
        assert accounts.revoke_token(session, "vera", label="test", now=NOW) == 1
    assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_token_is_kept_as_its_sha256_and_a_password_as_an_argon2id_hash(factory: sessionmaker[Session]) -> None:
    add_user(factory, "mina", "manager")
    token = token_for(factory, "mina")
    with factory() as session:
        stored = session.scalars(select(ApiToken)).one()
        user = session.scalars(select(User)).one()
    assert token.startswith("cdt_") and len(token) > 40
    assert token not in stored.token_sha256
    assert len(stored.token_sha256) == 64
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_a_disabled_users_token_and_session_stop_working(factory: sessionmaker[Session]) -> None:
    add_user(factory, "olga", "operator")
    token = token_for(factory, "olga")
    client = TestClient(create_app(context(factory, Clock())))
    assert log_in(client, "olga").status_code == 303  # type: ignore[attr-defined]
    assert client.get("/", headers=HTML).status_code == 200
    with transaction(factory) as session:
        accounts.disable_user(session, "olga", now=NOW)
    assert client.get("/", headers=HTML, follow_redirects=False).status_code == 303
    assert client.get("/api/campaigns/x/deliveries", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_page_without_a_session_redirects_to_the_login_and_back(factory: sessionmaker[Session]) -> None:
    add_user(factory, "vera", "viewer")
    client = TestClient(create_app(context(factory, Clock())))
    first = client.get("/?state=failed", headers=HTML, follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/login?next=%2F%3Fstate%3Dfailed"

    done = log_in(client, "vera", next_path="/?state=failed")
    assert done.status_code == 303  # type: ignore[attr-defined]
    assert done.headers["location"] == "/?state=failed"  # type: ignore[attr-defined]
    cookie = done.headers["set-cookie"]  # type: ignore[attr-defined]
    assert "dispatch_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # http://: a Secure cookie would never come back
    page = client.get("/", headers=HTML)
    assert page.status_code == 200
    assert "vera (viewer)" in page.text


def test_the_session_cookie_is_secure_behind_https(factory: sessionmaker[Session]) -> None:
    add_user(factory, "vera", "viewer")
    client = TestClient(create_app(context(factory, Clock(), secure=True)), base_url="https://testserver")
    done = log_in(client, "vera")
    assert "Secure" in done.headers["set-cookie"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x"])
def test_the_login_never_sends_anyone_to_another_site(factory: sessionmaker[Session], target: str) -> None:
    add_user(factory, "vera", "viewer")
    client = TestClient(create_app(context(factory, Clock())))
    done = log_in(client, "vera", next_path=target)
    assert done.headers["location"] == "/"  # type: ignore[attr-defined]


def test_a_wrong_password_is_refused_and_the_sixth_try_is_throttled(factory: sessionmaker[Session]) -> None:
    add_user(factory, "olga", "operator")
    clock = Clock()
    client = TestClient(create_app(context(factory, clock)))
    for _ in range(accounts.LOGIN_FAILURES_PER_NAME):
        refused = log_in(client, "olga", "wrong password!")
        assert refused.status_code == 401  # type: ignore[attr-defined]
        assert "do not match an active user" in refused.text  # type: ignore[attr-defined]
    throttled = log_in(client, "olga")  # the right password, too late
    assert throttled.status_code == 429  # type: ignore[attr-defined]
    assert 0 < int(throttled.headers["retry-after"]) <= 15 * 60  # type: ignore[attr-defined]
    assert "dispatch_session" not in throttled.headers.get("set-cookie", "")  # type: ignore[attr-defined]

    clock.now = NOW + accounts.LOGIN_WINDOW + timedelta(seconds=1)
    assert log_in(client, "olga").status_code == 303  # type: ignore[attr-defined]


def test_an_unknown_name_is_refused_like_a_wrong_password(factory: sessionmaker[Session]) -> None:
    client = TestClient(create_app(context(factory, Clock())))
    refused = log_in(client, "nobody")
    assert refused.status_code == 401  # type: ignore[attr-defined]
    assert "do not match an active user" in refused.text  # type: ignore[attr-defined]


def test_a_login_form_without_its_cookie_is_refused(factory: sessionmaker[Session]) -> None:
    add_user(factory, "vera", "viewer")
    client = TestClient(create_app(context(factory, Clock())))
    forged = client.post(
        "/login", data={"name": "vera", "password": PASSWORD, "csrf": "guessed"}, follow_redirects=False
    )
    assert forged.status_code == 400
    assert "dispatch_session" not in forged.headers.get("set-cookie", "")


def test_logging_out_needs_the_form_token_and_ends_the_session(factory: sessionmaker[Session]) -> None:
    add_user(factory, "vera", "viewer")
    client = TestClient(create_app(context(factory, Clock())))
    log_in(client, "vera")
    page = client.get("/", headers=HTML)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None

    assert client.post("/logout", data={"csrf": "wrong"}, follow_redirects=False).status_code == 403
    assert client.post("/logout", follow_redirects=False).status_code == 403
    out = client.post("/logout", data={"csrf": csrf.group(1)}, follow_redirects=False)
    assert out.status_code == 303
    with factory() as session:
        assert session.scalars(select(WebSession)).all() == []
    assert client.get("/", headers=HTML, follow_redirects=False).status_code == 303


def test_a_role_without_the_permission_gets_403_naming_it(factory: sessionmaker[Session]) -> None:
    add_user(factory, "vera", "viewer")
    add_user(factory, "olga", "operator")
    app = FastAPI()
    access = Access(factory, Clock(), secure_cookies=False)
    install(app, access)

    @app.post("/api/act")
    def act(identity: Identity = access.require(Permission.DELIVERIES)) -> dict[str, str]:
        return {"actor": identity.actor}

    client = TestClient(app)
    viewer = client.post("/api/act", headers={"Authorization": f"Bearer {token_for(factory, 'vera')}"})
    assert viewer.status_code == 403
    assert viewer.json() == {"error": "vera (viewer) may not do this: it needs the deliveries permission"}
    operator = client.post("/api/act", headers={"Authorization": f"Bearer {token_for(factory, 'olga', 'ci')}"})
    assert operator.json() == {"actor": "token:olga/ci"}  # no CSRF token needed: no cookie was used


def test_markup_in_a_campaign_title_is_shown_as_text(factory: sessionmaker[Session]) -> None:
    from dispatcher.domain.models import Campaign

    add_user(factory, "vera", "viewer")
    with transaction(factory) as session:
        session.add(
            Campaign(
                name="c1",
                title="<script>alert(1)</script>",
                route_policy="first-success",
                schedule={},
                sender={},
                spec={},
                spec_sha256="x",
            )
        )
    client = TestClient(create_app(context(factory, Clock())))
    log_in(client, "vera")
    page = client.get("/", headers=HTML)
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest.mark.parametrize(
    ("name", "roles", "password", "message"),
    [
        ("a b", ["viewer"], PASSWORD, "a user name is 1 to 100 of a-z"),
        ("ann", ["boss"], PASSWORD, "no role named 'boss'; the roles are manager, operator, viewer"),
        ("ann", [""], PASSWORD, "a user needs at least one role"),
        ("ann", ["viewer"], "short", "a password has at least 10 characters"),
    ],
)
def test_a_wrong_user_is_refused_with_its_reason(
    factory: sessionmaker[Session], name: str, roles: list[str], password: str, message: str
) -> None:
    with pytest.raises(accounts.AccountError, match=re.escape(message)), transaction(factory) as session:
        accounts.add_user(session, name, roles=roles, password=password, now=NOW)


def test_a_value_the_ledger_refuses_is_a_4xx_naming_its_kind_not_a_500(factory: sessionmaker[Session]) -> None:
    from sqlalchemy.exc import DataError, IntegrityError

    app = create_app(context(factory, Clock()))

    def too_long() -> None:  # as PostgreSQL answers a text longer than its column
        raise DataError("INSERT INTO campaigns ...", {"title": "secret value"}, Exception("value too long"))

    def taken() -> None:
        raise IntegrityError("INSERT INTO users ...", {"name": "x"}, Exception("duplicate key"))

    app.add_api_route("/api/too-long", too_long)
    app.add_api_route("/api/taken", taken)
    client = TestClient(app, raise_server_exceptions=False)
    answer = client.get("/api/too-long")
    assert answer.status_code == 422
    assert answer.json() == {"error": "the ledger refused a value of this request (Exception); nothing was kept"}
    assert "secret value" not in answer.text and "INSERT" not in answer.text
    assert client.get("/api/taken").status_code == 409
