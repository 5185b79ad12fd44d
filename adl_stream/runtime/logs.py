"""structlog set-up: JSON lines in production, key=value on a terminal; secrets never logged;
decimals written exactly without trailing zeros; librdkafka's own log lines as structlog events."""

from __future__ import annotations

import logging
import re
import sys
from decimal import Decimal

import structlog

from ..readable import plain
from .config import SECRET_MARKERS


def _drop_secrets(_, __, event_dict):
    for key in list(event_dict):
        if any(marker in key.lower() for marker in SECRET_MARKERS):
            event_dict[key] = "***"
    return event_dict


def _plain_decimals(_, __, event_dict):
    """``fund_covered=Decimal('0E-18')`` is logged as ``"0"`` (exact, see :mod:`..readable`)."""
    for key, value in event_dict.items():
        if isinstance(value, (Decimal, dict, list, tuple)):
            event_dict[key] = plain(value)
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        _plain_decimals,
        structlog.processors.StackInfoRenderer(),
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


_THREAD = re.compile(r"^\[thrd:([^\]]*)\]: ")


class LibrdkafkaLog:
    """confluent-kafka's ``logger`` hook (a client property): librdkafka calls
    ``log(level, "%s [%s] %s", facility, client, message)`` with a :mod:`logging` level, from the
    thread that polls the client, and each line becomes a ``librdkafka`` event of structlog
    instead of raw ``%3|...|FAIL|...`` text on stderr."""

    def log(self, level: int, _format: str, facility: str, client: str, message: str) -> None:
        match = _THREAD.match(message)
        thread, message = (match.group(1), message[match.end():]) if match else (None, message)
        structlog.get_logger("librdkafka").log(level, "librdkafka", facility=facility, client=client,
                                               thread=thread, message=message)


#: The one instance every client gets (``logger`` in the configs of :mod:`.kafka`).
LIBRDKAFKA_LOG = LibrdkafkaLog()
