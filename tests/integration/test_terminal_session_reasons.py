"""`msc terminal` says why the connection that *just* ended ended — never the reason of an earlier
session on it (newcomer8: after ``SYS LOGOFF.USER DISABLED`` the operator was back at ``User ID:``;
the node was then killed and the client said ``Session ended: USER DISABLED. Connecting to the
next msc address.``).

Every way a session ends that keeps the connection (msc's ``SYS LOGOFF`` of IDLE, SESSION
MAXIMUM, USER DISABLED, USER REMOVED; the operator's own LOGOFF) is followed by every way the
connection, or a later session on it, can end (lost, reset, msc's SHUTDOWN, its logon time limit
E201, a later session's IDLE, STATION DISABLED, REPLACED), for a static station and a pooled
mnemonic, with one address and with two (a pair). The client runs in-process as an operator's
terminal (a pseudo-terminal types the answers) against a scripted node on a real socket on
127.0.0.1: what it says is what an operator reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pty
import re
import socket
import struct
import sys

import pytest

from msc.cli import termclient
from msc.cli.terminal import LineReader, TerminalOptions, run
from msc.protocol import framing
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(60)


class Screen(io.StringIO):
    """What the operator sees (stdout and stderr, in order)."""

    async def shows(self, text: str, count: int = 1) -> None:
        """Wait until ``text`` has been shown ``count`` times (a bound for a hang, not a speed)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + HANG_S
        while self.getvalue().count(text) < count:
            assert loop.time() < end, f"never shown {count}x: {text!r}\n--- screen:\n{self.getvalue()}"
            await asyncio.sleep(0.01)


class Node:
    """One msc address, scripted by the test: the banner on connect, each LOGON answered ``A``
    (a static station keeps its mnemonic; a pool lends ECM1, ECM2 …), LOGOFF answered ``A``, and
    what the test makes it do next to the newest connection."""

    def __init__(self) -> None:
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.logons = 0
        self.texts: list[str] = []  # every message the client sent
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns.append((reader, writer))
        writer.write(framing.message(0, b"SYS.BANNER.AUTHORIZED USE ONLY"))
        framer = framing.Framer()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                for f in framer.feed(data):
                    if f.type != framing.MSG:
                        continue  # the client's acknowledgements
                    text = f.payload.decode()
                    self.texts.append(text)
                    self.answer(writer, f.xid, text)

    def answer(self, writer: asyncio.StreamWriter, xid: int, text: str) -> None:
        """What this node says to the client's message ``text`` (a subclass scripts another)."""
        key = text.split(".")[1]
        if key == "LOGON":
            self.logons += 1
            header = text.split(".")[0]
            mne = f"ECM{self.logons}" if header == "ECMDT" else header
            writer.write(framing.ack(xid, f"MNE/{mne}.USR/TS0001".encode()))
        elif key == "LOGOFF":
            writer.write(framing.ack(xid))

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self.conns[-1][1]

    def logoff(self, reason: str) -> None:
        self.writer.write(framing.message(0, f"SYS.LOGOFF.{reason}".encode()))

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def refuse(self, payload: str) -> None:
        code, _, reason = payload.partition(" ")
        self.writer.write(framing.nak(0, code, reason))
        self.close()

    async def stop(self) -> None:
        for _, w in self.conns:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Operator:
    """Types on the client's terminal (a pseudo-terminal), only once the prompt it answers is shown
    (the client discards what is typed ahead of a prompt)."""

    def __init__(self, screen: Screen, master: int) -> None:
        self.screen, self.master = screen, master
        self.seen: dict[str, int] = {}

    async def answer(self, prompt: str, line: str) -> None:
        self.seen[prompt] = self.seen.get(prompt, 0) + 1
        await self.screen.shows(prompt, self.seen[prompt])
        os.write(self.master, line.encode() + b"\n")

    async def ctrl_d(self, prompt: str) -> None:
        self.seen[prompt] = self.seen.get(prompt, 0) + 1
        await self.screen.shows(prompt, self.seen[prompt])
        os.write(self.master, b"\x04")

    async def log_on(self) -> None:
        await self.answer("Press Enter to acknowledge", "")
        await self.answer("User ID: ", "TS0001")
        await self.answer("One-time password", "")
        await self.answer("Password: ", "Secret-Pass-1")
        self.seen["Logged on as"] = self.seen.get("Logged on as", 0) + 1
        await self.screen.shows("Logged on as", self.seen["Logged on as"])


# -- the first session ends and keeps the connection ---------------------------------------------

FIRST = ["USER DISABLED", "IDLE", "SESSION MAXIMUM", "USER REMOVED", "LOGOFF"]  # LOGOFF: typed by the operator

