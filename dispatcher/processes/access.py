"""Identity for every console page and API call of `dispatch web` (dispatcher/domain/accounts.py holds the rules).

- An API call carries ``Authorization: Bearer <token>``; a console page carries the session cookie set at
  ``/login``. Neither: 401 for the API (``WWW-Authenticate: Bearer``), a redirect to ``/login`` for a page.
  A role without the permission: 403, naming the permission.
- **CSRF**: a request authenticated by the session cookie that changes something (any method but GET,
  HEAD, OPTIONS) must carry the session's form token, as the form field ``csrf`` or the header
  ``X-CSRF-Token``; token-authenticated calls carry no ambient credential and need none. The login form
  itself is protected by a double-submit cookie.
- The cookie is HttpOnly, SameSite=Lax, and Secure whenever DISPATCH_PUBLIC_BASE_URL is https.
- **Login rate limit**: refused logins are counted per name and per client address in the ledger (so every
  web process shares the count); past the limit, 429 with Retry-After, before the password is checked.

Ledger work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import accounts
from dispatcher.domain.accounts import Identity, LoginThrottled, Permission
from dispatcher.domain.db import reading, transaction
from dispatcher.domain.rendering.templates import render

log = logging.getLogger(__name__)

SESSION_COOKIE = "dispatch_session"
LOGIN_COOKIE = "dispatch_login"  # the login form's double-submit token
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PAGE = "web/login.html.j2"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'",
}

_bearer = HTTPBearer(auto_error=False, description="an API token from `dispatch token create`")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="a console session, from /login")


class NotAuthenticated(Exception):
    """No identity, or one that is not valid: 401 (API) or a redirect to the login page (console)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotPermitted(Exception):
    """An identity whose roles lack the permission: 403."""

    def __init__(self, identity: Identity, permission: Permission) -> None:
        roles = ", ".join(sorted(identity.roles))
        super().__init__(f"{identity.name} ({roles}) may not do this: it needs the {permission} permission")
        self.message = str(self)


@dataclass
class Access:
    factory: sessionmaker[Session]
    clock: Callable[[], datetime]
    secure_cookies: bool

    def identify(self) -> Any:
        """The dependency that finds who is asking (401 / redirect when nobody)."""

        async def identify(
            request: Request,
            bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
            cookie: str | None = Depends(_cookie),
        ) -> Identity:
            if request.headers.get("authorization") is not None:
                if bearer is None or bearer.scheme.lower() != "bearer":
                    raise NotAuthenticated("the Authorization header must be 'Bearer <token>'")
                identity = await run_in_threadpool(self._token, bearer.credentials)
                if identity is None:
                    raise NotAuthenticated("the API token is not valid (unknown, revoked, or its user is disabled)")
                request.state.identity = identity
                return identity
            if cookie:
                found = await run_in_threadpool(self._session, cookie)
                if found is not None:
                    identity, csrf = found
                    if request.method not in SAFE_METHODS:
                        given = request.headers.get("x-csrf-token")
                        if given is None and _is_form(request):
                            given = str((await request.form()).get("csrf", "")) or None
                        if not accounts.same_token(given, csrf):
                            raise NotPermittedCsrf()
                    request.state.identity, request.state.csrf = identity, csrf
                    return identity
            raise NotAuthenticated("log in, or send an API token as 'Authorization: Bearer <token>'")

        return identify

    def require(self, permission: Permission) -> Any:
        """A dependency: the identity, if it holds ``permission`` (403 otherwise)."""
        identify = self.identify()

        async def required(identity: Identity = Depends(identify)) -> Identity:
            if not identity.may(permission):
                raise NotPermitted(identity, permission)
            return identity

        return Depends(required)

    def _token(self, value: str) -> Identity | None:
        with reading(self.factory) as session:
            return accounts.identify_token(session, value, now=self.clock())

    def _session(self, value: str) -> tuple[Identity, str] | None:
        with reading(self.factory) as session:
            return accounts.identify_session(session, value, now=self.clock())


class NotPermittedCsrf(Exception):
    """A cookie-authenticated change without the session's form token: 403."""

    message = "the form token (csrf) is missing or wrong: reload the page and try again"


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def wants_page(request: Request) -> bool:
    """A browser asking for a console page (not the JSON API)."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def install(app: FastAPI, access: Access) -> None:
    """The exception handlers and the login/logout routes."""

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, err: NotAuthenticated) -> Response:
        if wants_page(request) and request.method in SAFE_METHODS:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return JSONResponse({"error": err.message}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotPermitted)
    async def not_permitted(request: Request, err: NotPermitted) -> Response:
        return _refusal(request, 403, err.message)

    @app.exception_handler(NotPermittedCsrf)
    async def bad_csrf(request: Request, err: NotPermittedCsrf) -> Response:
        return _refusal(request, 403, err.message)

    app.include_router(login_router(access))


def _refusal(request: Request, status: int, message: str) -> Response:
    if wants_page(request):
        html = render("web/message.html.j2", {"title": "Not allowed", "message": message, "identity": None})
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
    return JSONResponse({"error": message}, status_code=status)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never another host: an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def login_router(access: Access) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def page(status: int, *, next_path: str, error: str | None = None, token: str | None = None) -> HTMLResponse:
        token = token or secrets.token_urlsafe(24)
        html = render(LOGIN_PAGE, {"next": next_path, "error": error, "csrf": token, "identity": None})
        response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
        response.set_cookie(
            LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=access.secure_cookies, path="/login"
        )
        return response

    @router.get("/login")
    def show(next: str | None = None) -> HTMLResponse:
        return page(200, next_path=safe_next(next))

    @router.post("/login")
    async def submit(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        next_path = safe_next(str(form.get("next", "")))
        if not accounts.same_token(str(form.get("csrf", "")) or None, request.cookies.get(LOGIN_COOKIE, "")):
            return page(400, next_path=next_path, error="The login form expired: please log in again.")
        client = request.client.host if request.client else "unknown"
        try:
            opened = await run_in_threadpool(_log_in, access, name, password, client)
        except LoginThrottled as err:
            response = page(429, next_path=next_path, error=f"Too many refused logins: {err}.")
            response.headers["Retry-After"] = str(err.retry_after)
            return response
        if opened is None:
            log.warning("console login refused")  # neither the name nor the address: they may be a password typo
            return page(401, next_path=next_path, error="That name and password do not match an active user.")
        value, who = opened
        log.info("console login: %s", who)
        done = RedirectResponse(next_path, status_code=303)
        done.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=accounts.SESSION_HOURS * 3600,
            httponly=True,
            samesite="lax",
            secure=access.secure_cookies,
            path="/",
        )
        done.delete_cookie(LOGIN_COOKIE, path="/login")
        return done

    @router.post("/logout")
    async def logout(request: Request, identity: Identity = access.require(Permission.READ)) -> Response:
        value = request.cookies.get(SESSION_COOKIE)
        if value:
            await run_in_threadpool(_log_out, access, value)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return router


def _log_in(access: Access, name: str, password: str, client: str) -> tuple[str, str] | None:
    """(cookie value, user name) of a new session, or None. LoginThrottled propagates; the refusal it
    follows was counted in its own transaction, which must commit even though the login fails."""
    now = access.clock()
    with transaction(access.factory) as session:
        user = accounts.log_in(session, name, password, client=client, now=now)
        if user is None:
            return None
        value, _csrf = accounts.open_session(session, user, now=now)
        return value, user.name


def _log_out(access: Access, value: str) -> None:
    with transaction(access.factory) as session:
        accounts.close_session(session, value)
