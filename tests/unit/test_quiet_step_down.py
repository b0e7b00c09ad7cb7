"""A node that steps down (or any process that ends) with work pending leaves one clean log
event, not tracebacks (issue 16, a newcomer's SIGSTOP/SIGCONT of the active node): a journal
append that was only fired off and then refused, and an HTTP or control-socket request pending
when the tasks are cancelled, must not reach asyncio's exception handler ("Future exception was
never retrieved", "Exception in callback … CancelledError") — which prints a traceback into the
JSON log."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest

from msc.journal import Entry, Journal, JournalError, KeyRing
from msc.ops.http import OpsServer
from msc.server.control import ControlServer
from tests.loopwatch import settle, watch
from tests.waiting import HANG_S


@pytest.mark.parametrize("refusal", [
    None,  # not open (a process ending before its journal opened, or after it closed)
    "this node stepped down (the lease was not renewed in time): nothing more is journaled here",
    "journal records 5..9 were committed and are gone from the files: the journal was altered",
])
async def test_a_refused_append_that_nobody_awaits_is_not_a_traceback(tmp_path, refusal):
    complaints = watch()
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    j = Journal(tmp_path / "journal", ring)
    if refusal is not None:
        await j.open()
        j.refused = refusal
    try:
        j.submit([Entry(kind="SESSION", text="LOGOFF SHUTDOWN")])  # fired off, as a LOGOFF record is
        awaited = j.submit([Entry(kind="RECEIVED", text="ICS1.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101")])
        with pytest.raises(JournalError, match=re.escape(refusal or "not open")):
            await awaited  # whoever awaits still gets the refusal
        await settle()
    finally:
        if refusal is not None:
            await j.close()
    assert complaints == []


class _Switch:
    """What the ops endpoint and the control socket ask of a switch, answering slowly enough that
    a request is pending when the process ends."""

    def __init__(self) -> None:
        self.metrics = None
        self.never = asyncio.get_running_loop().create_future()

        class _J:
            async def append(_self, *entries):
                return await self.never

        self.journal = _J()

    def readiness(self):
        return True, {}

    def __getattr__(self, name):  # the other control_* handlers: not reached by these tests
        async def handler(_req):
            return {"ok": True}
        return handler


async def closed(read) -> bool:
    """The peer closed the connection (end-of-file, or a reset when it closed with data unread)."""
    try:
        return await asyncio.wait_for(read, HANG_S) == b""
    except ConnectionResetError:
        return True


async def end_the_process() -> None:
    """What asyncio.run does when the main coroutine returns: cancel every other task, wait."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await settle()


@pytest.mark.parametrize("sent", [
    b"",  # connected, nothing sent yet (a health check's first packet delayed)
    b"GET /readyz HTTP/1.1\r\nHost: x\r\n",  # a request whose head has not ended
    b"GET /re",  # a request line cut short
])
async def test_an_http_request_pending_when_the_process_ends_is_not_a_traceback(sent):
    complaints = watch()
    ops = OpsServer(_Switch())
    await ops.start("127.0.0.1:0")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
        writer.write(sent)
        await writer.drain()
        for _ in range(20):  # until the server's handler task exists
            if len(asyncio.all_tasks()) > 1:
                break
            await asyncio.sleep(0.01)
        assert len(asyncio.all_tasks()) > 1
        await end_the_process()
        assert await closed(reader.read())  # its connection was closed
        writer.close()
    finally:
        await ops.stop()
    assert complaints == [], [c.get("message") for c in complaints]


@pytest.mark.parametrize("request_", [
    {"op": "record", "entries": [{"kind": "ADMIN", "text": "STATION DISABLE ICS2"}]},  # awaiting the journal
    None,  # connected, nothing sent
])
async def test_a_control_request_pending_when_the_process_ends_is_not_a_traceback(tmp_path, request_):
    complaints = watch()
    ctl = ControlServer(_Switch(), tmp_path / "control.sock")
    await ctl.start()
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, str(tmp_path / "control.sock"))
        if request_ is not None:
            await asyncio.get_running_loop().sock_sendall(s, (json.dumps(request_) + "\n").encode())
        for _ in range(20):
            if len(asyncio.all_tasks()) > 1:
                break
            await asyncio.sleep(0.01)
        assert len(asyncio.all_tasks()) > 1
        await end_the_process()
        assert await closed(asyncio.get_running_loop().sock_recv(s, 100))
        s.close()
    finally:
        await ctl.stop()
    assert complaints == [], [c.get("message") for c in complaints]