# -- then: what ends the connection (at the User ID prompt), or a later session on it ------------
# id -> (the reason the client must give, whether it goes to the next address of a pair)
THEN = {
    "lost": ("CONNECTION LOST", True),
    "reset": ("CONNECTION RESET", True),
    "shutdown": ("SHUTDOWN", True),
    "logon-timeout": ("E201 NO LOGON WITHIN 60 S", False),
    "next-session-idle": ("IDLE", False),
    "next-session-station-disabled": ("STATION DISABLED", False),
    "next-session-replaced": ("REPLACED", False),
}

#: What the client says when the connection ends while no one is logged on (at ``User ID:``).
ENDED_AT_PROMPT = "Connection to msc ended (no one was logged on)"

CASES = [(f, t, "static", 2) for f in FIRST for t in THEN] + [(f, t, "pooled", 1) for f in FIRST for t in THEN]


def on_screen(monkeypatch) -> Screen:
    """Everything the client prints goes to one Screen (set in the test's body: pytest's own
    capture sets sys.stdout again between a fixture's setup and the test)."""
    s = Screen()
    monkeypatch.setattr(sys, "stdout", s)
    monkeypatch.setattr(sys, "stderr", s)
    monkeypatch.setattr(termclient.Terminal, "print", lambda self, line: s.write(line + "\n"))
    return s


@pytest.mark.parametrize("first,then,station,addresses", CASES, ids=[f"{c[2]}-{c[3]}addr-{c[0]}-then-{c[1]}"
                                                                      for c in CASES])
async def test_the_reason_said_is_the_one_of_the_connection_that_just_ended(monkeypatch, first, then, station,
                                                                            addresses):
    screen = on_screen(monkeypatch)
    reason, fails_over = THEN[then]
    nodes = [Node() for _ in range(addresses)]
    ports = [await n.start() for n in nodes]
    master, slave = pty.openpty()
    a = nodes[0]
    header = "ECMDT" if station == "pooled" else "ICS1"
    opts = TerminalOptions(host="127.0.0.1", port=ports[0], header=header, timeout=HANG_S, reconnect_for=None,
                           addresses=[("127.0.0.1", p) for p in ports] if addresses > 1 else [])
    client = asyncio.ensure_future(run(opts, LineReader(slave)))
    op = Operator(screen, master)
    try:
        await op.log_on()
        if first == "LOGOFF":
            os.write(master, b"LOGOFF\n")
            await screen.shows("Logged off.")
        else:
            a.logoff(first)
            await screen.shows(f"Session ended by msc: {first}. Log on again, or Ctrl-D to exit.")
        await screen.shows("User ID: ", 2)  # back at the logon prompt, the connection open
        op.seen["User ID: "] = 1

        if then == "lost":
            a.close()
        elif then == "reset":
            a.reset()
        elif then == "shutdown":
            a.logoff("SHUTDOWN")
            a.close()
        elif then == "logon-timeout":
            a.refuse(reason)
        else:  # a later session on the same connection, ended by msc
            await op.answer("User ID: ", "TS0001")
            await op.answer("One-time password", "")
            await op.answer("Password: ", "Secret-Pass-1")
            op.seen["Logged on as"] += 1
            await screen.shows("Logged on as", 2)
            a.logoff(reason)
            if reason in termclient.CLOSING_REASONS:
                a.close()

        if then == "logon-timeout":
            await screen.shows(f"msc closed the connection: no logon within its time limit ({reason}).")
            await op.ctrl_d("Press Enter to connect again, or Ctrl-D to exit: ")
            status = 0
        elif reason not in termclient.CLOSING_REASONS and then.startswith("next-session"):
            await screen.shows(f"Session ended by msc: {reason}. Log on again, or Ctrl-D to exit.")
            await op.ctrl_d("User ID: ")
            status = 0
        elif fails_over and addresses > 1:
            # At the User ID prompt no one is logged on: the connection ended, not a session.
            await screen.shows(f"{ENDED_AT_PROMPT}: {reason}. Connecting to the next msc address.")
            await screen.shows(f"Connected to msc at 127.0.0.1:{ports[1]}.")
            await op.ctrl_d("Press Enter to acknowledge")
            status = 0
        else:
            what = ENDED_AT_PROMPT if then in ("lost", "reset", "shutdown") else "Session ended"
            await screen.shows(f"{what}: {reason}. Disconnected from msc.")
            status = 4
        assert await asyncio.wait_for(client, HANG_S) == status
    finally:
        client.cancel()
        with contextlib.suppress(BaseException):
            await client
        for n in nodes:
            await n.stop()
        os.close(master)
        os.close(slave)

    shown = screen.getvalue()
    ends = re.findall(r"^(?:Session ended(?: by msc)?: .*|msc closed the connection: .*|"
                      r"Connection to msc ended \(no one was logged on\): .*)$", shown, re.M)
    # The first session's end is said once, when it came; what ended next is said with its own reason.
    assert len(ends) == (1 if first == "LOGOFF" else 2), shown
    assert reason in ends[-1], shown
    if first != "LOGOFF":
        assert first in ends[0], shown
        assert first not in ends[-1] or first == reason, shown
