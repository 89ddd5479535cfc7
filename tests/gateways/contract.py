"""What every gateway promises, tested once; each provider's test module subclasses these classes.

- :class:`GatewayContract` (every gateway): a message of the other channel is refused before any call;
  a closed port is ``Transient``; lookups and webhooks of any kind end in our errors only.
- :class:`HttpContract` (the HTTP gateways, against their emulators on real localhost ports): send_many
  answers each message in order (a message of the other channel refused, the others accepted once), a
  closed port is ``Transient`` for each, a paused gateway calls nothing; 429 with
  Retry-After, 500 ``Transient``; 502, a dropped connection and a read timeout ``Unknown`` with the
  oracle showing the acceptance and ``find_by_reference`` finding it; a never-sent reference ``None``;
  504 and an unreadable 2xx ``Unknown`` (httpx.MockTransport); every recorded answer of the emulator,
  mutated or replaced by garbage, ends in our errors only and well-formed results.
- :class:`WebhookContract`: a sample verifies; forged or unsigned ones are ``WebhookAuthError``; bodies
  that are not the provider's JSON are ``WebhookFormatError``; other events change nothing; every
  mutation of a signed sample ends in a WebhookError or well-formed events.
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

import contextlib
import json
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from dispatcher.domain.messages import (
    EmailMessage,
    EventKind,
    FaxMessage,
    Message,
    Receipt,
    StatusEvent,
    WebhookRequest,
)
from dispatcher.domain.states import Channel
from workers.gateways.base import Gateway
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    GatewayError,
    GatewayPaused,
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


def receipt_problems(receipt: object, provider: str) -> list[str]:
    """What is wrong with a Receipt, field by field (empty: nothing)."""
    if not isinstance(receipt, Receipt):
        return [f"not a Receipt: {receipt!r:.100}"]
    checks = {
        "provider": receipt.provider == provider,
        "provider_id": isinstance(receipt.provider_id, str) and bool(receipt.provider_id),
        "status": isinstance(receipt.status, str),
        "accepted_at": receipt.accepted_at.tzinfo is not None,
    }
    return [f"{field}={getattr(receipt, field)!r:.60}" for field, ok in checks.items() if not ok]


def event_problems(event: object, provider: str) -> list[str]:
    """What is wrong with a StatusEvent, field by field: each must have the type the ledger stores."""
    if not isinstance(event, StatusEvent):
        return [f"not a StatusEvent: {event!r:.100}"]
    texts = ("reference", "error_code", "setting", "detail", "remote_station_id", "event_id")
    checks = {
        "provider": event.provider == provider,
        "provider_id": isinstance(event.provider_id, str),
        "kind": isinstance(event.kind, EventKind),
        "occurred_at": isinstance(event.occurred_at, datetime) and event.occurred_at.tzinfo is not None,
        "error_class": event.error_class in (None, "transient", "permanent", "configuration"),
        "pages": event.pages is None or (isinstance(event.pages, int) and not isinstance(event.pages, bool)),
        "duration_secs": event.duration_secs is None or isinstance(event.duration_secs, float),
        **{field: getattr(event, field) is None or isinstance(getattr(event, field), str) for field in texts},
    }
    return [f"{field}={getattr(event, field)!r:.60}" for field, ok in checks.items() if not ok]


def assert_event(event: object, provider: str) -> None:
    assert event_problems(event, provider) == []


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

    def test_an_unreachable_provider_fails_the_credential_check_as_a_transport_failure(
        self, make_gateway: MakeGateway, closed_address: str
    ) -> None:
        """Start-up warns and starts on a network failure: it must not look like refused credentials."""
        with pytest.raises(DeliveryError) as caught:
            make_gateway(closed_address).check_credentials()
        assert not isinstance(caught.value, ConfigurationFault)
        assert caught.value.code == "connect"

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

    def test_credentials_the_emulator_accepts_pass_the_check(
        self, make_gateway: MakeGateway, emulator_address: str
    ) -> None:
        assert make_gateway(emulator_address).check_credentials() is None

    def test_send_many_answers_each_message_in_its_order(
        self, make_gateway: MakeGateway, emulator_address: str, sandbox: SandboxState, new_message: Any
    ) -> None:
        gateway = make_gateway(emulator_address)
        other = AN_EMAIL if gateway.channel is Channel.FAX else A_FAX
        messages = [new_message(), other, new_message()]
        first, refused, last = gateway.send_many(messages)
        assert isinstance(refused, Permanent) and refused.code == "channel"
        for message, outcome in ((messages[0], first), (messages[2], last)):
            assert receipt_problems(outcome, gateway.provider) == []
            [entry] = accepted(sandbox, message)
            assert isinstance(outcome, Receipt) and entry.provider_id == outcome.provider_id

    def test_send_many_to_a_closed_port_is_transient_for_each(
        self, make_gateway: MakeGateway, closed_address: str, new_message: Any
    ) -> None:
        outcomes = make_gateway(closed_address).send_many([new_message(), new_message()])
        # one message at a time: after a send that got no answer the next is not tried (its timeout would
        # be waited out too); through a batch endpoint the one request failed for both
        codes = [(type(o), getattr(o, "code", None)) for o in outcomes]
        assert codes in ([(Transient, "connect")] * 2, [(Transient, "connect"), (Transient, "batch-stopped")])

    def test_send_many_through_a_paused_gateway_calls_nothing(
        self, make_gateway: MakeGateway, emulator_address: str, sandbox: SandboxState, new_message: Any
    ) -> None:
        paused = GatewayPaused("paused (circuit breaker open); nothing sent", code="paused-breaker")

        class Paused:
            def before_send(self, gateway: Gateway) -> bool:
                raise paused

            def after_send(self, gateway: Gateway, outcome: Receipt | DeliveryError, *, trial: bool) -> None:
                raise AssertionError("no call, nothing to count")

        gateway = make_gateway(emulator_address)
        gateway.guard = Paused()
        messages = [new_message(), new_message()]
        assert gateway.send_many(messages) == [paused, paused]
        assert [accepted(sandbox, m) for m in messages] == [[], []]

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

    def test_garbage_answers_end_in_our_errors_only(
        self, make_gateway: MakeGateway, emulator_address: str, new_message: Any
    ) -> None:
        """Every answer the emulator gave, mutated or replaced by garbage, replayed to a fresh gateway."""
        message = new_message()
        recorder = Recorder()
        live = make_gateway(emulator_address, transport=recorder)
        provider_id = live.send(message).provider_id
        operations: dict[str, Callable[[Gateway], object]] = {
            "send": lambda gateway: gateway.send(message),
            "fetch_status": lambda gateway: gateway.fetch_status(provider_id),
            "find_by_reference": lambda gateway: gateway.find_by_reference(
                message.reference, to=destination(message), sent_after=datetime.now(UTC) - timedelta(days=1)
            ),
        }
        failures: list[str] = []
        for name, operation in operations.items():
            recorder.exchanges.clear()
            with contextlib.suppress(GatewayError):  # its answers are what is kept, not its outcome
                operation(live)
            recorded = list(recorder.exchanges)
            for index, exchange in enumerate(recorded):
                for variant in exchange.variants():
                    answers = [variant if i == index else other for i, other in enumerate(recorded)]
                    gateway = make_gateway("http://provider.test", transport=Replay(answers))
                    problem = outcome_problem(name, lambda op=operation, gw=gateway: op(gw), gateway.provider)
                    if problem:
                        failures.append(f"{name}, {exchange.method} {exchange.path} [{variant}]: {problem}")
        assert failures == [], "\n".join(failures[:400]) + f"\n({len(failures)} in all)"


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

    def test_mutated_webhooks_end_in_our_errors_only(
        self, make_gateway: MakeGateway, closed_address: str, signed_document: Any, webhook_sample: Any
    ) -> None:
        gateway = make_gateway(closed_address)
        failures = []
        for variant in mutations(webhook_sample):
            problem = outcome_problem(
                "parse_webhook", lambda v=variant: gateway.parse_webhook(signed_document(v)), gateway.provider
            )
            if problem:
                failures.append(f"[{variant!r:.150}]: {problem}")
        assert failures == [], "\n".join(failures[:400]) + f"\n({len(failures)} in all)"


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


# -- garbage ---------------------------------------------------------------------------------------------

ODD_VALUES: tuple[object, ...] = (None, True, 0, -1, 2**70, 1e308, "", "x", "2021-13-45T25:61:00Z", [], {}, [None])
ODD_STATUSES = (200, 201, 202, 204, 301, 400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504)
ODD_BODIES = (b"", b"<html>oops</html>", b"null", b"[]", b"{}", b'{"data": null}', b"\xff\xfe\x00", b"{" * 2000)
ODD_HEADERS = (
    {"retry-after": "soon"},
    {"retry-after": "-5"},
    {"retry-after": "1e400"},
    {"retry-after": "nan"},
    {"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"},
    {"retry-after": "Wed, 99 Foo 2015 07:28:00 GMT"},
    {"x-ratelimit-reset": "x"},
    {"x-ratelimit-reset": "1e400"},
    {"x-message-id": ""},
    {"content-type": "application/json; charset=nonsense"},
)
LIST_ITEMS_MUTATED = 2  # list elements descended into: long listings would only repeat the same shapes


def mutations(document: Any) -> Iterator[Any]:
    """The document with one node replaced by each odd value, or one key removed, at every path."""
    yield from ODD_VALUES
    if isinstance(document, dict):
        for key, value in document.items():
            yield {k: v for k, v in document.items() if k != key}
            for variant in mutations(value):
                yield {**document, key: variant}
    elif isinstance(document, list):
        for index, value in enumerate(document[:LIST_ITEMS_MUTATED]):
            for variant in mutations(value):
                yield [*document[:index], variant, *document[index + 1 :]]


@dataclass(frozen=True)
class Exchange:
    """One answer the emulator gave: replayed as recorded, or as a variant."""

    method: str
    path: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    label: str = "recorded"

    def response(self) -> httpx.Response:
        return httpx.Response(self.status, headers=list(self.headers), content=self.body)

    def variants(self) -> Iterator[Exchange]:
        for status in ODD_STATUSES:
            yield self._with(status=status, label=f"status {status}")
        for body in ODD_BODIES:
            yield self._with(body=body, label=f"body {body[:20]!r}")
        for headers in ODD_HEADERS:
            yield self._with(
                status=429 if "retry-after" in headers else self.status, headers=headers, label=str(headers)
            )
        document = _json(self.body)
        if document is not _NOT_JSON:
            for variant in mutations(document):
                yield self._with(body=_dumps(variant), label=f"json {variant!r:.150}")

    def _with(self, *, label: str, **changes: Any) -> Exchange:
        headers = dict(self.headers)
        headers.update(changes.pop("headers", {}))
        values = {"status": self.status, "body": self.body, **changes}
        return Exchange(self.method, self.path, values["status"], tuple(headers.items()), values["body"], label)

    def __str__(self) -> str:
        return self.label


class Recorder(httpx.BaseTransport):
    """Passes requests to the real emulator and keeps each answer."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        headers = tuple(
            (k, v)
            for k, v in response.headers.items()
            if k not in ("content-length", "content-encoding", "transfer-encoding")
        )
        exchange = Exchange(request.method, request.url.path, response.status_code, headers, body)
        self.exchanges.append(exchange)
        return exchange.response()

    def close(self) -> None:
        self.inner.close()


