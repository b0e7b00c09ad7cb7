"""structlog configuration: one JSON object per line on stderr, pretty on a terminal.

Events are dotted names (``session.logon``) with key/value context. Message text, passwords,
OTPs and keys are never logged: they go to the encrypted journal or nowhere. As a second line of
defence, :func:`scrub` drops any event key that names a secret.
"""

from __future__ import annotations

import json as _json
import logging
import sys
from typing import Any

import structlog

from msc.reasons import explain

SECRET_KEYS = frozenset(("password", "passwd", "otp", "totp", "secret", "key", "text", "payload", "token"))


def scrub(_logger, _name, event_dict):
    for k in list(event_dict):
        if k in SECRET_KEYS:
            event_dict[k] = "[redacted]"
    return event_dict


def outage(exc: BaseException) -> bool:
    """Is ``exc`` a database or network outage (expected during a failover: a refused or lost
    connection, a timeout, "the database system is starting up"), not a bug? SQLSTATE class 08
    (connection exception) and 57P (operator intervention: shutdown, crash, cannot connect now)."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and (state.startswith("08") or state.startswith("57P"))


def library_exception(_logger, _name, event_dict):
    """A library's log record with an exception (asyncpg's pool: "Failed to restore the pool
    connection floor; retrying" at every retry while PostgreSQL is down) stays one JSON line: an
    outage is its error's class and message (``error``), anything else keeps its traceback as
    one string (``exception``) — never a multi-line traceback between the JSON lines."""
    exc = event_dict.pop("exc_info", None)
    if exc is True:
        exc = sys.exc_info()
    if isinstance(exc, BaseException):
        exc = (type(exc), exc, exc.__traceback__)
    if isinstance(exc, tuple) and exc[1] is not None:
        event_dict["error"] = explain(exc[1])
        if not outage(exc[1]):
            import traceback

            event_dict["exception"] = "".join(traceback.format_exception(*exc))
    return event_dict


def utf8_dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` for the JSON log lines: non-ASCII text as itself, in UTF-8 (``"a → b"``,
    ``"José"``), so that ``grep '→'`` finds a ``config.reloaded`` change — not ``\\u2192``.
    Control characters (a newline in a reason) stay escaped, so an event is always one line. A
    string that is not valid Unicode (a lone surrogate: bytes of a file name decoded with
    ``surrogateescape``) cannot be written as UTF-8: that line falls back to ASCII escapes, never an
    encoding error on the log stream."""
    text = _json.dumps(obj, ensure_ascii=False, **kw)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _json.dumps(obj, **kw)
    return text


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
    renderer = structlog.processors.JSONRenderer(utf8_dumps) if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library (asyncpg's pool, asyncio): the same stream and
    # format, warnings and above, one line per record (OPERATIONS.md "Logs").
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"), scrub, library_exception],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    handler._msc = True  # type: ignore[attr-defined]  # (a second configure() replaces only its own)
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_msc", False)]:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, getattr(logging, level.upper(), logging.INFO)))
