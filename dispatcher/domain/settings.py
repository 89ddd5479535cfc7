"""One settings object. Lookup order: keyword arguments, then ``DISPATCH_*`` environment variables,
then a ``.env`` file in the working directory, then the defaults below."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.errors import SettingsError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCH_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/dispatch.db",
        description="SQLAlchemy URL of the ledger; SQLite file under var/ by default",
    )
    broker_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker")
    secret_key: SecretStr | None = Field(default=None, description="signs document URLs for fax providers")
    public_base_url: str = Field(default="http://127.0.0.1:8000", description="where `dispatch web` is reached")
    fax_gateway: str = Field(default="telnyx", description="gateway name for faxes (settings DISPATCH_<NAME>_*)")
    email_gateway: str = Field(default="smtp", description="gateway name for letters by email")
    copies_gateway: str | None = Field(default=None, description="gateway for supporter copies; email's if unset")
    retry_base_seconds: float = Field(default=60.0, description="first backoff after a transient failure")
    retry_cap_seconds: float = Field(default=1800.0, description="longest backoff")
    max_attempts: int = Field(default=8, description="attempts per route before it is given up")
    fax_gap_seconds: float = Field(default=60.0, description="minimum time between two faxes to one number")
    republish_after_seconds: float = Field(default=60.0, description="re-publish a queued row after this long")
    reconcile_grace_seconds: float = Field(default=60.0, description="wait before trusting a provider's 'not found'")
    reconcile_every_seconds: float = Field(default=30.0, description="look up unknown sends this often")
    lease_seconds: float = Field(default=900.0, description="a claimed send not recorded by then becomes unknown")
    queue_prefix: str = Field(default="", description="prefix for the Celery queue names (several services, one Redis)")
    var_dir: Path = Field(default=Path("var"), description="runtime files: SQLite database, oracle logs")
    log_level: str = "INFO"


def load_settings(**overrides: object) -> Settings:
    """Build settings, naming the DISPATCH_* variable to fix when one is malformed."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        problems = "; ".join(f"DISPATCH_{str(e['loc'][0]).upper()}: {e['msg'].lower()}" for e in err.errors())
        raise SettingsError(f"invalid settings: {problems}") from err


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
