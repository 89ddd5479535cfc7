"""What the HTTP email gateways (Postmark, SendGrid, Mailgun) really share, and nothing else.

- :class:`HttpEmailGateway`: the pooled client (or an injected one), the call that maps transport
  failures, lookups that turn every failure into :class:`StatusLookupError`, and ``close``.
- small pure helpers: base64 for attachments, the replay window of signed webhooks, JSON bodies of
  webhooks and of lookup answers.

Provider specifics (field names, error bodies, event tables) stay in the provider modules.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import httpx

from dispatcher.domain.messages import EmailMessage
from dispatcher.domain.states import Channel
from workers.gateways.errors import (
    DeliveryError,
    Permanent,
    StatusLookupError,
    WebhookAuthError,
    WebhookFormatError,
)
from workers.gateways.http import HttpGateway, S, request
from workers.gateways.registry import env_prefix


class HttpEmailGateway(HttpGateway[S]):
    """Base of the JSON/HTTP email gateways: one client, one way to call, one way to look up."""

    channel: ClassVar[Channel] = Channel.EMAIL

    def setting(self, field: str) -> str:
        """The environment variable behind a setting of this gateway, for error messages."""
        return f"{env_prefix(self.name)}{field.upper()}"

    def base_url(self) -> str:
        url: str = getattr(self.settings, "base_url")  # noqa: B009 -- every provider's settings have one
        return url.rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        """Authentication headers of every request; providers override (Mailgun uses httpx auth)."""
        return {}

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to the provider; transport failures become Transient or Unknown."""
        headers = {"Accept": "application/json", **self.auth_headers(), **kwargs.pop("headers", {})}
        return request(self.client, method, self.base_url() + path, provider=self.provider, headers=headers, **kwargs)

    def lookup(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A read-only call: any failure, and any non-2xx but 404, is a StatusLookupError."""
        try:
            response = self.call(method, path, **kwargs)
        except DeliveryError as err:
            raise StatusLookupError(str(err)) from err
        if response.status_code != 404 and not response.is_success:
            raise StatusLookupError(f"{self.provider}: HTTP {response.status_code} on {path}: {response.text[:300]}")
        return response

    def check_recipients(self, email: EmailMessage) -> None:
        """Permanent when the message names no addressee: no provider call could deliver it."""
        if not email.to:
            raise Permanent(f"{self.provider}: {email.reference} has no recipient", code="no_recipients")


def b64(content: bytes) -> str:
    """Attachment content as the base64 text Postmark and SendGrid expect."""
    return base64.b64encode(content).decode("ascii")


def check_fresh(signed_at: float, *, received_at: datetime, tolerance: float, provider: str) -> None:
    """Refuse a signed webhook whose timestamp is too far from when we received it (a replay)."""
    skew = abs(received_at.timestamp() - signed_at)
    if skew > tolerance:
        raise WebhookAuthError(
            f"{provider}: webhook timestamp {skew:.0f}s away from our clock "
            f"(tolerance {tolerance:.0f}s): replay refused"
        )


def webhook_json(body: bytes, *, provider: str) -> Any:
    """A webhook body decoded as JSON, or WebhookFormatError."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise WebhookFormatError(f"{provider}: webhook body is not JSON") from err


def lookup_json(response: httpx.Response, *, provider: str) -> Any:
    """A lookup answer decoded as JSON, or StatusLookupError."""
    try:
        return response.json()
    except ValueError as err:
        raise StatusLookupError(f"{provider}: HTTP {response.status_code}: answer is not JSON") from err


def lookup_object(response: httpx.Response, *, provider: str) -> dict[str, Any]:
    body = lookup_json(response, provider=provider)
    if not isinstance(body, dict):
        raise StatusLookupError(f"{provider}: HTTP {response.status_code}: answer is not a JSON object")
    return body


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by case-insensitive name (WebhookRequest promises lower case; be lenient)."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)
