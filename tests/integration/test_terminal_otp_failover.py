"""A one-time password after a failover (newcomer8): the code an operator logged on with is used —
each is good once, on every node, for the TOTP step is kept in the run-time state — so the same
code at the next node is refused ``E202`` (an attempt that counts toward the lockout). The client
says so when it connects again (``termrules.OTP_USED_AFTER_FAILOVER``), and a script given
``--otp`` does not send the used code again: it exits 4 with ``termrules.OTP_USED_SCRIPT``.

One in-process switch named twice (``--connect A,A``: a virtual IP): msc ends the session
(``SYS LOGOFF.SHUTDOWN``, as a node stepping down or stopping does), the client connects to the
"next" address — the same switch, which knows the code was used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from msc.cli import termrules
from msc.cli.terminal import TerminalOptions, run
from msc.mnemonics import totp
from tests.conftest import PASSWORD
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)


def logged_on(sw, user: str) -> bool:
    return any(getattr(getattr(s, "user_rec", None), "id", None) == user for s in sw.sessions)


async def until(cond) -> None:
    deadline = time.monotonic() + HANG_S
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def options(port: int, user: str, otp: str | None) -> TerminalOptions:
    return TerminalOptions(host="127.0.0.1", port=port, header="ICS1", user=user, password=PASSWORD, otp=otp,
                           expect=1, timeout=HANG_S, interactive=False, reconnect_for=HANG_S,
                           addresses=[("127.0.0.1", port), ("127.0.0.1", port)])


async def test_a_script_does_not_send_its_used_one_time_password_again_after_a_failover(harness, capsys):
    sw = await harness.start_switch(totp_users=["MF0001"])
    code = totp.code_at(harness.totp["MF0001"], time.time())
    client = asyncio.create_task(run(options(harness.port, "MF0001", code)))
    await until(lambda: logged_on(sw, "MF0001"))
    for sess in list(sw.sessions):
        sess.close("SHUTDOWN")  # what a node stepping down or stopping does
    assert await asyncio.wait_for(client, HANG_S) == 4
    err = capsys.readouterr().err
    assert "Session ended: SHUTDOWN. Connecting to the next msc address." in err, err
    assert termrules.OTP_USED_SCRIPT in err, err
    # The used code was not sent: no refused logon of the account (nothing toward its lockout).
    assert sw.metrics.rejects.labels("E202")._value.get() == 0
    # The code is used indeed: sent again by hand, it is refused.
    c = await harness.client()
    assert (await c.logon("ICS1", "MF0001", PASSWORD, otp=code)).code == "E202"


async def test_a_script_without_a_one_time_password_logs_on_again_and_is_not_told_of_one(harness, capsys):
    sw = await harness.start_switch()
    client = asyncio.create_task(run(options(harness.port, "TS0001", None)))
    await until(lambda: logged_on(sw, "TS0001"))
    first = list(sw.sessions)
    for sess in first:
        sess.close("SHUTDOWN")
    # Logged on again, at the "next" node: a new session.
    await until(lambda: any(s not in first and getattr(s, "user_rec", None) is not None for s in sw.sessions))
    client.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client
    err = capsys.readouterr().err
    assert "Connecting to the next msc address." in err
    assert "one-time password" not in err.lower()


class Screen:
    """The client's stdout (prompts, outputs) and stderr (what it says), read as they grow."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys
        self.text = {"out": "", "err": ""}
        self.pos = {"out": 0, "err": 0}

    async def expect(self, what: str, stream: str = "out") -> None:
        deadline = time.monotonic() + HANG_S
        while what not in self.text[stream][self.pos[stream]:]:
            assert time.monotonic() < deadline, f"did not see {what!r}:\n{self.text}"
            got = self.capsys.readouterr()
            self.text["out"] += got.out
            self.text["err"] += got.err
            await asyncio.sleep(0.01)
        self.pos[stream] = self.text[stream].index(what, self.pos[stream]) + len(what)


@pytest.mark.parametrize(("user", "with_otp"), [("MF0001", True), ("TS0001", False)], ids=["totp", "password-only"])
async def test_an_operator_who_logged_on_with_a_one_time_password_is_told_to_wait_for_the_next_code(
        harness, capsys, user, with_otp):
    import os
    import pty

    from msc.cli.terminal import LineReader

    sw = await harness.start_switch(totp_users=["MF0001"])
    master, slave = pty.openpty()
    screen = Screen(capsys)
    opts = TerminalOptions(host="127.0.0.1", port=harness.port, header="ICS1", timeout=HANG_S,
                           addresses=[("127.0.0.1", harness.port)] * 2)
    client = asyncio.create_task(run(opts, LineReader(slave)))
    try:
        async def answer(prompt: str, line: str) -> None:
            await screen.expect(prompt)
            os.write(master, line.encode() + b"\n")

        code = totp.code_at(harness.totp["MF0001"], time.time()) if with_otp else ""
        await answer("Press Enter to acknowledge", "")
        await answer("User ID: ", user)
        await answer("One-time password (Enter if none): ", code)
        await answer("Password: ", PASSWORD)
        await screen.expect("Logged on as ICS1.")
        for sess in list(sw.sessions):
            sess.close("SHUTDOWN")
        await screen.expect("Session ended: SHUTDOWN. Connecting to the next msc address.", "err")
        await screen.expect("Press Enter to acknowledge")
        said = termrules.OTP_USED_AFTER_FAILOVER in screen.text["err"]
        assert said is with_otp, screen.text
        if with_otp:  # the advice is right: the same code again is refused
            await answer("", "")
            await answer("User ID: ", user)
            await answer("One-time password (Enter if none): ", code)
            await answer("Password: ", PASSWORD)
            await screen.expect("Logon refused.", "err")
    finally:
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client
        os.close(master)
        os.close(slave)
