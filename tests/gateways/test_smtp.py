"""The SMTP gateway against a real SMTP server on localhost (the aiosmtpd sink), faults included."""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from dispatcher.domain.messages import EmailMessage
from workers.gateways import registry
from workers.gateways.email import smtp
from workers.gateways.email.smtp import SmtpGateway, SmtpSettings
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    GatewayConfigError,
    Permanent,
    StatusLookupError,
    Transient,
    Unknown,
)
from workers.sandbox.server import free_port
from workers.sandbox.smtp_sink import SmtpSink

from .contract import GatewayContract, outcome_problem

pytestmark = pytest.mark.timeout(30)

SENDER = "Advocacy Team <advocacy@example.org>"
OFFICIAL = "minister@gov.example"
COPY = "copies@ngo.example"
_references = itertools.count(1)


def letter(
    reference: str = "dlv-1", *, to: tuple[str, ...] = (OFFICIAL,), cc: tuple[str, ...] = (COPY,)
) -> EmailMessage:
    return EmailMessage(
        sender=SENDER,
        to=to,
        cc=cc,
        subject="Urgent: release the detainees",
        text="Dear Minister,\n\nWe ask you (致习近平主席) to act.\n",
        html="<p>Dear Minister,</p>",
        reference=reference,
        message_id=f"<{reference}@dispatch.example>",
    )


def _make_gateway(port: int, **overrides: object) -> SmtpGateway:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "plain",
        "timeout": 2.0,
        "helo_name": "dispatch.test",
        **overrides,
    }
    return SmtpGateway(SmtpSettings(**values))  # type: ignore[arg-type]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture
def gateway(sink: SmtpSink) -> Iterator[SmtpGateway]:
    gw = _make_gateway(sink.port)
    yield gw
    gw.close()


