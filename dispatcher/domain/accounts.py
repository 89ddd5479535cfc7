"""Who may use the console and the API: users with roles, API tokens, console sessions, refused logins.

- **Roles** (a user holds one or more): ``manager`` writes campaigns and supporter lists, ``operator`` acts
  on deliveries (retry, resolve, cancel), ``viewer`` reads. Every role reads.
- **Passwords** are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended option);
  a login for an unknown name still costs one hash check, so timing does not tell which names exist.
- **API tokens** are 256-bit random values shown once; the ledger keeps their SHA-256 (a value that long
  needs no slow hash: nobody can guess it, and a leaked table gives no usable token).
- **Sessions**: the cookie holds a random value, the ledger its SHA-256, its expiry and the session's form
  token (CSRF). Logging out deletes the row.
- **Refused logins** are counted per name and per client address; past the limit a login is refused
  before its password is checked, until the window has passed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import DispatchError
from dispatcher.domain.models import ApiToken, LoginFailure, OperatorAction, User, WebSession

TOKEN_PREFIX = "cdt_"  # noqa: S105 (a prefix, not a secret): recognisable in a leaked file or a secret scanner's rules
SESSION_HOURS = 12
PASSWORD_MIN_CHARS = 10
LOGIN_WINDOW = timedelta(minutes=15)
LOGIN_FAILURES_PER_NAME = 5  # within LOGIN_WINDOW
LOGIN_FAILURES_PER_CLIENT = 20
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-@")

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to check a password against when the name is unknown; made once, at the first login, not at
    import: every `dispatch` command imports this module, and one argon2 hash costs about 0.1 s."""
    return _hasher.hash("an unknown name still costs one hash check")


class Role(StrEnum):
    MANAGER = "manager"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ = "read"
    CAMPAIGNS = "campaigns"  # create, edit, schedule, pause, resume, cancel campaigns; supporter lists
    DELIVERIES = "deliveries"  # retry, resolve, cancel deliveries


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.MANAGER: frozenset({Permission.READ, Permission.CAMPAIGNS}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.DELIVERIES}),
    Role.VIEWER: frozenset({Permission.READ}),
}


class AccountError(DispatchError):
    """A user or token request that cannot be done as asked (the message says why)."""


class LoginThrottled(DispatchError):
    """Too many refused logins for this name or from this client: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"try again in {retry_after // 60 + 1} minutes")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Identity:
    """Who is asking: a user, by a console session or by an API token."""

    user_id: int
    name: str
    roles: frozenset[Role]
    via: str  # "session" | "token" | "cli" (a command run on the server: whoever may run it holds every role)
    token_label: str | None = None

    def may(self, permission: Permission) -> bool:
        return any(permission in GRANTS[role] for role in self.roles)

    @property
    def actor(self) -> str:
        """How the ledger names this identity in events and the operator actions log."""
        if self.via == "token":
            return f"token:{self.name}/{self.token_label}"[:100]
        if self.via == "cli":
            return f"cli:{self.name}"[:100]
        return f"user:{self.name}"[:100]


def command_line(os_user: str) -> Identity:
    """The identity of a `dispatch` command: the OS user who ran it, with every role (the ledger's
    credentials are theirs already)."""
    return Identity(user_id=0, name=os_user, roles=frozenset(Role), via="cli")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def parse_roles(roles: Iterable[str]) -> frozenset[Role]:
    parsed: set[Role] = set()
    for raw in roles:
        for part in raw.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                parsed.add(Role(name))
            except ValueError:
                known = ", ".join(r.value for r in Role)
                raise AccountError(f"no role named {name!r}; the roles are {known}") from None
    if not parsed:
        raise AccountError("a user needs at least one role (manager, operator or viewer)")
    return frozenset(parsed)


def _roles_of(user: User) -> frozenset[Role]:
    return frozenset(Role(r) for r in user.roles.split(",") if r in Role.__members__.values())


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not 1 <= len(name) <= 100 or not set(name) <= NAME_CHARS:
        raise AccountError(
            f"a user name is 1 to 100 of a-z, 0-9 and . _ - @ (got {len(name)} characters"
            + ("" if set(name) <= NAME_CHARS else ", some of them not allowed")
            + ")"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < PASSWORD_MIN_CHARS:
        raise AccountError(f"a password has at least {PASSWORD_MIN_CHARS} characters")
    if len(password) > 1024:
        raise AccountError("a password has at most 1024 characters")
    return password


def add_user(
    session: Session, name: str, *, roles: Iterable[str], password: str | None, now: datetime, replace: bool = False
) -> User:
    """Create a user (or, with ``replace``, set an existing one's roles and password)."""
    name = check_name(name)
    granted = parse_roles(roles)
    hashed = _hasher.hash(check_password(password)) if password is not None else None
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is not None and not replace:
        raise AccountError(f"a user named {name!r} exists already (use --replace to set their roles and password)")
    if user is None:
        user = User(name=name, created_at=now)
        session.add(user)
    user.roles = ",".join(sorted(r.value for r in granted))
    if hashed is not None:
        user.password_hash = hashed
    user.disabled_at = None
    session.flush()
    return user


def identity_of(user: User, *, via: str, token_label: str | None = None) -> Identity:
    return Identity(user_id=user.id, name=user.name, roles=_roles_of(user), via=via, token_label=token_label)


def create_token(session: Session, name: str, *, label: str, now: datetime) -> str:
    """A new API token for user ``name``; its value is returned once and never stored."""
    user = session.scalars(select(User).where(User.name == check_name(name))).first()
    if user is None or user.disabled_at is not None:
        raise AccountError(f"no active user named {name.strip().lower()!r}; add one with `dispatch user add`")
    label = label.strip() or "token"
    if len(label) > 100:
        raise AccountError("a token label has at most 100 characters")
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, label=label, token_sha256=_sha256(value), created_at=now))
    session.flush()
    return value


