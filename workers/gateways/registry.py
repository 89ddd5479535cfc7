"""Gateways registered by name. An unknown name, a missing setting or a gateway of the wrong channel
for its slot fails at start-up, naming the variable to fix.

Each provider's settings are read from the environment with the prefix ``DISPATCH_<NAME>_``, where
NAME is the gateway's configured name upper-cased (``DISPATCH_TELNYX_API_KEY``). A deployment puts
gateways in channel slots (``DISPATCH_FAX_GATEWAY``, ``DISPATCH_EMAIL_GATEWAY``,
``DISPATCH_COPIES_GATEWAY``): :func:`slots` lists them and :func:`build_for_slot` builds one. Adding a
provider is a new module plus one line in :data:`PROVIDERS` (see docs/adding-a-provider.md).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dispatcher.domain.settings import Settings
from dispatcher.domain.states import Channel
from workers.gateways.base import Gateway, channel_mismatch
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


def provider_of(name: str) -> str:
    """The provider of gateway ``name``: ``DISPATCH_<NAME>_PROVIDER``, else the name itself."""
    return os.environ.get(f"{env_prefix(name)}PROVIDER") or name


def build_gateway(name: str, *, provider: str | None = None, **overrides: Any) -> Gateway:
    """Build gateway ``name`` from the environment plus overrides. Its provider is ``provider``, else
    ``DISPATCH_<NAME>_PROVIDER``, else the name itself (so "telnyx" needs no extra setting)."""
    prefix = env_prefix(name)
    cls = gateway_class(provider or provider_of(name))
    try:
        settings = cls.settings_class(_env_prefix=prefix, **overrides)  # type: ignore[call-arg]
    except ValidationError as err:
        problems = "; ".join(f"{prefix}{str(e['loc'][0]).upper()}: {e['msg'].lower()}" for e in err.errors())
        raise GatewayConfigError(f"gateway {name!r} ({cls.provider}) is misconfigured: {problems}") from err
    return cls(settings, name=name)


@dataclass(frozen=True)
class Slot:
    """Where a deployment names a gateway, and the channel that gateway must send."""

    key: str  # "fax", "email" or "copies": the kind of delivery the worker sends through it
    variable: str  # the setting that names the gateway, e.g. "DISPATCH_FAX_GATEWAY"
    name: str  # the gateway's name, e.g. "telnyx"
    channel: Channel


SLOT_FIELDS: tuple[tuple[str, str, Channel], ...] = (
    ("fax", "fax_gateway", Channel.FAX),
    ("email", "email_gateway", Channel.EMAIL),
    ("copies", "copies_gateway", Channel.EMAIL),  # supporter copies are email; unset: the email gateway
)


def slots(settings: Settings) -> list[Slot]:
    """The filled channel slots of a deployment, in the order above."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    return [
        Slot(key, f"{prefix}{field}".upper(), name, channel)
        for key, field, channel in SLOT_FIELDS
        if (name := getattr(settings, field))
    ]


def build_for_slot(slot: Slot) -> Gateway:
    """Build the slot's gateway; GatewayConfigError naming the slot's variable when the gateway is unknown
    or sends another channel (checked before its own settings are read)."""
    try:
        cls = gateway_class(provider_of(slot.name))
    except GatewayConfigError as err:
        raise GatewayConfigError(f"{slot.variable}: {err}") from None
    if cls.channel is not slot.channel:
        raise GatewayConfigError(
            f"{slot.variable}: {channel_mismatch(slot.name, cls.provider, cls.channel, slot.channel)}"
        )
    return build_gateway(slot.name, provider=cls.provider)
