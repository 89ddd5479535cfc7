"""What every gateway promises, tested once; each provider's test module subclasses these classes.

- :class:`GatewayContract` (every gateway): a message of the other channel is refused before any call;
  a closed port is ``Transient``; lookups and webhooks of any kind end in our errors only.
- :class:`HttpContract` (the HTTP gateways, against their emulators on real localhost ports): 429 with
  Retry-After, 500 ``Transient``; 502, a dropped connection and a read timeout ``Unknown`` with the
  oracle showing the acceptance and ``find_by_reference`` finding it; a never-sent reference ``None``;
  504 and an unreadable 2xx ``Unknown`` (httpx.MockTransport).
- :class:`WebhookContract`: a sample verifies; forged or unsigned ones are ``WebhookAuthError``; bodies
  that are not the provider's JSON are ``WebhookFormatError``; other events change nothing.
- :class:`ReplayContract`: for providers that sign a timestamp, stale signatures are replays.

A subclass provides these fixtures (module level or in the class):

    make_gateway(address, *, read_timeout=5.0, transport=None) -> Gateway
    new_message() -> the gateway's kind of message, to a destination used by no other test
    emulator_address, closed_address -> str (HttpContract derives both from ``emulator``)
    emulator (ThreadedServer) and state (SandboxState)             HttpContract
    signed_document(doc), signed_raw(body) -> WebhookRequest        WebhookContract
    webhook_sample, other_event_sample -> documents; forged_webhooks -> list[WebhookRequest]
    stale_webhooks -> list[WebhookRequest]                          ReplayContract
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import pytest

from dispatcher.domain.messages import (
    EmailMessage,
    EventKind,
    FaxMessage,
    Message,
    StatusEvent,
    WebhookRequest,
)
from dispatcher.domain.states import Channel
from workers.gateways.base import Gateway
from workers.gateways.errors import (
    DeliveryError,
    Permanent,
    StatusLookupError,
    Transient,
    Unknown,
    WebhookAuthError,
    WebhookError,
    WebhookFormatError,
)
from workers.sandbox.core import OracleEntry, SandboxState
from workers.sandbox.server import ThreadedServer, free_port

from .receivers import wait_until

MakeGateway = Callable[..., Gateway]

A_FAX = FaxMessage(to="+4930123456", from_number="+4930999999", pdf=b"%PDF-1.4\n%%EOF", page_count=1, reference="r-fax")
AN_EMAIL = EmailMessage(
    sender="desk@advocacy.example",
    to=["minister@gov.example"],
    subject="Letter",
    text="Dear Minister",
    reference="r-mail",
    message_id="<r-mail@advocacy.example>",
)


def destination(message: Message) -> str:
    """Where a message goes: the fax number, or the first addressee."""
    return message.to if isinstance(message, FaxMessage) else message.to[0]


def accepted(state: SandboxState, message: Message) -> list[OracleEntry]:
    """What the emulator accepted for this message."""
    return [entry for entry in state.oracle() if entry.reference == message.reference]


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it was raised from."""
    current: BaseException | None = error
    while current is not None:
        yield current
        current = current.__cause__ or current.__context__


def assert_event(event: object, provider: str) -> None:
    """A StatusEvent whose fields have the types the ledger stores."""
    assert isinstance(event, StatusEvent), event
    assert event.provider == provider and isinstance(event.provider_id, str)
    assert isinstance(event.kind, EventKind)
    assert isinstance(event.occurred_at, datetime) and event.occurred_at.tzinfo is not None
    assert event.error_class in (None, "transient", "permanent")
    for text in (event.reference, event.error_code, event.detail, event.remote_station_id, event.event_id):
        assert text is None or isinstance(text, str), text
    assert event.pages is None or (isinstance(event.pages, int) and not isinstance(event.pages, bool))
    assert event.duration_secs is None or isinstance(event.duration_secs, float)


