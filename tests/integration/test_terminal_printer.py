"""``msc terminal --bind`` without ``--send``/``--expect`` is a printer: it stays bound and prints
every output as it comes (newcomer8: it bound and exited 0 at once, with stdin not a terminal, and
an administrator's first printer printed nothing). It ends by a signal, by Ctrl-D at a terminal,
or with its session by the client's reconnect rules — several addresses: the next one, bound
again; one address: exit 4. ``--bind --expect N`` stays a script (N outputs, then it leaves).

Against an in-process switch; the outputs are administrative messages (``AM``) from an operator
to the printer station ECP1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import time

import pytest

from msc.cli.terminal import LineReader, TerminalOptions, run
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)


class Screen:
    """The client's stdout (outputs) and stderr (what it says), read as they grow."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys
        self.text = {"out": "", "err": ""}

    async def expect(self, pattern: str, stream: str = "out", count: int = 1) -> None:
        deadline = time.monotonic() + HANG_S
        while len(re.findall(pattern, self.text[stream], re.M)) < count:
            assert time.monotonic() < deadline, f"did not see {pattern!r} x{count}:\n{self.text}"
            got = self.capsys.readouterr()
            self.text["out"] += got.out
            self.text["err"] += got.err
            await asyncio.sleep(0.01)


def printer(port: int, *, addresses: int = 1, **kw) -> TerminalOptions:
    return TerminalOptions(host="127.0.0.1", port=port, header="ECP1", bind=True, interactive=False,
                           timeout=HANG_S, addresses=[("127.0.0.1", port)] * addresses, **kw)


def devnull() -> LineReader:
    fd = os.open(os.devnull, os.O_RDONLY)  # what a service manager gives: end of input at once
    return LineReader(fd)


async def bound(sw) -> None:
    deadline = time.monotonic() + HANG_S
    while sw.metrics.sessions.labels("printer")._value.get() < 1:
        assert time.monotonic() < deadline, "the printer never bound"
        await asyncio.sleep(0.01)


async def send_to_printer(harness, op, *texts: str) -> None:
    for text in texts:
        assert (await op.send(f"ICS1.AM.CA0130000.ECP1.TXT {text}")).type == "A"


async def test_a_bound_printer_stays_and_prints_what_comes_until_its_one_connection_ends(harness, capsys):
    sw = await harness.start_switch()
    screen = Screen(capsys)
    client = asyncio.create_task(run(printer(harness.port), devnull()))
    try:
        await bound(sw)
        op = await harness.operator("ICS1", "TS0001")
        await send_to_printer(harness, op, "FIRST NOTICE", "SECOND NOTICE")
        await screen.expect(r"^M \d+ ECP1.*FIRST NOTICE")
        await screen.expect(r"^M \d+ ECP1.*SECOND NOTICE")
        assert not client.done()  # still bound: end of input ended nothing
        await send_to_printer(harness, op, "THIRD NOTICE")  # later traffic too
        await screen.expect(r"^M \d+ ECP1.*THIRD NOTICE")
        assert "Bound as ECP1: printing its outputs as they come (Ctrl-C or SIGTERM ends it)." in screen.text["err"]
        for sess in list(sw.sessions):
            sess.close("SHUTDOWN")
        assert await asyncio.wait_for(client, HANG_S) == 4  # one address: nowhere else to go
    finally:
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client


async def test_a_bound_printer_with_two_addresses_binds_again_at_the_next(harness, capsys):
    sw = await harness.start_switch()
    screen = Screen(capsys)
    client = asyncio.create_task(run(printer(harness.port, addresses=2), devnull()))
    try:
        await bound(sw)
        op = await harness.operator("ICS1", "TS0001")
        await send_to_printer(harness, op, "BEFORE")
        await screen.expect(r"^M \d+ ECP1.*BEFORE")
        for sess in [s for s in sw.sessions if getattr(s, "mnemonic", None) == "ECP1"]:
            sess.close("SHUTDOWN")
        await screen.expect(r"Session ended: SHUTDOWN\. Connecting to the next msc address\.", "err")
        await screen.expect(r"Bound as ECP1", "err", count=2)  # bound again
        await send_to_printer(harness, op, "AFTER")
        await screen.expect(r"^M \d+ ECP1.*AFTER")
        assert not client.done()
    finally:
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client