class Replay(httpx.BaseTransport):
    """Answers each request with the next recorded exchange of the same method and path."""

    def __init__(self, exchanges: list[Exchange]) -> None:
        self.exchanges = list(exchanges)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        for exchange in self.exchanges:
            if (exchange.method, exchange.path) == (request.method, request.url.path):
                self.exchanges.remove(exchange)
                return exchange.response()
        return httpx.Response(404, json={})


def outcome_problem(operation: str, call: Callable[[], object], provider: str) -> str | None:
    """None when ``call`` ends as the contract says; otherwise what went wrong."""
    allowed: type[GatewayError] = {
        "send": DeliveryError,
        "fetch_status": StatusLookupError,
        "find_by_reference": StatusLookupError,
        "parse_webhook": WebhookError,
    }[operation]
    try:
        result = call()
    except allowed as err:
        cause = err.__cause__
        if cause is not None and f"unexpected {type(cause).__name__} in {operation}" in str(err):
            # the base class's last resort caught it: the provider module did not handle this answer
            where = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(cause.__traceback__)]
            return f"reached the base boundary from {where[-1]}: {type(cause).__name__}: {str(cause)[:150]}"
        return None
    except Exception as err:  # anything else is a finding
        return f"{type(err).__module__}.{type(err).__name__}: {str(err)[:150]}"
    if operation == "send":
        problems = receipt_problems(result, provider)
    elif operation == "parse_webhook":
        events = result if isinstance(result, list) else [result]
        problems = [problem for event in events for problem in event_problems(event, provider)]
    elif result is None and operation == "find_by_reference":
        problems = []
    else:
        problems = event_problems(result, provider)
    return f"malformed result: {', '.join(problems)}" if problems else None


_NOT_JSON = object()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode()
