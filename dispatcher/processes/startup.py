"""Gateway credentials, checked when `dispatch worker`, `scheduler` and `web` start.

Each gateway makes its provider's cheapest authenticated call (``Gateway.check_credentials``: Telnyx
lists one fax, Sinch one service, Phaxio reads the account status, Postmark the server, SendGrid the
key's scopes, Mailgun the domain; SMTP connects, greets, starts TLS and logs in). Then:

- the provider refuses our credentials (401/403, SMTP AUTH refused): the process does not start, and says
  which variable was refused ("DISPATCH_TELNYX_API_KEY was refused by telnyx (HTTP 401)"), no traceback;
- the provider cannot be reached, or cannot tell (a network failure, a timeout, a 5xx): a WARNING, and
  the process starts. A worker kept from starting by one provider's outage would hold up every other
  gateway; once running, the circuit breaker and the retries deal with the outage, and a wrong key
  found later pauses its gateway (dispatcher/domain/gateway_pauses.py).

``DISPATCH_CHECK_CREDENTIALS=false`` skips the check, for rehearsals without a network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from dispatcher.domain.errors import DispatchError
from dispatcher.domain.settings import Settings
from workers.gateways.base import Gateway
from workers.gateways.errors import ConfigurationFault, GatewayError
from workers.gateways.registry import build_for_slot, slots

log = logging.getLogger(__name__)


class CredentialsRefused(DispatchError):
    """A provider refused a gateway's credentials: the process does not start."""


def check_gateways(settings: Settings, gateways: Iterable[Gateway]) -> None:
    """Check each gateway once; CredentialsRefused naming every refused variable."""
    if not settings.check_credentials:
        log.info("gateway credentials not checked (DISPATCH_CHECK_CREDENTIALS=false)")
        return
    refused: list[str] = []
    checked: set[str] = set()
    for gateway in gateways:
        if gateway.name in checked:
            continue
        checked.add(gateway.name)
        try:
            gateway.check_credentials()
        except ConfigurationFault as err:
            refused.append(str(err))
        except GatewayError as err:
            log.warning("%s: credentials could not be checked (%s); starting anyway", gateway.name, err)
        else:
            log.info("%s: credentials accepted by %s", gateway.name, gateway.provider)
    if refused:
        raise CredentialsRefused("; ".join(refused))


def check_configured_gateways(settings: Settings) -> None:
    """Build each configured gateway (DISPATCH_FAX_GATEWAY, ...) just for the check, then let it go."""
    if not settings.check_credentials:
        log.info("gateway credentials not checked (DISPATCH_CHECK_CREDENTIALS=false)")
        return
    gateways = [build_for_slot(slot) for slot in slots(settings)]
    try:
        check_gateways(settings, gateways)
    finally:
        for gateway in gateways:
            gateway.close()