@contextmanager
def raw_server(greeting: bytes | None) -> Iterator[int]:
    """A one-connection TCP server that sends ``greeting`` (or nothing) and then holds the line."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            if greeting is not None:
                conn.sendall(greeting)
            done.wait(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        listener.close()


@contextmanager
def scripted_server(replies: list[bytes]) -> Iterator[int]:
    """A one-connection SMTP stand-in: the first reply is the greeting, then one reply per line received;
    when the replies run out it closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            pending = list(replies)
            conn.sendall(pending.pop(0))
            buffer = b""
            while pending:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n" in buffer and pending:
                    _, buffer = buffer.split(b"\r\n", 1)
                    conn.sendall(pending.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(5)
        listener.close()


# -- success ------------------------------------------------------------------------------------------


def test_send_delivers_text_and_html_with_visible_cc(sink: SmtpSink, gateway: SmtpGateway) -> None:
    receipt = gateway.send(letter())

    assert receipt.provider == "smtp"
    assert gateway.reports_delivery is False  # the engine must not wait for a delivery report
    assert receipt.provider_id == "<dlv-1@dispatch.example>"
    assert receipt.status == "queued"
    [kept] = sink.messages()
    assert kept.message_id == receipt.provider_id
    assert kept.mail_from == "advocacy@example.org"
    assert kept.rcpt_tos == (OFFICIAL, COPY)
    assert kept.message["To"] == OFFICIAL
    assert kept.message["Cc"] == COPY
    text = kept.message.get_body(preferencelist=("plain",))
    html = kept.message.get_body(preferencelist=("html",))
    assert text is not None and "致习近平主席" in text.get_content()
    assert html is not None and "<p>Dear Minister,</p>" in html.get_content()
    assert [(e.reference, e.destination) for e in sink.state.oracle()] == [("dlv-1", OFFICIAL), ("dlv-1", COPY)]


def test_message_id_is_stable_across_attempts(sink: SmtpSink, gateway: SmtpGateway) -> None:
    sink.script(OFFICIAL, ["rate_limited"])
    with pytest.raises(Transient):
        gateway.send(letter(cc=()))
    receipt = gateway.send(letter(cc=()))

    [kept] = sink.messages()
    assert kept.message["Message-ID"] == receipt.provider_id == "<dlv-1@dispatch.example>"


def test_missing_message_id_is_made_from_reference_and_local_domain(sink: SmtpSink) -> None:
    gw = _make_gateway(sink.port, local_domain="mail.dispatch.example")
    try:
        receipt = gw.send(
            EmailMessage(sender=SENDER, to=[OFFICIAL], subject="s", text="t", reference="dlv-9", message_id="")
        )
    finally:
        gw.close()
    assert receipt.provider_id == "<dlv-9@mail.dispatch.example>"
    assert sink.messages()[0].message["Message-ID"] == receipt.provider_id


def test_one_connection_serves_several_sends(sink: SmtpSink, gateway: SmtpGateway) -> None:
    gateway.send(letter("dlv-1"))
    gateway.send(letter("dlv-2"))

    assert sink.sessions == 1
    assert [m.session for m in sink.messages()] == [1, 1]


def test_concurrent_sends_share_the_connection_safely(sink: SmtpSink, gateway: SmtpGateway) -> None:
    errors: list[BaseException] = []

    def send_five(worker: int) -> None:
        for i in range(5):
            try:
                gateway.send(letter(f"dlv-{worker}-{i}", cc=()))
            except BaseException as err:  # collected: an exception in a thread would pass silently
                errors.append(err)

    threads = [threading.Thread(target=send_five, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert errors == []
    assert sink.sessions == 1
    assert len({m.message_id for m in sink.messages()}) == 20


def test_reconnects_when_the_server_dropped_the_connection(sink: SmtpSink, gateway: SmtpGateway) -> None:
    gateway.send(letter("dlv-1"))
    port = sink.port
    sink.stop()  # closes the pooled connection from the server side
    with SmtpSink(port=port) as restarted:
        receipt = gateway.send(letter("dlv-2"))
        assert restarted.sessions == 1
        assert [m.message_id for m in restarted.messages()] == [receipt.provider_id]


def test_a_connection_used_just_now_is_not_asked_noop_before_the_next_message(
    sink: SmtpSink, gateway: SmtpGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway.send(letter("dlv-1"))
    noops: list[int] = []
    conn = gateway._conn
    assert conn is not None
    answer = conn.noop
    monkeypatch.setattr(conn, "noop", lambda: noops.append(1) or answer())
    gateway.send(letter("dlv-2"))
    assert noops == []  # used a moment ago: taken as it is
    gateway._used -= smtp.IDLE_CHECK_SECONDS + 1  # as if idle since
    gateway.send(letter("dlv-3"))
    assert noops == [1]  # idle: checked first
    assert sink.sessions == 1 and len(sink.messages()) == 3


def test_a_repeated_recipient_gets_one_rcpt(sink: SmtpSink, gateway: SmtpGateway) -> None:
    gateway.send(letter(to=(OFFICIAL,), cc=(OFFICIAL.upper(),)))

    assert sink.messages()[0].rcpt_tos == (OFFICIAL,)


# -- refusals -----------------------------------------------------------------------------------------


def test_4xx_at_rcpt_is_transient_and_sends_nothing(sink: SmtpSink, gateway: SmtpGateway) -> None:
    sink.script(OFFICIAL, ["rate_limited"])
    with pytest.raises(Transient) as caught:
        gateway.send(letter(cc=()))

    assert caught.value.code == "451"
    assert sink.messages() == []
    assert sink.state.oracle() == []


def test_authentication_required_at_rcpt_is_a_configuration_fault(sink: SmtpSink, gateway: SmtpGateway) -> None:
    """A relay that wants AUTH answers 530 (RFC 4954) where we sent none: our settings, not the address."""
    sink.script(OFFICIAL, ["unauthorized"])
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(letter(cc=()))

    assert caught.value.code == "530"
    assert sink.messages() == []


def test_5xx_at_rcpt_is_permanent(sink: SmtpSink, gateway: SmtpGateway) -> None:
    sink.script(OFFICIAL, ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(letter(cc=()))

    assert caught.value.code == "550"
    assert sink.messages() == []


def test_refused_copy_still_makes_a_receipt(sink: SmtpSink, gateway: SmtpGateway) -> None:
    sink.script(COPY, ["invalid_number"])
    receipt = gateway.send(letter())

    assert receipt.raw["accepted"] == [OFFICIAL]
    assert receipt.raw["refused"][COPY]["code"] == 550
    assert sink.messages()[0].rcpt_tos == (OFFICIAL,)


def test_refused_addressee_aborts_before_data_even_if_copies_were_accepted(
    sink: SmtpSink, gateway: SmtpGateway
) -> None:
    sink.script(OFFICIAL, ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(letter())

    assert caught.value.code == "550"
    assert sink.messages() == []  # the copy was accepted at RCPT but never sent a letter
    assert sink.state.oracle() == []


# -- connection faults --------------------------------------------------------------------------------


def test_421_greeting_is_transient() -> None:
    with raw_server(b"421 4.3.2 Too busy, try later\r\n") as port, pytest.raises(Transient) as caught:
        _make_gateway(port).send(letter())

    assert caught.value.code == "421"


def test_silent_server_times_out_as_transient() -> None:
    with raw_server(None) as port, pytest.raises(Transient) as caught:
        _make_gateway(port, timeout=0.3).send(letter())

    assert caught.value.code == "connect"
    assert caught.value.__cause__ is not None


def test_drop_after_data_is_unknown_although_the_server_accepted_it(sink: SmtpSink, gateway: SmtpGateway) -> None:
    sink.script(OFFICIAL, ["drop"])
    with pytest.raises(Unknown) as caught:
        gateway.send(letter(cc=()))

    assert caught.value.__cause__ is not None
    # The server kept the letter: resending on Unknown would deliver it twice.
    assert sink.state.sends_per_reference() == {"dlv-1": 1}
    assert sink.messages()[0].message_id == "<dlv-1@dispatch.example>"


def test_timeout_waiting_for_the_final_reply_is_unknown(sink: SmtpSink) -> None:
    sink.state.latency = 1.5
    gw = _make_gateway(sink.port, timeout=0.3)
    try:
        with pytest.raises(Unknown):
            gw.send(letter(cc=()))
    finally:
        gw.close()
    assert sink.state.sends_per_reference() == {"dlv-1": 1}


OK = b"220 ready\r\n"
EHLO = b"250 sink.test\r\n"


@pytest.mark.parametrize(
    "replies",
    [
        [b"garbage\r\n"],
        [b"220-first line of a greeting that never ends\r\n"],
        [b"220 " + b"x" * 9000 + b"\r\n"],
        [OK, b"\xff\xfe\x00\r\n"],
        [OK, b"250-sink.test\r\n250-SIZE abc\r\n250 AUTH \xff\r\n", b"999 what\r\n"],
        [OK, EHLO, b"250 " + b"y" * 9000 + b"\r\n"],
        [OK, EHLO, b"250 sender ok\r\n", b"abc\r\n"],
        [OK, EHLO, b"250 sender ok\r\n", b"250 rcpt ok\r\n", b"250 not the 354 DATA wants\r\n"],
        [OK, EHLO, b"250 sender ok\r\n", b"250 rcpt ok\r\n", b"354 go on\r\n"],  # then silence, then close
    ],
    ids=["greeting", "endless-greeting", "long-greeting", "ehlo", "mail", "long-reply", "rcpt", "data", "after-data"],
)
def test_garbage_replies_end_in_our_errors_only(replies: list[bytes]) -> None:
    outcome: list[object] = []

    def send() -> object:
        try:
            outcome.append(gateway.send(letter(cc=())))
        except Exception as err:
            outcome.append(err)
            raise
        return outcome[-1]

    with scripted_server(replies) as port:
        gateway = _make_gateway(port, timeout=2.0)
        try:
            problem = outcome_problem("send", send, "smtp")
        finally:
            gateway.close()
    assert problem is None
    [error] = outcome
    assert isinstance(error, DeliveryError), error  # no reply here accepts the letter
    assert error.code != "unexpected", error  # each phase maps its own failures


def test_starttls_required_but_not_offered_is_a_configuration_fault_never_plaintext(sink: SmtpSink) -> None:
    gw = _make_gateway(sink.port, security="starttls")
    with pytest.raises(ConfigurationFault) as caught:
        gw.send(letter())

    assert caught.value.code == "starttls"
    assert "DISPATCH_SMTP_SECURITY" in str(caught.value)
    assert sink.messages() == []


# -- authentication -----------------------------------------------------------------------------------


@pytest.fixture
def auth_sink() -> Iterator[SmtpSink]:
    with SmtpSink(username="dispatch", password="s3cret") as running:
        yield running


def test_the_credential_check_logs_in_and_sends_nothing(auth_sink: SmtpSink) -> None:
    gw = _make_gateway(auth_sink.port, username="dispatch", password="s3cret")
    try:
        assert gw.check_credentials() is None
    finally:
        gw.close()
    assert auth_sink.sessions == 1 and auth_sink.messages() == []


def test_refused_credentials_fail_the_credential_check_naming_the_settings(auth_sink: SmtpSink) -> None:
    gw = _make_gateway(auth_sink.port, username="dispatch", password="wrong")
    with pytest.raises(ConfigurationFault) as caught:
        gw.check_credentials()
    assert str(caught.value) == (
        "DISPATCH_SMTP_USERNAME and DISPATCH_SMTP_PASSWORD were refused by smtp "
        "(535 5.7.8 Authentication credentials invalid)"
    )


def test_auth_with_the_right_credentials_sends(auth_sink: SmtpSink) -> None:
    gw = _make_gateway(auth_sink.port, username="dispatch", password="s3cret")
    try:
        gw.send(letter())
    finally:
        gw.close()
    assert len(auth_sink.messages()) == 1


def test_auth_failure_is_a_configuration_fault_naming_the_settings(auth_sink: SmtpSink) -> None:
    gw = _make_gateway(auth_sink.port, username="dispatch", password="wrong")
    with pytest.raises(ConfigurationFault) as caught:
        gw.send(letter())

    assert caught.value.code == "535"
    assert caught.value.setting == "DISPATCH_SMTP_USERNAME and DISPATCH_SMTP_PASSWORD"
    assert "DISPATCH_SMTP_USERNAME" in str(caught.value)
    assert "DISPATCH_SMTP_PASSWORD" in str(caught.value)
    assert "wrong" not in str(caught.value)
    assert auth_sink.messages() == []


# -- configuration and status -------------------------------------------------------------------------


def test_missing_host_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPATCH_SMTP_HOST", raising=False)
    with pytest.raises(GatewayConfigError, match="DISPATCH_SMTP_HOST"):
        registry.build_gateway("smtp")


def test_username_without_password_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("DISPATCH_SMTP_USERNAME", "dispatch")
    monkeypatch.delenv("DISPATCH_SMTP_PASSWORD", raising=False)
    with pytest.raises(GatewayConfigError, match="DISPATCH_SMTP_PASSWORD"):
        registry.build_gateway("smtp")


def test_registry_builds_from_the_environment(monkeypatch: pytest.MonkeyPatch, sink: SmtpSink) -> None:
    for var in ("USERNAME", "PASSWORD", "LOCAL_DOMAIN"):
        monkeypatch.delenv(f"DISPATCH_RELAY_{var}", raising=False)
    monkeypatch.setenv("DISPATCH_RELAY_HOST", sink.host)
    monkeypatch.setenv("DISPATCH_RELAY_PORT", str(sink.port))
    monkeypatch.setenv("DISPATCH_RELAY_SECURITY", "plain")
    monkeypatch.setenv("DISPATCH_RELAY_TIMEOUT", "2")
    gw = registry.build_gateway("relay", provider="smtp")
    try:
        assert isinstance(gw, SmtpGateway)
        gw.send(letter())
    finally:
        gw.close()
    assert len(sink.messages()) == 1


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., SmtpGateway]]:
    """An SMTP gateway at "host:port"; ``read_timeout`` is smtplib's timeout."""
    made: list[SmtpGateway] = []

    def make(address: str, *, read_timeout: float = 2.0) -> SmtpGateway:
        made.append(_make_gateway(int(address.rpartition(":")[2]), timeout=read_timeout))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


@pytest.fixture
def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def new_message() -> Callable[[], EmailMessage]:
    return lambda: letter(f"dlv-{next(_references)}")


class TestContract(GatewayContract):
    """The behaviour every gateway shares (contract.py), for SMTP."""


def test_status_lookups_refuse_rather_than_guess() -> None:
    gw = _make_gateway(free_port())
    with pytest.raises(StatusLookupError, match="operator"):
        gw.fetch_status("<dlv-1@dispatch.example>")
    with pytest.raises(StatusLookupError, match="operator"):
        gw.find_by_reference("dlv-1")
