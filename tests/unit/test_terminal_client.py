"""msc terminal's pure parts: header references, the header it adds, the message key it reads."""

from __future__ import annotations

import asyncio
import os
import pty
import termios

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msc.cli.terminal import LineReader, Terminal, TerminalOptions, _message_key, run
from msc.protocol import grammar as g


def _terminal() -> Terminal:
    return Terminal(TerminalOptions(host="127.0.0.1", port=1, header="ICS1"))


@pytest.mark.parametrize("typed,kept_header", [
    ("QW.CA0130000.NAM/DOE, JOHN", None),          # no header: header + a fresh reference
    ("ICS1.QW.CA0130000.NAM/DOE, JOHN", None),     # a bare header: a reference is added
    ("ICS1A1.QW.CA0130000.NAM/DOE, JOHN", "ICS1A1"),  # the operator's own reference is kept
    ("ICS1ABCDEF.QV.CA0130000.LIC/X", "ICS1ABCDEF"),
    ("  LOGOFF  ", None),
])
async def test_every_message_gets_a_header_with_a_reference(typed, kept_header):
    t = _terminal()
    text = t.full(typed)
    head = text.split(".", 1)[0]
    assert g.HEADER_RE.match(head), head
    assert head.startswith("ICS1") and len(head) > 4
    if kept_header:
        assert head == kept_header
    body = typed.strip().split(".", 1)[1] if typed.strip().startswith("ICS1") else typed.strip()
    assert text == f"{head}.{body}"  # nothing but the header changed


async def test_references_are_unique_within_a_run_and_differ_between_runs():
    a, b = _terminal(), _terminal()
    refs = [a.next_ref() for _ in range(5000)]  # past the 1,296 a base gives: a new base
    assert len(set(refs)) == len(refs)
    assert all(g.HEADER_RE.match("ICS1" + r) and len(r) == 6 for r in refs)
    # Another run (another client, or the same one started again) uses other references, so an
    # answer to an earlier run's message is not taken for its own (chance of a clash: 36**-4).
    assert a.next_ref() != b.next_ref()


@given(st.lists(st.sampled_from(["*TS0001", "#7F000001", "QW", "LOGOFF", "CA0130000"]), min_size=0, max_size=5))
def test_message_key_skips_oif_and_taf(parts):
    text = ".".join(["ICS1R1", *parts])
    expected = next((p for p in parts if not p.startswith(("*", "#"))), "")
    assert _message_key(text) == expected


UNANSWERED = [
    # id, requests (text, own), answers that came (xid -> A|N), the texts named when the connection went
    ("none-sent", [], {}, []),
    ("one-waiting", [("ICS1AA.QV.CA0130000.LIC/ONE", True)], {}, ["ICS1AA.QV.CA0130000.LIC/ONE"]),
    ("acknowledged", [("ICS1AA.QV.CA0130000.LIC/ONE", True)], {1: "A"}, []),
    ("refused", [("ICS1AA.QV.CA0130000.LIC/ONE", True)], {1: "N"}, []),
    ("in-order", [("ICS1AA.QV.X.LIC/1", True), ("ICS1AB.QV.X.LIC/2", True), ("ICS1AC.QV.X.LIC/3", True)], {2: "A"},
     ["ICS1AA.QV.X.LIC/1", "ICS1AC.QV.X.LIC/3"]),
    ("logon-not-named", [("ICS1.LOGON.TS0001.-.SECRET", False)], {}, []),  # never a credential on screen
]


@pytest.mark.parametrize("name,requests,answered,named", UNANSWERED, ids=[u[0] for u in UNANSWERED])
async def test_the_messages_left_without_an_answer_are_named_once(name, requests, answered, named):
    from msc.protocol import framing

    t = _terminal()
    t.print = lambda line: None
    tasks = [asyncio.ensure_future(t.request(text, own=own)) for text, own in requests]
    await asyncio.sleep(0)  # each request registered (sent, waiting)
    for xid, kind in answered.items():
        t._frame(framing.Frame(framing.ACK if kind == "A" else framing.NAK, xid, b"" if kind == "A" else b"E108 X"))
    assert t.take_unanswered() == named
    assert t.take_unanswered() == []  # taken once
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


ENDINGS = [
    # id, what ends the client while echo is off (it is off from the start until the banner's prompt)
    ("a-bug", RuntimeError("a bug in the client")),
    ("connection-error", ConnectionError("refused")),
    ("ctrl-c", KeyboardInterrupt()),
    ("cancelled", asyncio.CancelledError()),
]


@pytest.mark.parametrize("name,exc", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_the_terminal_is_restored_whatever_ends_the_client(monkeypatch, name, exc):
    """Every way out of the client gives the operator's terminal back as it was (echo on), not
    only a return: an exception, Ctrl-C, a cancellation (signals: tests/e2e/test_terminal_client)."""
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        seen = []

        async def connect_any(self, *, first: int = 0):
            seen.append(termios.tcgetattr(slave)[3] & termios.ECHO)
            raise exc

        monkeypatch.setattr(Terminal, "connect_any", connect_any)
        with pytest.raises(type(exc)):
            asyncio.run(run(TerminalOptions(host="127.0.0.1", port=1, header="ICS1"), LineReader(slave)))
        assert seen == [0]  # echo was off when it ended
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
