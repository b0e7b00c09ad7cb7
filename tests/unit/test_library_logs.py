"""Libraries' log records (asyncpg's pool during a database outage) come out as one JSON line each,
like msc's own events: an outage as its error's class and message, anything else with its traceback
inside the line (newcomer6: 9 multi-line asyncpg tracebacks between the JSON lines in 3 s)."""

from __future__ import annotations

import io
import json
import logging

import asyncpg.exceptions as pgx
import pytest

from msc.ops.logging import configure

#: (the exception a library logs with exc_info, is it an outage — one line without traceback)
RAISED = [
    (pgx.CannotConnectNowError("the database system is starting up"), True),
    (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 16432)"), True),
    (TimeoutError(), True),
    (pgx.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
    (pgx.AdminShutdownError("terminating connection due to administrator command"), True),
    (ValueError("a bug"), False),
    (pgx.UndefinedTableError("relation \"x\" does not exist"), False),
]


@pytest.mark.parametrize(("exc", "is_outage"), RAISED, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_a_library_s_exception_is_one_json_line(exc, is_outage):
    stream = io.StringIO()
    configure(level="info", json=True, stream=stream)
    try:
        try:
            raise exc
        except BaseException:
            logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor; retrying",
                                                      exc_info=True)
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_msc", False)]:
            root.removeHandler(h)
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["event"] == "Failed to restore the pool connection floor; retrying"
    assert (doc["level"], doc["logger"]) == ("warning", "asyncpg.pool")
    # Its class and message; an error without a message says what it means (msc.reasons.explain):
    # "no answer (TimeoutError)", never a bare "TimeoutError: ".
    assert type(exc).__name__ in doc["error"] and not doc["error"].rstrip().endswith(":")
    assert doc["error"].startswith(f"{type(exc).__name__}: ") if str(exc) else doc["error"].endswith(f"({type(exc).__name__})")
    assert ("exception" in doc) is not is_outage
    if not is_outage:
        assert "Traceback (most recent call last)" in doc["exception"]
