"""msc.reasons.explain: one readable line for any exception — never a bare "TimeoutError: " (newcomer7's
``"lease_error": "lease database: TimeoutError: "``)."""

from __future__ import annotations

import asyncio

import asyncpg.exceptions as pgx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msc.reasons import MAX_CHARS, explain

#: (the exception, bound_s, doing, the line)
CASES = [
    (TimeoutError(), 5.0, None, "no answer within 5 s (TimeoutError)"),
    (TimeoutError(), 0.5, "while connecting", "no answer within 0.5 s while connecting (TimeoutError)"),
    (TimeoutError(), None, None, "no answer (TimeoutError)"),
    (TimeoutError(), 12, None, "no answer within 12 s (TimeoutError)"),
    (ConnectionResetError(), None, None, "the connection was reset (ConnectionResetError)"),
    (ConnectionAbortedError(), None, None, "the connection was aborted (ConnectionAbortedError)"),
    (BrokenPipeError(), None, None, "the connection was closed by the other end (BrokenPipeError)"),
    (asyncio.IncompleteReadError(b"", 4), None, None,
     "IncompleteReadError: 0 bytes read on a total of 4 expected bytes"),
    (EOFError(), None, "reading the answer", "the connection closed in the middle of an answer reading the answer (EOFError)"),
    (ValueError(), None, None, "no reason given (ValueError)"),
    (ValueError("   "), None, None, "no reason given (ValueError)"),
    (TimeoutError("statement timeout"), 5.0, "while connecting", "TimeoutError: statement timeout"),
    (pgx.PostgresError("line one\n  DETAIL:  two"), None, None, "PostgresError: line one DETAIL: two"),
    (ConnectionAbortedError("this node stepped down"), None, None, "ConnectionAbortedError: this node stepped down"),
]


@pytest.mark.parametrize(("exc", "bound", "doing", "line"), CASES, ids=[type(c[0]).__name__ + str(i) for i, c in enumerate(CASES)])
def test_explain(exc, bound, doing, line):
    assert explain(exc, bound_s=bound, doing=doing) == line


@given(st.text(max_size=2000), st.sampled_from([TimeoutError, OSError, ValueError, ConnectionResetError]))
def test_a_reason_is_one_non_empty_bounded_line_naming_the_type(text, kind):
    line = explain(kind(text), bound_s=5)
    assert line and "\n" not in line and "\r" not in line
    assert kind.__name__ in line
    assert len(line) <= MAX_CHARS + len(kind.__name__) + 64
    assert not line.endswith(": ")
