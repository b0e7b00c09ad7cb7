"""``msc terminal``'s prompts take only what is meant for them, and no typed line is lost without a
word (newcomer trial):

- at ``User ID:`` a text that is not a user ID (``Pass.word-123``: its '.' split the LOGON, and
  ``ICS1.LOGON.PASS.*.*`` was journaled) is refused locally — not sent, not repeated;
- after ``E201`` the ``Press Enter to connect again`` prompt took the operator's user ID as its
  Enter, and every later answer went one prompt on (the password typed at ``User ID:``, in
  clear): a prompt only Enter answers takes nothing else;
- after a pause/failover, each line typed that got no A/N is named — sent (may have been
  accepted) or never sent (type it again);
- msc's own lines that come while a prompt is open start on a line of their own, and a
  connection that ends while no one is logged on is not called a session that ended.

The client runs in-process as an operator's terminal (a pseudo-terminal types the answers)
against a scripted node (tests/integration/test_terminal_session_reasons.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty

import pytest

from msc.cli import termrules
from msc.cli.terminal import LineReader, TerminalOptions, run
from msc.protocol import framing
from tests.integration.test_terminal_session_reasons import Node, Operator, on_screen
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(60)

PASSWORD = "Secret-Pass-1"


class Started:
    def __init__(self, monkeypatch, node_cls=Node) -> None:
        self.monkeypatch, self.node_cls = monkeypatch, node_cls

    async def __aenter__(self):
        self.screen = on_screen(self.monkeypatch)
        self.node = self.node_cls()
        port = await self.node.start()
        self.master, self.slave = pty.openpty()
        opts = TerminalOptions(host="127.0.0.1", port=port, header="ICS1", timeout=HANG_S, reconnect_for=None)
        self.client = asyncio.ensure_future(run(opts, LineReader(self.slave)))
        self.op = Operator(self.screen, self.master)
        return self

    async def __aexit__(self, *exc):
        self.client.cancel()
        with contextlib.suppress(BaseException):
            await self.client
        await self.node.stop()
        os.close(self.master)
        os.close(self.slave)


def logons(node: Node) -> list[str]:
    return [t for t in node.texts if t.split(".")[1] == "LOGON"]


@pytest.mark.parametrize("typed", ["Pass.word-123", "demo-T4kdL0KLIhj6", "Hunter2Secret99", "AB12", "AB 1234"])
async def test_a_user_id_out_of_the_grammar_is_not_sent(monkeypatch, typed):
    async with Started(monkeypatch) as s:
        await s.op.answer("Press Enter to acknowledge", "")
        await s.op.answer("User ID: ", typed)
        await s.screen.shows(termrules.NOT_A_USER_ID)
        await s.op.answer("User ID: ", "ts0001")  # asked again; lower case is the same user ID
        await s.op.answer("One-time password", "")
        await s.op.answer("Password: ", PASSWORD)
        await s.screen.shows("Logged on as ICS1")
        assert logons(s.node) == [f"ICS1.LOGON.TS0001.-.{PASSWORD}"]
        shown = s.screen.getvalue()
        assert typed not in shown and "PASS" not in shown.upper().replace("PASSWORD", ""), shown


async def test_after_e201_every_answer_goes_to_the_prompt_shown(monkeypatch):
    async with Started(monkeypatch) as s:
        await s.op.answer("Press Enter to acknowledge", "")
        await s.screen.shows("User ID: ")
        s.op.seen["User ID: "] = 1
        s.node.refuse("E201 NO LOGON WITHIN 60 S")
        await s.screen.shows("msc closed the connection: no logon within its time limit (E201 NO LOGON WITHIN 60 S).")
        # The operator comes back and types the logon at once: the user ID is not taken for
        # "Enter", nothing connects, and the prompt says so without repeating it.
        await s.op.answer("Press Enter to connect again", "TS0001")
        await s.screen.shows(termrules.NOT_ENTER)
        assert len(s.node.conns) == 1
        await s.op.answer("Press Enter to connect again", "")
        await s.screen.shows("Press Enter to acknowledge", 2)
        # A password typed at the banner's prompt is not its Enter either.
        await s.op.answer("Press Enter to acknowledge", PASSWORD)
        await s.screen.shows(termrules.NOT_ENTER, 2)
        await s.op.answer("Press Enter to acknowledge", "")
        await s.op.answer("User ID: ", "TS0001")
        await s.op.answer("One-time password", "")
        await s.op.answer("Password: ", PASSWORD)
        await s.screen.shows("Logged on as ICS1")
        assert logons(s.node) == [f"ICS1.LOGON.TS0001.-.{PASSWORD}"]
        assert PASSWORD not in s.screen.getvalue()


class Paused(Node):
    """A node that answers the logon, then nothing (a SIGSTOP): the test ends the connection."""

    def answer(self, writer, xid: int, text: str) -> None:
        if text.split(".")[1] == "LOGON":
            writer.write(framing.ack(xid, b"MNE/ICS1.USR/TS0001"))


@pytest.mark.parametrize("end", ["shutdown", "lost"])
async def test_every_line_without_an_a_or_n_is_named_after_a_pause(monkeypatch, end):
    async with Started(monkeypatch, Paused) as s:
        await s.op.log_on()
        # Two lines at once (the second waits in the client's buffer), then one more (in the
        # terminal's queue) — as typed during a pause of the node.
        os.write(s.master, b"QV.CA0130000.LIC/PAUSED1\nQV.CA0130000.LIC/PAUSED2\n")
        loop = asyncio.get_running_loop()
        end_at = loop.time() + HANG_S
        while not any("PAUSED1" in t for t in s.node.texts):
            assert loop.time() < end_at
            await asyncio.sleep(0.01)
        os.write(s.master, b"QV.CA0130000.LIC/PAUSED3\n")
        await asyncio.sleep(0.05)
        if end == "shutdown":
            s.node.logoff("SHUTDOWN")
        s.node.close()
        assert await asyncio.wait_for(s.client, HANG_S) == termrules.EXIT_ENDED
        shown = s.screen.getvalue()
        sent = next(t for t in s.node.texts if "PAUSED1" in t)
        assert f"no A/N for {sent} before the connection was lost: not sent again" in shown, shown
        assert "msc journal search" not in shown
        assert "ask your agency's MSC administrator or an investigator to check the journal" in shown
        for line in ("QV.CA0130000.LIC/PAUSED2", "QV.CA0130000.LIC/PAUSED3"):
            assert f"not sent: {line} — typed before the connection was lost, it never left this terminal: " \
                   "type it again" in shown, shown
        assert not any("PAUSED2" in t or "PAUSED3" in t for t in s.node.texts)


class Undecided(Paused):
    """A node whose database is away: every LOGON is answered E503."""

    def answer(self, writer, xid: int, text: str) -> None:
        writer.write(framing.nak(xid, "E503", "STORAGE UNAVAILABLE, TRY AGAIN"))


async def test_msc_s_own_line_at_an_open_prompt_starts_a_new_line_and_no_session_is_said_to_end(monkeypatch):
    async with Started(monkeypatch, Undecided) as s:
        monkeypatch.undo()  # (msc's lines through Terminal.print itself: on_screen patched it)
        monkeypatch.setattr("sys.stdout", s.screen)
        monkeypatch.setattr("sys.stderr", s.screen)
        await s.op.answer("Press Enter to acknowledge", "")
        await s.op.answer("User ID: ", "JD1234")
        await s.op.answer("One-time password", "")
        await s.op.answer("Password: ", PASSWORD)
        prompt = "Press Enter to try again as JD1234, or type anything to log on as another user (Ctrl-D to exit): "
        await s.screen.shows(prompt)
        s.node.logoff("SHUTDOWN")
        s.node.close()
        assert await asyncio.wait_for(s.client, HANG_S) == termrules.EXIT_ENDED
        shown = s.screen.getvalue()
        assert prompt + "\nSYS LOGOFF.SHUTDOWN\n" in shown, shown
        assert "Session ended" not in shown, shown
        assert "Connection to msc ended (no one was logged on): SHUTDOWN. Disconnected from msc." in shown, shown


def test_a_prompt_says_how_many_lines_typed_ahead_it_dropped_never_what(capsys):
    """Lines typed while no prompt waits (a reconnect, a logon being checked) are dropped before
    the next prompt of the logon dialog — one may be a password typed ahead. Dropped without a
    word, an operator who typed a message during a reconnect never learnt it was not sent
    (newcomer trial hF). The prompt now says how many, never what."""
    import select

    from msc.cli import terminal

    master, slave = pty.openpty()
    try:
        os.write(master, b"QV.CA0130000.LIC/AHEAD1\nsecret-passw0rd\nhalf a line")
        assert select.select([slave], [], [], HANG_S)[0]
        reader = LineReader(slave)
        dropped = reader.discard()
        terminal._dropped(dropped)
        said = capsys.readouterr()
        assert dropped == 2
        assert "2 line(s) typed before this prompt were not taken" in said.err
        assert "AHEAD1" not in said.err + said.out and "secret" not in said.err + said.out
        assert reader.take_typed() == [] and reader.buf == b""  # the half line went too
        terminal._dropped(reader.discard())  # nothing typed: nothing said
        assert capsys.readouterr().err == ""
    finally:
        os.close(master)
        os.close(slave)


def test_a_refused_user_id_is_erased_from_a_terminal_screen(monkeypatch):
    """An answer refused at ``User ID:`` is most often a password typed at the wrong prompt; it
    was echoed as typed and stayed on screen (newcomer trial hF, after an E201). On a terminal the
    answered line is erased (ECMA-48: cursor up, erase line); elsewhere nothing is written."""
    import io
    import select

    from msc.cli import terminal

    master, slave = pty.openpty()
    screen = os.fdopen(slave, "w")
    try:
        monkeypatch.setattr("sys.stdout", screen)
        terminal._unshow_answer()
        assert select.select([master], [], [], HANG_S)[0]
        assert os.read(master, 100).endswith(b"\x1b[1A\x1b[2K\r")
        text = io.StringIO()
        monkeypatch.setattr("sys.stdout", text)
        terminal._unshow_answer()
        assert text.getvalue() == ""
    finally:
        screen.close()
        os.close(master)


def test_a_ctrl_d_typed_ahead_is_dropped_with_the_lines_not_taken_as_the_end(capsys):
    """A Ctrl-D typed while no prompt waits is dropped like the lines around it: counting what is
    dropped reads the terminal's queue, and the end of input read there must not end the next
    prompt's dialog."""
    import select

    master, slave = pty.openpty()
    try:
        os.write(master, b"TYPED1\n\x04")
        assert select.select([slave], [], [], HANG_S)[0]
        reader = LineReader(slave)
        assert reader.discard() == 1 and not reader.eof
    finally:
        os.close(master)
        os.close(slave)
