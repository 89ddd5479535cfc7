"""One pooled httpx client per process, and the mapping of transport failures to our error types.

The mapping that every HTTP gateway shares:

- an invalid URL or scheme (a base_url setting): the request never left -> ``ConfigurationFault`` code "url"
- connect errors and connect/pool timeouts: the request never left -> ``Transient``
- read/write timeouts, a dropped connection after the request was written -> ``Unknown``
- 429 and 503 -> ``Transient`` (with Retry-After), 500 -> ``Transient``
- 502 and 504 -> ``Unknown``: a proxy lost its upstream, which may have accepted the message
- 401 and 403 -> ``ConfigurationFault``: the provider refuses our credentials, not the route (provider
  modules name the variable to check)
- other 4xx -> ``Permanent`` unless the provider module maps a code more precisely
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic_settings import BaseSettings

from workers.gateways.base import Gateway
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    GatewayConfigError,
    Permanent,
    Transient,
    Unknown,
)

TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30.0)

_lock = threading.Lock()
_client: httpx.Client | None = None


def shared_client() -> httpx.Client:
    """The process-wide client (connection pool); recreated in a forked child."""
    global _client
    with _lock:
        if _client is None or _client.is_closed:
            _client = httpx.Client(timeout=TIMEOUT, limits=LIMITS, follow_redirects=False)
        return _client


def _forget_client_after_fork() -> None:
    global _client
    _client = None  # never share sockets with the parent process


os.register_at_fork(after_in_child=_forget_client_after_fork)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Parse Retry-After (seconds or an HTTP date) into seconds; None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds):
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, the sender's zone unknown (RFC 5322 3.3)
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def request(client: httpx.Client, method: str, url: str, *, provider: str, **kwargs: Any) -> httpx.Response:
    """Send one request, mapping transport failures; the caller inspects the status code."""
    try:
        return client.request(method, url, **kwargs)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:  # nothing left: the URL is ours to fix
        raise ConfigurationFault(
            f"{provider}: cannot request {url[:200]!r} ({err}); check the gateway's BASE_URL setting", code="url"
        ) from err
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
        raise Transient(f"{provider}: could not connect ({type(err).__name__})", code="connect") from err
    except (httpx.ReadTimeout, httpx.WriteTimeout) as err:
        raise Unknown(
            f"{provider}: no answer after the request was sent ({type(err).__name__})", code="timeout"
        ) from err
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
        raise Unknown(
            f"{provider}: connection dropped after the request was sent ({type(err).__name__})", code="dropped"
        ) from err
    except httpx.HTTPError as err:
        raise Unknown(f"{provider}: request failed ({type(err).__name__})", code="http") from err


def error_for_status(response: httpx.Response, *, provider: str, detail: str = "") -> DeliveryError:
    """The default error for a non-2xx answer; provider modules refine 4xx codes before calling this."""
    status = response.status_code
    body: Any = _body(response)
    message = f"{provider}: HTTP {status}" + (f": {detail}" if detail else "")
    if status in (429, 503):
        return Transient(message, code=str(status), raw=body, retry_after=retry_after_seconds(response.headers))
    if status in (502, 504):
        return Unknown(message, code=str(status), raw=body)
    if status >= 500:
        return Transient(message, code=str(status), raw=body, retry_after=retry_after_seconds(response.headers))
    if status in (401, 403):
        return ConfigurationFault(message, code=str(status), raw=body)
    return Permanent(message, code=str(status), raw=body)


def check_answer(response: httpx.Response, *, name: str, setting: str) -> None:
    """A credential check's answer: 2xx passes; 401/403 says ``setting`` was refused; anything else is
    mapped as for a send (a 5xx is Transient: the provider could not tell)."""
    status = response.status_code
    if response.is_success:
        return
    if status in (401, 403):
        raise ConfigurationFault.refused(setting, by=name, detail=f"HTTP {status}", code=str(status))
    raise error_for_status(response, provider=name, detail="credential check")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


S = TypeVar("S", bound=BaseSettings)


class HttpGateway(Gateway, Generic[S]):
    """Base of the HTTP gateways: settings of the provider's own type in ``config``, and the
    process-wide client pool unless a test hands in a client of its own."""

    config: S

    def __init__(self, settings: BaseSettings, *, name: str | None = None, client: httpx.Client | None = None) -> None:
        if not isinstance(settings, self.settings_class):
            raise GatewayConfigError(
                f"{self.provider}: expected {self.settings_class.__name__}, got {type(settings).__name__}"
            )
        super().__init__(settings, name=name)
        self.config = settings  # type: ignore[assignment]  # checked just above
        self._client = client  # None: the shared process-wide pool

    @property
    def client(self) -> httpx.Client:
        return self._client if self._client is not None else shared_client()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
