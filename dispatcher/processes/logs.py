"""Logging for every `dispatch` process, from DISPATCH_LOG_LEVEL and DISPATCH_LOG_FORMAT.

Every record, ours, Celery's, Alembic's and uvicorn's alike, reaches the root logger's one handler:
plain text lines by default, or one JSON object a line (python-json-logger) with ``time``, ``level``,
``logger`` and ``message``. The handler redacts the token of signed document URLs
(``/media/<token>.pdf``): whoever holds one may fetch the letter until the token expires; and of
unsubscribe links (``/unsubscribe/<token>``): whoever holds one may unsubscribe that supporter.
"""

from __future__ import annotations

import logging
import logging.config
import re
from pathlib import Path
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from dispatcher.domain.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
MEDIA_TOKEN = re.compile(r"(/media/)[^/\s?#\"']+?(\.pdf)")
UNSUBSCRIBE_TOKEN = re.compile(r"(/unsubscribe/)[^/\s?#\"']+")

# loggers held at WARNING whatever the level: what they say below it is noise or personal data
QUIETER = {
    "fontTools": "fontTools (inside the PDF renderer) logs every glyph subset at INFO",
    "mail.log": "aiosmtpd (the sandbox's SMTP sink) logs every envelope address at INFO",
}
# uvicorn's loggers: `dispatch web` skips uvicorn's own configuration, so they reach the root handler
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class RedactMediaTokens(logging.Filter):
    """Replace the token of every ``/media/<token>.pdf`` and ``/unsubscribe/<token>`` in a record's message
    with ``<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = UNSUBSCRIBE_TOKEN.sub(r"\1<redacted>", MEDIA_TOKEN.sub(r"\1<redacted>\2", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(settings: Settings, *, file: Path | None = None) -> None:
    """Send every logger's records, and Python's warnings, to stderr (or ``file``) at the settings' level
    and format."""
    logging.config.dictConfig(logging_config(settings, file=file))
    logging.captureWarnings(True)


def logging_config(settings: Settings, *, file: Path | None = None) -> dict[str, Any]:
    """The dictConfig for ``configure_logging``."""
    destination: dict[str, Any] = (
        {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
        if file is None
        else {"class": "logging.FileHandler", "filename": str(file), "encoding": "utf-8"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"media_tokens": {"()": RedactMediaTokens}},
        "formatters": {
            "text": {"format": TEXT_FORMAT, "datefmt": DATE_FORMAT},
            "json": {
                "()": JsonFormatter,
                "fmt": JSON_FIELDS,
                "datefmt": DATE_FORMAT,
                "rename_fields": JSON_NAMES,
                "reserved_attrs": [*RESERVED_ATTRS, "color_message"],  # uvicorn's copy of the message, in ANSI
            },
        },
        "handlers": {"main": {**destination, "formatter": settings.log_format, "filters": ["media_tokens"]}},
        "root": {"level": settings.log_level, "handlers": ["main"]},
        "loggers": {
            **{name: {"level": "WARNING"} for name in QUIETER},
            **{name: {"level": "NOTSET", "handlers": [], "propagate": True} for name in UVICORN},
        },
    }


def leave_celery_logging_alone() -> None:
    """Keep Celery from configuring logging in a worker (main process and pool children alike).

    Celery sets up its own handlers unless its ``setup_logging`` signal has a receiver; with this
    one, its loggers propagate to the root handler that ``configure_logging`` set.
    """
    from celery import signals

    signals.setup_logging.connect(_configured_already, weak=False, dispatch_uid="dispatch-logging")


def _configured_already(**_: object) -> None:
    """Celery's setup_logging receiver: configure_logging ran before the worker started."""
