"""The gateway base's send_many: chunks, channel refusals, the guard once per request, the error boundary.

A provider stands in for the batch endpoint here (its hook answers from a script and keeps each request);
the Postmark tests run the same path over real HTTP against the emulator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from pydantic_settings import BaseSettings

from dispatcher.domain.messages import EmailMessage, FaxMessage, Message, Receipt
from dispatcher.domain.states import Channel
from workers.gateways.base import Gateway
from workers.gateways.errors import DeliveryError, GatewayPaused, Permanent, Transient, Unknown

ADDRESS = "ada.supporter@example.net"
A_FAX = FaxMessage(to="+4930123456", from_number="+4930999999", pdf=b"%PDF-1.4\n%%EOF", page_count=1, reference="r-fax")


class NoSettings(BaseSettings):
    pass


def email(n: int) -> EmailMessage:
    return EmailMessage(
        sender="desk@advocacy.example",
        to=[f"supporter{n}@example.net"],
        subject="Copy",
        text="Dear supporter,",
        reference=f"r-{n}",
        message_id=f"<r-{n}@advocacy.example>",
    )


def receipt(message: EmailMessage) -> Receipt:
    return Receipt(
        provider="batchy", provider_id=f"id-{message.reference}", accepted_at=datetime.now(UTC), status="Sent", raw={}
    )


Answer = Callable[[Sequence[EmailMessage]], Sequence[Receipt | DeliveryError]]


class Batchy(Gateway):
    """A provider with a batch endpoint of three messages; its answer is scripted per test."""

    provider: ClassVar[str] = "batchy"
    channel: ClassVar[Channel] = Channel.EMAIL
    settings_class: ClassVar[type[BaseSettings]] = NoSettings
    max_batch: ClassVar[int] = 3

    def __init__(self, answer: Answer | None = None) -> None:
        super().__init__(NoSettings())
        self.answer: Answer = answer or (lambda emails: [receipt(e) for e in emails])
        self.requests: list[list[str]] = []  # references per request
        self.singles: list[str] = []

    def _send_email_batch(self, emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
        self.requests.append([e.reference for e in emails])
        return self.answer(emails)

    def _send_email(self, email: EmailMessage) -> Receipt:
        self.singles.append(email.reference)
        if email.reference == "r-1":
            raise Transient("batchy: busy", code="429")
        return receipt(email)


class Guard:
    """A SendGuard that keeps what it was asked and told; ``gates`` answers before_send in turn."""

    def __init__(self, gates: Sequence[bool | DeliveryError] = ()) -> None:
        self.gates = list(gates)
        self.told: list[tuple[Any, bool]] = []
        self.told_together: list[tuple[list[type], bool]] = []  # one per call of after_sends
        self.asked = 0

    def before_send(self, gateway: Gateway) -> bool:
        self.asked += 1
        gate = self.gates.pop(0) if self.gates else False
        if isinstance(gate, DeliveryError):
            raise gate
        return gate

    def after_send(self, gateway: Gateway, outcome: Receipt | DeliveryError, *, trial: bool) -> None:
        self.told.append((outcome, trial))

    def after_sends(self, gateway: Gateway, outcomes: Sequence[Receipt | DeliveryError], *, trial: bool) -> None:
        self.told_together.append(([type(o) for o in outcomes], trial))


def test_without_a_batch_endpoint_each_message_goes_through_send() -> None:
    gateway = Batchy()
    gateway.max_batch = 1  # type: ignore[misc]  # this instance only
    guard = Guard()
    gateway.guard = guard
    outcomes = gateway.send_many([email(0), email(1), A_FAX, email(3)])
    assert gateway.singles == ["r-0", "r-1", "r-3"] and gateway.requests == []
    assert [type(o) for o in outcomes] == [Receipt, Transient, Permanent, Receipt]
    assert isinstance(outcomes[2], Permanent) and outcomes[2].code == "channel"
    # one after the other, as the batch path sends over one SMTP connection: the guard asked once and
    # told every outcome at once (a 429 is an answer: the next message still goes), the fax included
    assert guard.asked == 1 and guard.told == []
    assert guard.told_together == [([Receipt, Transient, Permanent, Receipt], False)]


def test_messages_go_in_requests_of_max_batch_in_order() -> None:
    gateway = Batchy()
    messages = [email(n) for n in range(7)]
    outcomes = gateway.send_many(messages)
    assert gateway.requests == [["r-0", "r-1", "r-2"], ["r-3", "r-4", "r-5"], ["r-6"]]
    assert [o.provider_id for o in outcomes if isinstance(o, Receipt)] == [f"id-r-{n}" for n in range(7)]
    assert gateway.send_many([]) == [] and len(gateway.requests) == 3


def test_a_request_body_cap_splits_too_and_a_larger_message_goes_alone() -> None:
    class Capped(Batchy):
        max_batch_bytes: ClassVar[int | None] = 10

        def _batch_bytes(self, message: Message) -> int:
            return 11 if message.reference == "r-2" else 4

    gateway = Capped()
    gateway.send_many([email(n) for n in range(6)])
    assert gateway.requests == [["r-0", "r-1"], ["r-2"], ["r-3", "r-4"], ["r-5"]]


def test_a_message_of_the_other_channel_is_refused_and_left_out_of_the_request() -> None:
    gateway = Batchy()
    outcomes = gateway.send_many([email(0), A_FAX, email(2)])
    assert gateway.requests == [["r-0", "r-2"]]
    assert isinstance(outcomes[1], Permanent) and outcomes[1].code == "channel"
    assert "(provider batchy) sends email, not fax" in str(outcomes[1])
    assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]


def test_a_paused_gateway_makes_no_request_and_every_message_gets_the_pause() -> None:
    paused = GatewayPaused("batchy: paused (circuit breaker open); nothing sent", code="paused-breaker")
    gateway = Batchy()
    gateway.guard = guard = Guard([paused])
    outcomes = gateway.send_many([email(0), email(1)])
    assert outcomes == [paused, paused] and gateway.requests == [] and guard.told == []


def test_the_breakers_trial_carries_one_message_and_the_guard_is_asked_again_for_the_rest() -> None:
    gateway = Batchy()
    gateway.guard = guard = Guard([True, False])
    outcomes = gateway.send_many([email(n) for n in range(3)])
    assert gateway.requests == [["r-0"], ["r-1", "r-2"]]
    assert [trial for _, trial in guard.told] == [True, False]
    assert all(isinstance(o, Receipt) for o in outcomes)


def test_a_failed_trial_leaves_the_rest_to_the_pause() -> None:
    paused = GatewayPaused("batchy: paused (circuit breaker open); nothing sent", code="paused-breaker")
    timeout = Unknown("batchy: no answer after the request was sent (ReadTimeout)", code="timeout")

    def times_out(emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
        raise timeout

    gateway = Batchy(times_out)
    gateway.guard = guard = Guard([True, paused])
    assert gateway.send_many([email(n) for n in range(3)]) == [timeout, paused, paused]
    assert gateway.requests == [["r-0"]] and guard.told == [(timeout, True)]


def test_a_failure_of_the_whole_request_is_every_messages_outcome_and_counted_once() -> None:
    timeout = Unknown("batchy: no answer after the request was sent (ReadTimeout)", code="timeout")

    def times_out(emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
        raise timeout

    gateway = Batchy(times_out)
    gateway.guard = guard = Guard()
    assert gateway.send_many([email(n) for n in range(5)]) == [timeout] * 5
    assert guard.told == [(timeout, False), (timeout, False)]  # two requests: 3 + 2


def test_an_answered_request_is_told_as_its_first_receipt_else_its_first_refusal() -> None:
    refused = Permanent("batchy: inactive recipient", code="406")

    def mixed(emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
        return [refused if e.reference in ("r-0", "r-3", "r-4") else receipt(e) for e in emails]

    gateway = Batchy(mixed)
    gateway.guard = guard = Guard()
    outcomes = gateway.send_many([email(n) for n in range(5)])
    assert [type(o) for o in outcomes] == [Permanent, Receipt, Receipt, Permanent, Permanent]
    first, second = (told for told, _ in guard.told)
    assert isinstance(first, Receipt) and first.provider_id == "id-r-1"
    assert second is refused


def test_an_answer_without_receipts_is_told_as_a_refusal_before_an_unreadable_entry() -> None:
    unreadable = Unknown("batchy: an entry without its id", code="no_id")
    refused = Permanent("batchy: inactive recipient", code="406")
    gateway = Batchy(lambda emails: [unreadable, refused])
    gateway.guard = guard = Guard()
    assert gateway.send_many([email(0), email(1)]) == [unreadable, refused]
    assert guard.told == [(refused, False)]


def test_an_unexpected_error_is_unknown_for_every_message_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    def broken(emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
        raise KeyError(f"odd answer for {ADDRESS}")

    outcomes = Batchy(broken).send_many([email(0), email(1)])
    assert outcomes[0] is outcomes[1] and isinstance(outcomes[0], Unknown)
    assert outcomes[0].code == "unexpected" and "KeyError in send_many" in str(outcomes[0])
    assert ADDRESS not in str(outcomes[0]) and ADDRESS not in caplog.text


def test_an_answer_that_does_not_pair_with_the_messages_is_unknown_for_all() -> None:
    gateway = Batchy(lambda emails: [receipt(emails[0])])
    outcomes = gateway.send_many([email(0), email(1)])
    assert all(isinstance(o, Unknown) and o.code == "unexpected" for o in outcomes)


def test_the_task_time_limit_passes_through() -> None:
    def limit(emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
        raise SoftTimeLimitExceeded()

    with pytest.raises(SoftTimeLimitExceeded):
        Batchy(limit).send_many([email(0)])
