"""Every error a gateway may raise, and nothing else.

    GatewayError
    ├── GatewayConfigError      a gateway is unknown, misconfigured, or of the wrong channel for its slot (start-up)
    ├── DeliveryError           the outcome of one send; exactly one of:
    │   ├── Transient           nothing was sent; retry the same route later (busy, 429, 5xx, connect timeout)
    │   ├── Permanent           this route will never work; move to the next route (invalid number, 4xx,
    │   │                       a message of the other channel: code "channel")
    │   ├── Unknown             the request may have been accepted: reconcile, never resend blindly
    │   ├── ConfigurationFault  our configuration is wrong (401/403, SMTP AUTH refused, the provider could
    │   │                       not fetch our document): nothing was sent and the route is not at fault;
    │   │                       the gateway is paused until an operator resumes it, the delivery waits
    │   └── GatewayPaused       the gateway is paused (a ConfigurationFault, or its circuit breaker is
    │                           open): the send was not attempted; the delivery waits on its route
    ├── StatusLookupError       fetch_status / find_by_reference could not tell (unknown id, provider down)
    └── WebhookError            an incoming status webhook is refused and changes nothing
        ├── WebhookAuthError    bad, missing or replayed signature / credentials (403)
        └── WebhookFormatError  malformed body, wrong content type, over max_webhook_bytes, a provider
                                without webhooks (400)

Gateways map provider answers and lower-level errors (httpx, smtplib, socket) to these types at the
boundary, with ``raise ... from err``. What a provider module does not map, the public methods of
:class:`workers.gateways.base.Gateway` do: send -> ``Unknown``, lookups -> ``StatusLookupError``,
parse_webhook -> ``WebhookFormatError``. No third-party exception reaches a caller. A body larger than
the gateway's ``max_webhook_bytes`` is refused by the web app (413) before the gateway sees it.
"""

from __future__ import annotations

CHANNEL_MISMATCH = "channel"  # Permanent.code of a message sent through a gateway of the other channel
# Transient.code of a message a batch did not send (workers/gateways/base.py Gateway.send_many): not
# counted against its route (dispatcher/domain/outcomes.py NOT_SENT_CODES)
BATCH_STOPPED = "batch-stopped"
# error codes of a request that got no answer from the provider (workers/gateways/http.py, smtp.py)
TRANSPORT_CODES = frozenset({"connect", "timeout", "dropped", "http"})


class GatewayError(Exception):
    """Base of every gateway error."""


class GatewayConfigError(GatewayError):
    """A gateway cannot be built: names the setting (environment variable) to fix."""


class DeliveryError(GatewayError):
    """The outcome of a send that did not end in a provider receipt."""

    def __init__(self, message: str, *, code: str | None = None, raw: object = None) -> None:
        super().__init__(message)
        self.code = code  # provider's own error code or reason, kept as evidence
        self.raw = raw


class Transient(DeliveryError):
    """Nothing was sent; the same route may succeed later."""

    def __init__(
        self, message: str, *, code: str | None = None, raw: object = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code, raw=raw)
        self.retry_after = retry_after  # seconds, from the provider's Retry-After when it gave one


class Permanent(DeliveryError):
    """This route will not work; the caller moves on to the next route."""


class Unknown(DeliveryError):
    """The provider may have accepted the message; reconcile by our reference before anything else."""


class ConfigurationFault(DeliveryError):
    """Our configuration is wrong, not the route: nothing was sent. ``setting`` names the variable to check."""

    def __init__(
        self, message: str, *, setting: str | None = None, code: str | None = None, raw: object = None
    ) -> None:
        super().__init__(message, code=code, raw=raw)
        self.setting = setting  # e.g. "DISPATCH_TELNYX_API_KEY"; never its value

    @classmethod
    def refused(cls, setting: str, *, by: str, detail: str, code: str | None = None) -> ConfigurationFault:
        """ "DISPATCH_X was refused by NAME (detail)": what a credential check at start-up says."""
        verb = "were" if " and " in setting else "was"
        return cls(f"{setting} {verb} refused by {by} ({detail})", setting=setting, code=code)


class GatewayPaused(DeliveryError):
    """The gateway is paused (configuration fault or open circuit breaker): no call was made."""


class StatusLookupError(GatewayError):
    """fetch_status or find_by_reference could not establish the state of a message."""


class WebhookError(GatewayError):
    """An incoming webhook is refused; it changes nothing."""

    status_code = 400


class WebhookAuthError(WebhookError):
    """Missing, forged or replayed signature or credentials."""

    status_code = 403


class WebhookFormatError(WebhookError):
    """Malformed body or wrong content type, or a gateway whose provider sends no webhooks."""

    status_code = 400


def transport_failure(outcome: object) -> bool:
    """The gateway did not answer: no connection, no reply, or an HTTP 5xx (a Transient or Unknown with
    one of TRANSPORT_CODES or a 5xx code); anything else, a receipt included, is an answer."""
    if not isinstance(outcome, Transient | Unknown) or outcome.code is None:
        return False
    code = outcome.code
    return code in TRANSPORT_CODES or (code.isdigit() and 500 <= int(code) <= 599)
