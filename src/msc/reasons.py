"""A readable one-line reason for an exception, for a log line, ``/readyz`` or an error msc raises.

``f"{type(exc).__name__}: {exc}"`` reads well for most errors, but several that msc meets at a
database or socket carry no message at all — a timeout (``TimeoutError()``: newcomer7 saw
``"lease database: TimeoutError: "`` in ``/readyz``), a reset or aborted connection — and the
line then ends in a colon. :func:`describe` says what such an error means (and the bound that
ran out, when the caller knows it), keeping the type in brackets for whoever searches for it.
Pure: no I/O, importable from every msc package.
"""

from __future__ import annotations

import asyncio

#: What an exception without a message means, by type (the first match in this order).
_MEANING: tuple[tuple[type[BaseException], str], ...] = (
    (TimeoutError, "no answer"),  # asyncio.TimeoutError is TimeoutError (Python >= 3.11)
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "the connection was reset"),
    (ConnectionAbortedError, "the connection was aborted"),
    (BrokenPipeError, "the connection was closed by the other end"),
    (asyncio.IncompleteReadError, "the connection closed in the middle of an answer"),
    (EOFError, "the connection closed in the middle of an answer"),
    (asyncio.CancelledError, "cancelled"),
)

MAX_CHARS = 300


def message(exc: BaseException) -> str:
    """The exception's own message on one line (whitespace runs, a DETAIL's line breaks, made
    single spaces), at most :data:`MAX_CHARS`; "" when it has none."""
    return " ".join(str(exc).split())[:MAX_CHARS]


def explain(exc: BaseException, *, bound_s: float | None = None, doing: str | None = None) -> str:
    """``"TypeName: its message"``; for an exception with an empty message, what it means and its
    type: ``"no answer within 5 s while connecting (TimeoutError)"``.

    ``bound_s``: the time limit that ran out (seconds), said for a timeout; ``doing``: what was
    being done (``"while connecting"``), said only when the message is empty (a message says it).
    """
    name = type(exc).__name__
    text = message(exc)
    if text:
        return f"{name}: {text}"
    meaning = next((m for t, m in _MEANING if isinstance(exc, t)), "no reason given")
    if isinstance(exc, TimeoutError) and bound_s is not None:
        meaning += f" within {bound_s:g} s"
    if doing:
        meaning += f" {doing}"
    return f"{meaning} ({name})"