async def test_a_printer_at_a_terminal_ends_with_ctrl_d(harness, capsys):
    sw = await harness.start_switch()
    screen = Screen(capsys)
    master, slave = pty.openpty()
    client = asyncio.create_task(run(printer(harness.port), LineReader(slave)))
    try:
        await bound(sw)
        await screen.expect(r"Bound as ECP1: printing its outputs as they come \(Ctrl-D, Ctrl-C", "err")
        os.write(master, b"TYPED LINES ARE NOT SENT\n")
        op = await harness.operator("ICS1", "TS0001")
        await send_to_printer(harness, op, "STILL HERE")
        await screen.expect(r"^M \d+ ECP1.*STILL HERE")
        os.write(master, b"\x04")  # Ctrl-D
        assert await asyncio.wait_for(client, HANG_S) == 0
        assert sw.metrics.rejects.labels("E201")._value.get() == 0  # the typed line was not sent
    finally:
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client
        os.close(master)
        os.close(slave)


async def test_bind_with_expect_is_still_a_script_that_leaves_after_its_outputs(harness, capsys):
    sw = await harness.start_switch()
    client = asyncio.create_task(run(printer(harness.port, expect=1), devnull()))
    await bound(sw)
    op = await harness.operator("ICS1", "TS0001")
    await send_to_printer(harness, op, "ONE")
    assert await asyncio.wait_for(client, HANG_S) == 0
    assert "Bound as ECP1" not in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "printer_", "reconnect_for"), [
    (["--bind"], True, None),  # a printer keeps trying, like an operator's terminal
    (["--bind", "--expect", "2"], False, 120.0),  # a script gives up
    (["--bind", "--send", "X"], False, 120.0),
    (["--bind", "--reconnect-for", "30"], True, 30.0),  # as told
    ([], False, None),  # an operator's terminal
])
def test_a_printer_keeps_trying_its_addresses_by_default(monkeypatch, argv, printer_, reconnect_for):
    import msc.cli.terminal as terminal
    from msc.cli.main import build_parser, cmd_terminal

    seen = {}

    async def fake_run(opts, stdin=None):
        seen["opts"] = opts
        return 0

    monkeypatch.setattr(terminal, "run", fake_run)
    # (The command's parser and handler, not main(): main configures the process's logging.)
    args = build_parser().parse_args(["terminal", "--connect", "127.0.0.1:1,127.0.0.1:2", "--header", "ECP1", *argv])
    assert cmd_terminal(args) == 0
    assert terminal.stays_bound(seen["opts"]) is printer_
    assert seen["opts"].reconnect_for == reconnect_for


async def test_a_printer_whose_bind_was_not_decided_tries_again_and_a_script_does_not(harness, capsys):
    """BIND answered E501 (the journal could not record it — a node that has just taken over,
    its database away): a printer tries again after a back-off and binds once the journal
    works; ``--bind --expect`` is a script and exits 1 as before."""
    from tests.faults import FaultyWriter

    sw = await harness.start_switch()
    faults = FaultyWriter.install(sw.journal)
    faults.fail_commits = True
    assert await asyncio.wait_for(run(printer(harness.port, expect=1), devnull()), HANG_S) == 1
    screen = Screen(capsys)
    client = asyncio.create_task(run(printer(harness.port), devnull()))
    try:
        await screen.expect(r"^BIND not decided \(E501 JOURNAL UNAVAILABLE, NOTHING WAS FORWARDED\): trying again in "
                            r"\d+\.\d s\.$", "err")
        assert not client.done()
        faults.fail_commits = False
        await bound(sw)
        op = await harness.operator("ICS1", "TS0001")
        await send_to_printer(harness, op, "AFTER THE OUTAGE")
        await screen.expect(r"^M \d+ ECP1.*AFTER THE OUTAGE")
    finally:
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client