class GatewayContract:
    """Every gateway."""

    def test_a_message_of_the_other_channel_is_refused_before_any_call(
        self, make_gateway: MakeGateway, closed_address: str
    ) -> None:
        gateway = make_gateway(closed_address)
        other = AN_EMAIL if gateway.channel is Channel.FAX else A_FAX
        wanted = "email" if gateway.channel is Channel.FAX else "fax"
        with pytest.raises(Permanent) as caught:
            gateway.send(other)  # a call would have ended in Transient "connect": nothing listens there
        assert type(caught.value) is Permanent and caught.value.code == "channel"
        assert f"(provider {gateway.provider}) sends {gateway.channel}, not {wanted}" in str(caught.value)

    def test_a_closed_port_is_transient(self, make_gateway: MakeGateway, closed_address: str, new_message: Any) -> None:
        with pytest.raises(Transient) as caught:
            make_gateway(closed_address).send(new_message())
        assert caught.value.code == "connect"
        assert isinstance(caught.value.__cause__, ConnectionRefusedError | httpx.ConnectError)  # raised from it
        assert any(isinstance(error, ConnectionRefusedError) for error in causes(caught.value))

    def test_the_public_methods_are_the_base_class_ones(self, make_gateway: MakeGateway, closed_address: str) -> None:
        gateway = make_gateway(closed_address)
        for name in ("send", "fetch_status", "find_by_reference", "parse_webhook"):
            assert getattr(type(gateway), name) is getattr(Gateway, name), name
        assert list(inspect.signature(gateway.find_by_reference).parameters) == ["reference", "to", "sent_after"]

    def test_lookups_and_webhooks_of_an_unreachable_provider_end_in_our_errors(
        self, make_gateway: MakeGateway, closed_address: str
    ) -> None:
        gateway = make_gateway(closed_address)
        calls: list[Callable[[], object]] = [
            lambda: gateway.fetch_status("no-such-id"),
            lambda: gateway.find_by_reference("r-1"),
            lambda: gateway.find_by_reference("r-1", to="+4930123456", sent_after=datetime.now(UTC)),
        ]
        for call in calls:
            with pytest.raises(StatusLookupError):
                call()
        for body in (b"", b"\x00\xff", b"{}", b"[]"):
            request = WebhookRequest(
                method="POST", url="https://dispatch.example/hook", headers={}, body=body, received_at=datetime.now(UTC)
            )
            with pytest.raises(WebhookError):
                gateway.parse_webhook(request)


class HttpContract(GatewayContract):
    """HTTP gateways against their emulators."""

    unknown_id: ClassVar[str]  # an id in the provider's format that names no message
    retry_after_exact: ClassVar[bool] = True  # False: the provider states a date, whole seconds (approx.)

    @pytest.fixture
    def emulator_address(self, emulator: ThreadedServer) -> str:
        return emulator.url

    @pytest.fixture
    def closed_address(self) -> str:
        return f"http://127.0.0.1:{free_port()}"

    @pytest.fixture
    def sandbox(self, state: SandboxState) -> Iterator[SandboxState]:
        """The emulator's state, with latency and Retry-After put back afterwards."""
        saved = (state.latency, state.retry_after)
        yield state
        state.latency, state.retry_after = saved

    def test_rate_limited_is_transient_with_retry_after(
        self, make_gateway: MakeGateway, emulator_address: str, sandbox: SandboxState, new_message: Any
    ) -> None:
        message = new_message()
        sandbox.retry_after = 7
        sandbox.script(destination(message), ["rate_limited"])
        with pytest.raises(Transient) as caught:
            make_gateway(emulator_address).send(message)
        assert caught.value.code == "429"
        if self.retry_after_exact:
            assert caught.value.retry_after == 7.0
        else:
            assert caught.value.retry_after == pytest.approx(6.5, abs=1.0)
        assert accepted(sandbox, message) == []

    def test_server_error_is_transient(
        self, make_gateway: MakeGateway, emulator_address: str, sandbox: SandboxState, new_message: Any
    ) -> None:
        message = new_message()
        sandbox.script(destination(message), ["server_error"])
        with pytest.raises(Transient) as caught:
            make_gateway(emulator_address).send(message)
        assert type(caught.value) is Transient and caught.value.code == "500"
        assert accepted(sandbox, message) == []

    def test_bad_gateway_is_unknown_and_found_by_reference(
        self, make_gateway: MakeGateway, emulator_address: str, sandbox: SandboxState, new_message: Any
    ) -> None:
        self._ambiguous(make_gateway(emulator_address), sandbox, new_message(), outcome="bad_gateway", code="502")

    def test_dropped_connection_is_unknown_and_found_by_reference(
        self, make_gateway: MakeGateway, emulator_address: str, sandbox: SandboxState, new_message: Any
    ) -> None:
        gateway = make_gateway(emulator_address)
        gateway.send(new_message())  # another message in the same listing
        self._ambiguous(gateway, sandbox, new_message(), outcome="drop", code="dropped")

    def _ambiguous(self, gateway: Gateway, sandbox: SandboxState, message: Message, *, outcome: str, code: str) -> None:
        sandbox.script(destination(message), [outcome])
        with pytest.raises(Unknown) as caught:
            gateway.send(message)
        assert type(caught.value) is Unknown and caught.value.code == code
        [entry] = accepted(sandbox, message)
        assert entry.outcome == outcome  # the provider kept it: resending would be a duplicate
        for narrowing in ({}, {"to": destination(message), "sent_after": datetime.now(UTC) - timedelta(minutes=5)}):
            found = gateway.find_by_reference(message.reference, **narrowing)
            assert found is not None
            assert (found.provider_id, found.reference) == (entry.provider_id, message.reference)

    def test_read_timeout_is_unknown_and_found_by_reference(
        self, make_gateway: MakeGateway, emulator_address: str, sandbox: SandboxState, new_message: Any
    ) -> None:
        message = new_message()
        sandbox.latency = 1.0
        with pytest.raises(Unknown) as caught:
            make_gateway(emulator_address, read_timeout=0.3).send(message)
        assert caught.value.code == "timeout"
        sandbox.latency = 0.0
        [entry] = wait_until(lambda: accepted(sandbox, message))  # accepted once the latency has passed
        found = make_gateway(emulator_address).find_by_reference(message.reference, to=destination(message))
        assert found is not None and found.provider_id == entry.provider_id

    def test_fetch_status_of_an_unknown_id_is_a_lookup_error(
        self, make_gateway: MakeGateway, emulator_address: str
    ) -> None:
        with pytest.raises(StatusLookupError):
            make_gateway(emulator_address).fetch_status(self.unknown_id)

    def test_a_reference_never_sent_is_none(
        self, make_gateway: MakeGateway, emulator_address: str, new_message: Any
    ) -> None:
        gateway = make_gateway(emulator_address)
        gateway.send(new_message())
        assert gateway.find_by_reference("dlv-never-sent") is None

    @pytest.mark.parametrize(
        ("status", "body", "expected", "code"),
        [
            (504, b"Gateway Timeout", Unknown, "504"),
            (502, b"<html>502 Bad Gateway</html>", Unknown, "502"),
            (503, b"Service Unavailable", Transient, "503"),
        ],
    )
    def test_proxy_answers(
        self,
        make_gateway: MakeGateway,
        new_message: Any,
        status: int,
        body: bytes,
        expected: type[DeliveryError],
        code: str,
    ) -> None:
        """A proxy in front of the provider lost its upstream (502, 504: may have accepted) or is busy."""
        transport = httpx.MockTransport(lambda _: httpx.Response(status, content=body))
        with pytest.raises(expected) as caught:
            make_gateway("https://provider.test", transport=transport).send(new_message())
        assert type(caught.value) is expected and caught.value.code == code

    @pytest.mark.parametrize("status", [200, 201, 202])
    def test_an_unreadable_acceptance_is_unknown(
        self, make_gateway: MakeGateway, new_message: Any, status: int
    ) -> None:
        transport = httpx.MockTransport(lambda _: httpx.Response(status, content=b"<html>maintenance</html>"))
        with pytest.raises(Unknown):
            make_gateway("https://provider.test", transport=transport).send(new_message())


