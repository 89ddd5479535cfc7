"""One settings object. Lookup order: keyword arguments, then ``DISPATCH_*`` environment variables,
then a ``.env`` file in the working directory, then the defaults below.

A malformed value, or time limits in an order that would let a task outlive its broker message or a
send wait longer than its claim's lease, fail here, at start-up, naming the variables to fix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.errors import SettingsError
from dispatcher.domain.gateway_limits import GatewayLimit, GatewayLimitsError, parse_gateway_limits

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SECRET_KEY_MIN_CHARS = 32  # DISPATCH_SECRET_KEY signs document URLs: a short key can be guessed

# (what must stay below, what it must stay below, why); each name is a Settings field
TIME_LIMIT_ORDER: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("batch_budget_seconds", "limit_max_wait_seconds"),
        "task_soft_time_limit_seconds",
        "a send may start at the end of the batch budget, then wait this long for a shared limit",
    ),
    (
        ("task_soft_time_limit_seconds",),
        "task_time_limit_seconds",
        "the soft limit must let a stuck task stop cleanly before the hard limit kills it",
    ),
    (
        ("task_time_limit_seconds",),
        "visibility_timeout_seconds",
        "else Redis hands a running task's message to a second worker",
    ),
    (
        ("limit_max_wait_seconds",),
        "lease_seconds",
        "the longest wait before a send must fit in one lease, or a worker whose renewal is late finds its "
        "claim expired at the send (the check before the send then refuses it, and the letter waits)",
    ),
    (
        ("poll_after_seconds",),
        "report_wait_seconds",
        "a submitted send is asked for at the provider at least once before it is held for an operator",
    ),
)


class Settings(BaseSettings):
    """Every DISPATCH_* setting, with its default; README "Settings" gives each one's meaning."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/dispatch.db",
        description="SQLAlchemy URL of the ledger; SQLite file under var/ by default",
    )
    broker_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker")
    secret_key: SecretStr | None = Field(default=None, description="signs document URLs and unsubscribe links")
    public_base_url: str = Field(default="http://127.0.0.1:8000", description="where `dispatch web` is reached")
    fax_gateway: str = Field(default="telnyx", description="gateway name for faxes (settings DISPATCH_<NAME>_*)")
    email_gateway: str = Field(default="smtp", description="gateway name for letters by email")
    copies_gateway: str | None = Field(default=None, description="gateway for supporter copies; email's if unset")
    queue_prefix: str = Field(
        default="", description="prefix of every Redis key, Celery's included (several services, one Redis)"
    )
    var_dir: Path = Field(
        default=Path("var"), description="runtime files: the demo's under demo/, the sandbox's oracles under sandbox/"
    )
    log_level: LogLevel = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case), for every process"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="plain text lines, or one JSON object a line"
    )

    # retries and fallback
    retry_base_seconds: float = Field(default=60.0, gt=0, description="first backoff after a transient failure")
    retry_cap_seconds: float = Field(default=1800.0, gt=0, description="longest backoff")
    max_attempts: int = Field(default=8, ge=1, description="attempts per route before it is given up")
    fax_gap_seconds: float = Field(default=60.0, ge=0, description="minimum time between two faxes to one number")
    no_fax_tone_limit: int = Field(
        default=2, ge=1, description="'no fax tone' answers in a row from a number before its route is given up"
    )

    # the scheduler
    tick_seconds: float = Field(default=1.0, gt=0, description="time between two scheduler ticks")
    claim_limit: int = Field(default=2000, ge=1, description="deliveries claimed per tick, at most")
    publish_batch_size: int = Field(default=200, ge=1, description="delivery ids per broker message")
    max_queued_per_queue: int = Field(
        default=2000, ge=1, description="queued deliveries per queue (fax, email, copies) at most: a tick tops up"
    )
    fax_publish_batch_size: int = Field(
        default=4,
        ge=1,
        description="fax delivery ids per broker message: few, so faxes spread over every worker; more than one, "
        "so a worker prepares the next while the current one is sent",
    )
    republish_after_seconds: float = Field(default=60.0, gt=0, description="re-publish a queued row after this long")
    poll_after_seconds: float = Field(
        default=900.0, gt=0, description="poll a submitted send with no report after this"
    )
    report_wait_seconds: float = Field(
        default=7200.0,
        gt=0,
        description="a submitted send with no final status this long after it was accepted is held for an operator",
    )
    reconcile_grace_seconds: float = Field(
        default=60.0, ge=0, description="wait before trusting a provider's 'not found'"
    )
    reconcile_every_seconds: float = Field(default=30.0, gt=0, description="look up unknown sends this often")

    # the worker
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="a claimed send whose worker stopped renewing it (every third of this) becomes unknown after this",
    )
    batch_budget_seconds: float = Field(default=240.0, gt=0, description="no new send starts in a task after this long")
    task_soft_time_limit_seconds: float = Field(default=600.0, gt=0, description="Celery soft time limit of a task")
    task_time_limit_seconds: float = Field(default=660.0, gt=0, description="Celery hard time limit of a task")
    visibility_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="Redis hands an unacknowledged message to another worker after this long"
    )

    # shared limits (Redis), per gateway and per campaign
    gateway_limits: str = Field(
        default="", description="per gateway: NAME=N/s or NAME=N/s:M, comma-separated, over the documented defaults"
    )
    gateway_per_second: int | None = Field(
        default=None, ge=1, description="sends per second through every gateway not in gateway_limits; unset: its own"
    )
    gateway_in_flight: int | None = Field(
        default=None, ge=1, description="calls in progress at once through every gateway not in gateway_limits"
    )
    campaign_per_minute: int = Field(
        default=600, ge=1, description="letters to officials sent per minute for one campaign (not copies)"
    )
    limit_max_wait_seconds: float = Field(
        default=30.0, gt=0, description="longest wait for a limit before retrying; below the lease"
    )

    # gateways: the circuit breaker, and the credential check at start-up
    breaker_failures: int = Field(
        default=5, ge=1, description="transport failures in a row (connect errors, 5xx) that pause a gateway"
    )
    breaker_window_seconds: float = Field(
        default=120.0, gt=0, description="those failures open the breaker only when they fall within this long"
    )
    breaker_cooldown_seconds: float = Field(
        default=300.0, gt=0, description="an open breaker waits this long, then lets one trial send through"
    )
    check_credentials: bool = Field(
        default=True, description="worker, scheduler and web check each gateway's credentials at start-up"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("secret_key")
    @classmethod
    def _long_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse a short key; the message gives its length rule, never the value."""
        if value is not None and len(value.get_secret_value()) < SECRET_KEY_MIN_CHARS:
            raise PydanticCustomError(
                "secret_key_short", f"must be at least {SECRET_KEY_MIN_CHARS} characters (it signs document URLs)"
            )
        return value

    @field_validator("gateway_limits")
    @classmethod
    def _gateway_limits_well_formed(cls, value: str) -> str:
        try:
            parse_gateway_limits(value)
        except GatewayLimitsError as err:
            raise PydanticCustomError("gateway_limits", str(err)) from None
        return value

    @property
    def redis_broker(self) -> bool:
        """The broker is Redis: shared limits, queue counts and fax documents live there; another broker (the
        demo's in-memory one) has none of them."""
        return self.broker_url.startswith(("redis://", "rediss://"))

    @property
    def gateway_limit_overrides(self) -> dict[str, GatewayLimit]:
        """DISPATCH_GATEWAY_LIMITS by gateway name (checked when the settings were read)."""
        return parse_gateway_limits(self.gateway_limits)

    @model_validator(mode="after")
    def _gateway_limits_name_known_gateways(self) -> Settings:
        """Refuse limits for a gateway no channel slot names: a typo would leave the real one unlimited."""
        known = {name for name in (self.fax_gateway, self.email_gateway, self.copies_gateway) if name}
        unknown = sorted(set(self.gateway_limit_overrides) - known)
        if unknown:
            raise PydanticCustomError(
                "gateway_limits_unknown",
                f"DISPATCH_GATEWAY_LIMITS: no channel slot names gateway {', '.join(map(repr, unknown))} "
                f"(configured: {', '.join(sorted(known))}; see DISPATCH_FAX_GATEWAY, DISPATCH_EMAIL_GATEWAY, "
                "DISPATCH_COPIES_GATEWAY)",
            )
        return self

    @model_validator(mode="after")
    def _time_limits_in_order(self) -> Settings:
        """Refuse time limits that would let a task outlive its message or its claim (all problems at once)."""
        problems = [_order_problem(self, below, above, why) for below, above, why in TIME_LIMIT_ORDER]
        found = [p for p in problems if p]
        if found:
            raise PydanticCustomError("time_limit_order", "; ".join(found))
        return self


def _variable(field: str) -> str:
    return f"DISPATCH_{field.upper()}"


def _order_problem(settings: Settings, below: tuple[str, ...], above: str, why: str) -> str | None:
    """A message naming the variables when the sum of ``below`` is not below ``above``, else None."""
    values = [float(getattr(settings, name)) for name in below]
    limit = float(getattr(settings, above))
    if sum(values) < limit:
        return None
    names = " + ".join(_variable(name) for name in below)
    shown = " + ".join(f"{v:g}" for v in values)
    return f"{names} ({shown}) must be below {_variable(above)} ({limit:g}): {why}"


def load_settings(**overrides: object) -> Settings:
    """Build settings, naming the DISPATCH_* variable to fix when one is malformed."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        problems = "; ".join(_problem(e) for e in err.errors())
        # not chained: pydantic's error repeats every input value, DISPATCH_SECRET_KEY's too
        raise SettingsError(f"invalid settings: {problems}") from None


def _problem(error: ErrorDetails) -> str:
    """One field's error prefixed with its variable; a cross-field error already names its variables."""
    if error["loc"]:
        message = error["msg"]
        return f"{_variable(str(error['loc'][0]))}: {message[:1].lower()}{message[1:]}"
    return error["msg"]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
