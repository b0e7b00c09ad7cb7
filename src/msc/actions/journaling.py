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


class NotTheActiveNode(JournalError):
    """One node of a pair (``[node]``): the journal's writer is another node (or none answers here),
    so a record made on this machine cannot be committed — the command must run on the active node
    (OPERATIONS.md "Running two nodes": where commands run). Its text is one line for the operator;
    ``active`` names the node that is active, when one is (None: none is, or it could not be asked)."""

    def __init__(self, text: str, active: str | None = None) -> None:
        super().__init__(text)
        self.active = active


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
        if shared_pair(settings):
            raise not_the_active_node(settings) from None
        raise JournalError(f"the journal is locked by a process that does not answer: {exc}") from None
    if not reply.get("ok"):
        raise JournalError(reply.get("error", "refused"))
    return reply["seqs"]


def shared_pair(settings: Settings) -> bool:
    """One node of a pair (``[node]``) sharing one journal in PostgreSQL (``[storage]``): only the
    lease's holder may commit to it."""
    storage = getattr(settings.config, "storage", None)
    return settings.config.node is not None and getattr(storage, "backend", None) == "postgresql"


def not_the_active_node(settings: Settings) -> NotTheActiveNode:
    """Why a record made here cannot be committed on a pair, naming the node to go to (read from
    the lease in the database; blocking, bounded by the lease's connection timeout)."""
    from msc.ha.pglease import LeaseUnavailable
    from msc.ha.site import read_lease

    node = settings.config.node
    me = node.name if node is not None else "?"
    try:
        row = read_lease(settings)
    except (LeaseUnavailable, ValueError, OSError) as exc:
        return NotTheActiveNode(f"this machine's node {me} is the standby (or not running) and the lease's database "
                                f"could not be asked which node is active ({exc}); run the command on the active "
                                "node — its record must go through it")
    if row is None or not row.live:
        return NotTheActiveNode(f"no node is active (this machine's node {me} is not running or still the standby) "
                                "and the journal is held by a process that does not answer; start a node, or run "
                                "the command on the node that becomes active — its record must go through it")
    if row.holder == me:
        return NotTheActiveNode(f"this machine's node {me} holds the lease (epoch {row.epoch}) but does not answer "
                                f"here (stopped or paused): wait for the standby to take over (at most "
                                f"{max(row.remaining_s, 0):.0f} s) and run the command on it — its record must go "
                                "through the active node", row.holder)
    return NotTheActiveNode(f"this machine's node {me} is the standby (or not running); run the command on the "
                            f"active node {row.holder} — its record must go through it", row.holder)


def require_active_here(settings: Settings) -> None:
    """Before an ``--as`` command asks for a password: on a pair, is the node on this machine the
    active one (its control socket answers)? Raises :class:`NotTheActiveNode` when it is not and
    another node holds the lease — the command's records could not be committed here. A single
    node (no ``[node]``), or a pair whose nodes keep their own SQLite journals (a record made here
    is committed to this machine's journal), is never refused here. Blocking."""
    if not shared_pair(settings) or daemon_running(settings):
        return
    refusal = not_the_active_node(settings)
    if refusal.active is not None:
        raise refusal


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