class WebhookContract:
    """Providers that post status webhooks."""

    def test_the_sample_verifies_and_decodes(
        self, make_gateway: MakeGateway, closed_address: str, signed_document: Any, webhook_sample: Any
    ) -> None:
        gateway = make_gateway(closed_address)
        events = gateway.parse_webhook(signed_document(webhook_sample))
        assert events
        for event in events:
            assert_event(event, gateway.provider)

    def test_forged_or_unsigned_webhooks_are_refused(
        self, make_gateway: MakeGateway, closed_address: str, forged_webhooks: list[WebhookRequest]
    ) -> None:
        gateway = make_gateway(closed_address)
        assert forged_webhooks
        for request in forged_webhooks:
            with pytest.raises(WebhookAuthError):
                gateway.parse_webhook(request)

    @pytest.mark.parametrize("body", [b"", b"not json", b"\xff\xfe", b'"a string"', b"17"])
    def test_bodies_that_are_not_the_providers_json_are_format_errors(
        self, make_gateway: MakeGateway, closed_address: str, signed_raw: Any, body: bytes
    ) -> None:
        with pytest.raises(WebhookFormatError):
            make_gateway(closed_address).parse_webhook(signed_raw(body))

    def test_other_events_change_nothing(
        self, make_gateway: MakeGateway, closed_address: str, signed_document: Any, other_event_sample: Any
    ) -> None:
        assert make_gateway(closed_address).parse_webhook(signed_document(other_event_sample)) == []


class ReplayContract:
    """Providers that sign a timestamp: an old signature is a replay."""

    def test_stale_signatures_are_replays(
        self, make_gateway: MakeGateway, closed_address: str, stale_webhooks: list[WebhookRequest]
    ) -> None:
        gateway = make_gateway(closed_address)
        assert stale_webhooks
        for request in stale_webhooks:
            with pytest.raises(WebhookAuthError, match="replay"):
                gateway.parse_webhook(request)
