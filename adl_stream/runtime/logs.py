"""structlog set-up: JSON lines in production, key=value on a terminal; secrets never logged."""

from __future__ import annotations

import logging
import sys

import structlog

from .config import SECRET_MARKERS


def _drop_secrets(_, __, event_dict):
    for key in list(event_dict):
        if any(marker in key.lower() for marker in SECRET_MARKERS):
            event_dict[key] = "***"
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
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
