"""JSON log lines carry non-ASCII text as UTF-8, not ``\\uXXXX`` escapes (newcomer8: ``config.reloaded``
wrote ``"switch.drain_timeout_s: 10 \\u2192 2"`` and ``grep '→'`` found nothing), and stay one valid
JSON line each whatever the text: control characters escaped, text that is not valid Unicode
written with ASCII escapes instead of failing."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from msc.ops.logging import configure

#: (a value logged, what must appear literally in the line — None: nothing in particular)
VALUES = [
    ("switch.drain_timeout_s: 10 → 2", "10 → 2"),           # config.reloaded's changes
    ("José Müller-Øster", "José Müller-Øster"),             # a person's name in a reason
    ("東京 / Ελλάδα / Россия", "東京 / Ελλάδα / Россия"),  # other scripts
    ("printer 🖨 jammed", "🖨"),                             # outside the BMP
    ("quote \" and backslash \\", None),                    # JSON's own escapes still apply
    ("two\nlines\rand\ttab\x00nul\x1b[31m", None),          # control characters: escaped, one line
    ("line\u2028separator\u2029para", None),
    ("lone \udcff surrogate", "\\udcff"),                   # not valid Unicode: ASCII escapes
]


def _lines(emit) -> list[str]:
    stream = io.StringIO()
    root = logging.getLogger()
    before = root.handlers[:]
    configure(level="info", json=True, stream=stream)
    # Only msc's handler while the text is emitted: pytest's own capture handlers would put a lone
    # surrogate into the test's report, which pytest-xdist cannot send to its controller as UTF-8
    # (INTERNALERROR: the whole run lost).
    root.handlers = [h for h in root.handlers if getattr(h, "_msc", False)]
    try:
        emit()
    finally:
        root.handlers = [h for h in before if not getattr(h, "_msc", False)]
    return stream.getvalue().split("\n")[:-1]


# Test ids in ASCII: pytest-xdist sends each id to the controller as UTF-8, and a lone surrogate
# cannot be (INTERNALERROR, the whole run lost).
IDS = [ascii(value)[1:-1] for value, _ in VALUES]


@pytest.mark.parametrize(("value", "literal"), VALUES, ids=IDS)
def test_msc_events_keep_their_text(value, literal):
    (line,) = _lines(lambda: structlog.get_logger("msc.test").info("config.reloaded", changes=[value]))
    assert json.loads(line)["changes"] == [value]  # the same text back, whatever it is
    if literal is not None:
        assert literal in line
    line.encode("utf-8")  # writable to a UTF-8 log stream


@pytest.mark.parametrize(("value", "literal"), VALUES, ids=IDS)
def test_library_records_keep_their_text(value, literal):
    (line,) = _lines(lambda: logging.getLogger("asyncpg.pool").warning("pool: %s", value))
    assert json.loads(line)["event"] == f"pool: {value}"
    if literal is not None:
        assert literal in line
    line.encode("utf-8")


def test_a_line_in_utf8_has_no_unicode_escapes():
    (line,) = _lines(lambda: structlog.get_logger("msc.test").info("config.reloaded",
                                                                   changes=["a → b", "é"]))
    assert "\\u" not in line
