"""The gateway base's error boundary: what it lets through and what it keeps out of messages and logs."""

from __future__ import annotations

import logging

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from dispatcher.domain.messages import EmailMessage, Message, Receipt
from workers.gateways.email.smtp import SmtpGateway
from workers.gateways.errors import Unknown
from workers.gateways.registry import build_gateway

ADDRESS = "ada.supporter@example.net"


def message() -> EmailMessage:
    return EmailMessage(
        sender="Advocacy <desk@advocacy.example>",
        to=[ADDRESS],
        subject="Copy",
        text="Dear Ada,",
        reference="d0123456789abcdef0123456789abcde",
        message_id="<d0123456789abcdef0123456789abcde@advocacy.example>",
    )


def raising(error: BaseException) -> SmtpGateway:
    """The real SMTP gateway, whose own send step raises ``error`` (a bug, or the task's time limit)."""

    class Raising(SmtpGateway):
        def _send_email(self, message: Message) -> Receipt:  # type: ignore[override]
            raise error

    settings = build_gateway("smtp", host="127.0.0.1", port=2525, security="plain").settings
    return Raising(settings, name="smtp")


def test_the_task_time_limit_passes_through_to_end_the_task() -> None:
    """Celery's soft time limit must reach the worker path, which records the send as unknown and ends
    the task; turned into a delivery outcome here, the task would go on with its next delivery."""
    with pytest.raises(SoftTimeLimitExceeded):
        raising(SoftTimeLimitExceeded()).send(message())


def test_an_unexpected_error_is_unknown_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    """Only the exception's class is kept: its text may hold a supporter's address."""
    with caplog.at_level(logging.DEBUG), pytest.raises(Unknown) as caught:
        raising(ValueError(f"bad recipient {ADDRESS}")).send(message())
    assert caught.value.code == "unexpected"
    assert "ValueError" in str(caught.value)
    assert ADDRESS not in str(caught.value)
    assert "unexpected ValueError in send" in caplog.text
    assert ADDRESS not in caplog.text
