"""Every provider states its own default send rate and calls in flight (from its documentation), which
the worker's limiter applies unless DISPATCH_GATEWAY_LIMITS says otherwise (tests/test_limits.py)."""

from __future__ import annotations

import pytest

from workers.gateways.registry import PROVIDERS, gateway_class

# what each provider's class states, with the source in its comment (README "Rate limits per gateway")
DOCUMENTED = {
    "smtp": (1000, 10),  # Postfix limits no client by default (postconf -d smtpd_client_message_rate_limit: 0)
    "postmark": (50, 10),
    "sendgrid": (50, 10),
    "mailgun": (50, 10),
    "telnyx": (10, 8),
    "sinch": (5, 4),
    "phaxio": (5, 4),
}


def test_every_provider_is_listed_here() -> None:
    assert set(DOCUMENTED) == set(PROVIDERS)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_the_limits_are_stated_on_the_gateway_class(name: str) -> None:
    cls = gateway_class(name)
    assert "per_second" in vars(cls) and "in_flight" in vars(cls), f"{name} states no limits of its own"
    assert (cls.per_second, cls.in_flight) == DOCUMENTED[name]
