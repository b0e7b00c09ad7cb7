"""structlog configuration: one JSON object per line on stderr, pretty on a terminal.

Events are dotted names (``session.logon``) with key/value context. Message text, passwords,
OTPs and keys are never logged: they go to the encrypted journal or nowhere. As a second line of
defence, :func:`scrub` drops any event key that names a secret.
"""

from __future__ import annotations

import logging
import sys

import structlog

SECRET_KEYS = frozenset(("password", "passwd", "otp", "totp", "secret", "key", "text", "payload", "token"))


def scrub(_logger, _name, event_dict):
    for k in list(event_dict):
        if k in SECRET_KEYS:
            event_dict[k] = "[redacted]"
    return event_dict


def configure(*, level: str = "info", json: bool | None = None, stream=None) -> None:
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        scrub,
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
