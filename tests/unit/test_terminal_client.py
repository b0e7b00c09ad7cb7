"""msc terminal's pure parts: header references, the header it adds, the message key it reads."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import struct
import termios
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msc.cli.terminal import LineReader, Terminal, TerminalOptions, _message_key, run
from msc.protocol import grammar as g
from tests.waiting import HANG_S


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


def _queued(fd: int) -> int:
    """Bytes in the terminal's input queue (complete lines)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


#: (id, the prompt waiting when Ctrl-Z came (None: between prompts, a session), echo there)
STOPS = [
    ("at-password", "Password: ", False),
    ("at-user-id", "User ID: ", True),
    ("between-prompts", None, False),
    ("in-a-session", None, True),
]


@pytest.mark.parametrize("name,prompt,echo", STOPS, ids=[s[0] for s in STOPS])
def test_after_a_stop_the_clients_settings_and_its_prompt_come_back(capsys, name, prompt, echo):
    """The pieces of Ctrl-Z (msc.cli.terminal._stopped) on a real pty: the operator's settings while
    stopped, the client's again at SIGCONT, the waiting prompt shown again and what was half typed at
    it dropped (the stop itself, a job's SIGTSTP: tests/e2e/test_terminal_client.py)."""
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        reader = LineReader(slave)
        reader.hush()  # as the client: echo off until a prompt wants it
        if echo:
            reader.listen()
        reader.prompt = prompt
        os.write(master, b"TYPED\n")  # typed at the prompt before Ctrl-Z, not read yet
        deadline = time.monotonic() + HANG_S
        while _queued(slave) < len(b"TYPED\n"):  # (the terminal handles typed bytes in its own time)
            assert time.monotonic() < deadline, "the typed line never reached the terminal's input queue"
            time.sleep(0.01)
        mine = reader.settings()
        reader.restore()  # stopped: the shell's terminal
        assert termios.tcgetattr(slave) == before
        reader.resumed(mine)  # fg
        assert bool(termios.tcgetattr(slave)[3] & termios.ECHO) is echo
        out = capsys.readouterr().out
        assert out == ("" if prompt is None else "\n" + prompt)
        os.write(master, b"ANSWER\n")
        line = asyncio.run(reader.readline())
        assert line == ("ANSWER" if prompt is not None else "TYPED")  # dropped only at a prompt
    finally:
        os.close(master)
        os.close(slave)


# -- what the client does when a session or its connection ended (newcomer trial F2) --------------

def _ends(**kw) -> str:
    from msc.cli import termrules

    base = dict(closed=True, fails_over=False, logon_timeout=False, for_retrying=False, interactive=True,
                piped=False, retrying_logon=False)
    return termrules.after_end(**{**base, **kw})


# Every way msc ends a piped dialog's session (OPERATIONS.md "msc terminal"): (reason, closed,
# fails_over with two addresses, E201, for_retrying)
PIPED_ENDS = [
    ("SHUTDOWN", True), ("CONNECTION CLOSED BY MSC", True), ("CONNECTION LOST", True), ("CONNECTION RESET", True),
    ("E201 NO LOGON WITHIN 60 S", True), ("E307 TOO MANY REFUSED MESSAGES", True), ("STATION DISABLED", True),
    ("REPLACED", True), ("IDLE", False), ("USER DISABLED", False), ("USER REMOVED", False),
    ("SESSION MAXIMUM", False),
]


@pytest.mark.parametrize("reason,closed", PIPED_ENDS, ids=[r for r, _ in PIPED_ENDS])
@pytest.mark.parametrize("several", [False, True], ids=["one-address", "two-addresses"])
def test_a_piped_dialog_ends_with_status_4_whatever_ended_its_session(reason, closed, several):
    from msc.cli import termrules
    from msc.cli.termclient import FINAL_REASONS, LOGON_TIMEOUT

    e201 = reason.startswith(LOGON_TIMEOUT)
    action = _ends(closed=closed, piped=True, logon_timeout=e201,
                   fails_over=several and closed and reason not in FINAL_REASONS and not e201,
                   for_retrying=e201 or reason.startswith("E307"))
    assert action in termrules.ENDS
    # never another connection, never "Press Enter to connect again" (its Enter: the script's next line)
    assert action not in (termrules.NEXT, termrules.ASK, termrules.RETRY_LOGON)


def test_at_a_terminal_the_same_ends_go_on_as_documented():
    from msc.cli import termrules

    assert _ends(fails_over=True) == termrules.NEXT  # a failover: the next address
    assert _ends(logon_timeout=True, for_retrying=True) == termrules.ASK  # E201: Enter to connect again
    assert _ends() == termrules.END  # one address: exit 4
    assert _ends(closed=False) == termrules.END
    # a script (--user) refused "try again" and closed for it: the same node, the logon budget goes on
    assert _ends(interactive=False, retrying_logon=True, for_retrying=True) == termrules.RETRY_LOGON
    assert _ends(interactive=False, fails_over=True) == termrules.NEXT
    assert _ends(interactive=False, piped=True, fails_over=True) == termrules.NEXT  # --user reads no dialog