def revoke_token(session: Session, name: str, *, label: str, now: datetime) -> int:
    tokens = session.scalars(
        select(ApiToken)
        .join(User, User.id == ApiToken.user_id)
        .where(User.name == check_name(name), ApiToken.label == label, ApiToken.revoked_at.is_(None))
    ).all()
    for token in tokens:
        token.revoked_at = now
    return len(tokens)


def identify_token(session: Session, value: str, *, now: datetime) -> Identity | None:
    """The identity an API token stands for, or None (unknown, revoked, or its user disabled)."""
    if not value.startswith(TOKEN_PREFIX) or len(value) > 200:
        return None
    found = session.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_sha256 == _sha256(value), ApiToken.revoked_at.is_(None), User.disabled_at.is_(None))
    ).first()
    if found is None:
        return None
    token, user = found  # nothing is written: a read goes on while another process holds the write lock
    return identity_of(user, via="token", token_label=token.label)


def log_in(session: Session, name: str, password: str, *, client: str, now: datetime) -> User | None:
    """The user whose name and password these are, or None (the refusal is counted). Raises
    LoginThrottled, before any password check, when the name or the client is over its limit."""
    name = name.strip().lower()[:100]
    client = client[:64]
    since = now - LOGIN_WINDOW
    by_name = session.scalar(select(func.count()).where(LoginFailure.name == name, LoginFailure.at > since)) or 0
    by_client = session.scalar(select(func.count()).where(LoginFailure.client == client, LoginFailure.at > since)) or 0
    if by_name >= LOGIN_FAILURES_PER_NAME or by_client >= LOGIN_FAILURES_PER_CLIENT:
        oldest = session.scalar(
            select(func.min(LoginFailure.at)).where(
                (LoginFailure.name == name) | (LoginFailure.client == client), LoginFailure.at > since
            )
        )
        wait = (oldest + LOGIN_WINDOW - now).total_seconds() if oldest is not None else LOGIN_WINDOW.total_seconds()
        raise LoginThrottled(max(1, int(wait)))
    user = session.scalars(select(User).where(User.name == name, User.disabled_at.is_(None))).first()
    if _password_matches(user, password):
        assert user is not None
        if user.password_hash and _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        return user
    session.add(LoginFailure(name=name, client=client, at=now))
    session.execute(delete(LoginFailure).where(LoginFailure.at < now - 4 * LOGIN_WINDOW))  # keep the table small
    return None


def _password_matches(user: User | None, password: str) -> bool:
    if len(password) > 1024:
        return False
    if user is None or not user.password_hash:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash(), password)  # the same cost as a real check
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def open_session(session: Session, user: User, *, now: datetime) -> tuple[str, str]:
    """A new console session for ``user``: (the cookie's value, the session's form token)."""
    value, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id_sha256=_sha256(value),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(hours=SESSION_HOURS),
        )
    )
    session.execute(delete(WebSession).where(WebSession.expires_at < now))  # expired sessions go
    return value, csrf


def identify_session(session: Session, value: str, *, now: datetime) -> tuple[Identity, str] | None:
    """(identity, form token) of a live console session, or None."""
    if not value or len(value) > 200:
        return None
    found = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.id_sha256 == _sha256(value), WebSession.expires_at > now, User.disabled_at.is_(None))
    ).first()
    if found is None:
        return None
    web_session, user = found
    return identity_of(user, via="session"), web_session.csrf_token


def close_session(session: Session, value: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id_sha256 == _sha256(value)))


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def record_action(
    session: Session,
    identity: Identity | str,
    action: str,
    *,
    now: datetime,
    reason: str = "",
    campaign_id: int | None = None,
    delivery_id: int | None = None,
) -> None:
    """Append to the operator actions log: who (``Identity.actor`` or a CLI actor), what, on what, and why."""
    actor = identity.actor if isinstance(identity, Identity) else identity[:100]
    session.add(
        OperatorAction(
            at=now, actor=actor, action=action, campaign_id=campaign_id, delivery_id=delivery_id, reason=reason
        )
    )


def users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def disable_user(session: Session, name: str, *, now: datetime) -> None:
    user = session.scalars(select(User).where(User.name == check_name(name))).first()
    if user is None:
        raise AccountError(f"no user named {name.strip().lower()!r}")
    user.disabled_at = now
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
