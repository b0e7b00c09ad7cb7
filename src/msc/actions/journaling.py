"""Journaling outside the switch (the ``msc`` command, the web console): through the running
daemon if there is one, else directly.

The journal has one writer at a time (a lock file in the journal directory). When ``msc serve``
runs it is that writer, and these processes ask it over the control socket; otherwise they open
the journal themselves for the moment they need. Blocking: call from a worker thread in an
event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence

import msgspec

from msc.config.load import Settings
from msc.journal.journal import Journal
from msc.journal.records import Entry, JournalError, Kind
from msc.journal.writer import JournalBusy


class DaemonUnavailable(Exception):
    pass


def control(settings: Settings, request: dict, timeout: float = 10.0) -> dict:
    """One request to the running daemon's control socket."""
    path = settings.data_dir / "control.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall((json.dumps(request) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except (TimeoutError, FileNotFoundError, ConnectionRefusedError, OSError) as exc:
        raise DaemonUnavailable(str(exc)) from None
    if not buf:
        raise DaemonUnavailable("no answer")
    return json.loads(buf)


def daemon_running(settings: Settings) -> bool:
    try:
        control(settings, {"op": "ping"}, timeout=2.0)
        return True
    except DaemonUnavailable:
        return False


def record(settings: Settings, entries: Sequence[Entry]) -> list[int]:
    """Journal entries durably; returns their sequence numbers. Raises JournalError."""
    try:
        return asyncio.run(_direct(settings, entries))
    except JournalBusy:
        pass
    try:
        reply = control(settings, {"op": "record", "entries": msgspec.to_builtins(list(entries))})
    except DaemonUnavailable as exc:
        raise JournalError(f"the journal is locked by a process that does not answer: {exc}") from None
    if not reply.get("ok"):
        raise JournalError(reply.get("error", "refused"))
    return reply["seqs"]


async def _direct_journal(settings: Settings) -> Journal:
    """Open the journal as its writer (raises JournalBusy if the daemon has it)."""
    from msc.storage.backends import Backends

    j = Backends(settings).journal()
    await j.open()
    return j


async def _direct(settings: Settings, entries: Sequence[Entry]) -> list[int]:
    j = await _direct_journal(settings)
    try:
        return await j.append(*entries)
    finally:
        await j.close()


def record_admin(settings: Settings, text: str, *, user: str | None = None) -> list[int]:
    return record(settings, [Entry(kind=Kind.ADMIN, user=user, text=text)])


def notify_users_changed(settings: Settings, text: str, *, user: str | None = None) -> None:
    """Journal an ADMIN record of a users.toml change and have a running daemon apply it now."""
    record_admin(settings, text, user=user)
    try:
        control(settings, {"op": "users_changed"})
    except DaemonUnavailable:
        pass  # no daemon: it reads the file when it starts
