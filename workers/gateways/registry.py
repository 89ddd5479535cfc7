"""Gateways registered by name. An unknown name or a missing setting fails at start-up.

Each provider's settings are read from the environment with the prefix ``DISPATCH_<NAME>_``, where
NAME is the gateway's configured name upper-cased (``DISPATCH_TELNYX_API_KEY``). Adding a provider is
a new module plus one line in :data:`PROVIDERS` (see docs/adding-a-provider.md).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from pydantic import ValidationError

from workers.gateways.base import Gateway
from workers.gateways.errors import GatewayConfigError

PROVIDERS: dict[str, str] = {
    "smtp": "workers.gateways.email.smtp:SmtpGateway",
    "postmark": "workers.gateways.email.postmark:PostmarkGateway",
    "sendgrid": "workers.gateways.email.sendgrid:SendGridGateway",
    "mailgun": "workers.gateways.email.mailgun:MailgunGateway",
    "telnyx": "workers.gateways.fax.telnyx:TelnyxGateway",
    "sinch": "workers.gateways.fax.sinch:SinchGateway",
    "phaxio": "workers.gateways.fax.phaxio:PhaxioGateway",
}


def gateway_class(provider: str) -> type[Gateway]:
    try:
        target = PROVIDERS[provider]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise GatewayConfigError(f"unknown gateway provider {provider!r} (known: {known})") from None
    module_name, _, attr = target.partition(":")
    cls: type[Gateway] = getattr(importlib.import_module(module_name), attr)
    return cls


def env_prefix(name: str) -> str:
    return f"DISPATCH_{name.upper().replace('-', '_')}_"


def build_gateway(name: str, *, provider: str | None = None, **overrides: Any) -> Gateway:
    """Build gateway ``name`` from the environment plus overrides. Its provider is ``provider``, else
    ``DISPATCH_<NAME>_PROVIDER``, else the name itself (so "telnyx" needs no extra setting)."""
    prefix = env_prefix(name)
    cls = gateway_class(provider or os.environ.get(f"{prefix}PROVIDER") or name)
    try:
        settings = cls.settings_class(_env_prefix=prefix, **overrides)  # type: ignore[call-arg]
    except ValidationError as err:
        problems = "; ".join(f"{prefix}{str(e['loc'][0]).upper()}: {e['msg'].lower()}" for e in err.errors())
        raise GatewayConfigError(f"gateway {name!r} ({cls.provider}) is misconfigured: {problems}") from err
    return cls(settings, name=name)
