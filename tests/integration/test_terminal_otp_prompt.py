"""`msc terminal`'s one-time password prompt (newcomer8: it echoed what was typed, so an operator
who typed the password there — many systems ask for the password first — showed it in clear).

Decision (OPERATIONS.md "msc terminal"): the code is read without echo, like the password (CJIS
IA-6), and an answer that is neither empty nor a code (6 digits, spaces allowed) is not sent: a
typed one is asked for again, a piped dialog ends with status 3. The order of the prompts — and so
every scripted dialog — is unchanged. Real sockets on 127.0.0.1 against a scripted node; the
operator types on a pseudo-terminal, whose screen (the echo) is read back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select

import pytest

from msc.cli.terminal import LineReader, TerminalOptions, run
from tests.integration.test_terminal_session_reasons import Node, Operator, on_screen
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(60)

PASSWORD = "Tsecret-Pass-8x"

NOT_CODES = [
    # what the operator typed at the one-time password prompt by mistake
    PASSWORD,  # the password (newcomer8's slip)
    "12345",  # a digit short
    "1234567",  # a digit more
    "12345a",
    "123-456",
    "\u0661\u0662\u0663\u0664\u0665\u0666",  # digits, but not ASCII ones: not a LOGON field
    "LOGON",
]


def _echoed(master: int) -> str:
    """What the pseudo-terminal showed the operator (its echo) so far."""
    out = b""
    while select.select([master], [], [], 0)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode("utf-8", "replace")


@pytest.mark.parametrize("typed", NOT_CODES, ids=[f"not-a-code-{i}" for i in range(len(NOT_CODES))])
async def test_what_is_typed_at_the_otp_prompt_is_not_shown_and_a_non_code_is_not_sent(monkeypatch, typed):
    screen = on_screen(monkeypatch)
    node = Node()
    port = await node.start()
    master, slave = pty.openpty()
    client = asyncio.ensure_future(run(TerminalOptions(host="127.0.0.1", port=port, header="ICS1", timeout=HANG_S),
                                       LineReader(slave)))
    op = Operator(screen, master)
    echoed = ""
    try:
        await op.answer("Press Enter to acknowledge", "")
        await op.answer("User ID: ", "TS0001")
        await op.answer("One-time password (Enter if none): ", typed)
        await screen.shows("That is not a one-time password (6 digits; Enter if none): it was not sent (if it was your "
                           "password, it was neither shown nor sent).")
        await op.answer("One-time password (Enter if none): ", "343 002")  # as an authenticator app shows it
        await op.answer("Password: ", PASSWORD)
        await screen.shows("Logged on as ICS1.")
        echoed = _echoed(master)
        os.write(master, b"\x04")  # Ctrl-D: log off and exit
        assert await asyncio.wait_for(client, HANG_S) == 0
    finally:
        client.cancel()
        with contextlib.suppress(BaseException):
            await client
        await node.stop()
        os.close(master)
        os.close(slave)
    logons = [t for t in node.texts if ".LOGON." in t]
    assert logons == [f"ICS1.LOGON.TS0001.343002.{PASSWORD}"]  # one logon, with the code; the mistake not sent
    assert typed not in echoed and "343" not in echoed and PASSWORD not in echoed, echoed  # none shown
    assert "TS0001" in echoed  # (the User ID is echoed: the check reads the echo)
    assert typed not in screen.getvalue()


@pytest.mark.parametrize("dialog,status,sent", [
    # a dialog piped in (no terminal): each line answers the prompt it was written for
    (f"\nTS0001\n{PASSWORD}\n{PASSWORD}\n", 3, []),  # the password at the OTP's line: not sent, exit 3
    (f"\nTS0001\n123456\n{PASSWORD}\nLOGOFF\n", 0, [f"ICS1.LOGON.TS0001.123456.{PASSWORD}"]),  # as documented
    (f"\nTS0001\n\n{PASSWORD}\nLOGOFF\n", 0, [f"ICS1.LOGON.TS0001.-.{PASSWORD}"]),  # no TOTP: an empty line
], ids=["password-at-otp", "code", "no-code"])
async def test_a_piped_dialog_is_followed_as_written_and_a_non_code_is_never_sent(monkeypatch, dialog, status, sent):
    screen = on_screen(monkeypatch)
    node = Node()
    port = await node.start()
    r, w = os.pipe()
    os.write(w, dialog.encode())
    os.close(w)
    try:
        got = await asyncio.wait_for(run(TerminalOptions(host="127.0.0.1", port=port, header="ICS1", timeout=HANG_S),
                                         LineReader(r)), HANG_S)
    finally:
        await node.stop()
        os.close(r)
    assert got == status, screen.getvalue()
    assert [t for t in node.texts if ".LOGON." in t] == sent
    if status == 3:
        assert "That is not a one-time password" in screen.getvalue() and "Not asking again" in screen.getvalue()
    assert PASSWORD not in screen.getvalue()
