"""Every registered gateway follows the one contract of workers/gateways/base.py, and is tested by it."""

from __future__ import annotations

import importlib
import inspect

import pytest

from dispatcher.domain.states import Channel
from workers.gateways.base import Gateway
from workers.gateways.registry import PROVIDERS, gateway_class

from .contract import GatewayContract, HttpContract

SEND_HOOKS = {Channel.FAX: "_send_fax", Channel.EMAIL: "_send_email"}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_gateway_implements_the_hooks_and_keeps_the_public_methods(provider: str) -> None:
    cls = gateway_class(provider)
    assert cls.provider == provider
    own, other = (SEND_HOOKS[cls.channel], SEND_HOOKS[Channel.EMAIL if cls.channel is Channel.FAX else Channel.FAX])
    assert getattr(cls, own) is not getattr(Gateway, own), f"{provider} sends {cls.channel} but has no {own}"
    assert getattr(cls, other) is getattr(Gateway, other)
    for name in ("send", "fetch_status", "find_by_reference", "parse_webhook"):
        assert getattr(cls, name) is getattr(Gateway, name), f"{provider} overrides {name}"


def test_find_by_reference_has_one_signature() -> None:
    parameters = inspect.signature(Gateway.find_by_reference).parameters
    assert [(p.name, p.kind, p.default) for p in parameters.values()] == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("reference", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("to", inspect.Parameter.KEYWORD_ONLY, None),
        ("sent_after", inspect.Parameter.KEYWORD_ONLY, None),
    ]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_every_gateway_runs_the_shared_suite(provider: str) -> None:
    module = importlib.import_module(f"tests.gateways.test_{provider}")
    suite = module.TestContract
    assert issubclass(suite, GatewayContract)
    if provider != "smtp":  # the one gateway that is not HTTP
        assert issubclass(suite, HttpContract)
