"""Journaling outside the switch (the ``msc`` command, the web console): through the running
daemon if there is one, else directly.

The journal has one writer at a time. When ``msc serve`` runs it is that writer, and these
processes ask it over the control socket; only when no daemon answers there do they open the
journal themselves for the moment they need (OPERATIONS.md "The msc command"). The daemon is
asked *first*: the journal's writer lock alone cannot say that a daemon runs — on PostgreSQL it is
a session lock on the daemon's connection, free whenever that connection is down (a database
restart, a failover), and a command that took it then wrote beside the running daemon (JOURNAL.md
"Storage and durability": one writer). What guards each moment:

- the daemon answers: the record goes through it; its refusal is the command's (never followed
  by a direct write). Asked and not answered in time: the outcome is unknown — refused, not
  written again directly;
- no daemon answers but ``msc serve`` of this node holds ``data_dir/serve.lock`` (starting, its
  socket not up yet; stopping, its socket gone and its last records still being written; stuck):
  refused, nothing written (:func:`msc.instance.no_daemon_here`);
- none holds it: the command holds it shared while it writes, so a ``msc serve`` starting
  meanwhile waits for it; and the journal's writer lock stays the backstop (a daemon on another
  machine sharing the database, a process that does not follow these rules: the daemon tells
  their records from its own, :meth:`msc.journal.journal.Journal._landed_by_content`).

Blocking: call from a worker thread in an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Sequence

import msgspec

from msc.config.load import Settings
from msc.journal.journal import Journal
from msc.journal.records import Entry, JournalError, Kind
from msc.journal.writer import JournalBusy


class DaemonUnavailable(Exception):
    """No daemon answers on the control socket (none to connect to): nothing was asked."""


class DaemonNoAnswer(DaemonUnavailable):
    """The request was sent and no answer came (a timeout, the connection dropped): what the
    daemon did with it is unknown. For a request that writes the journal, never to be done again
    directly (it may have been committed)."""


#: How long a record request waits for the daemon's answer (s): longer than the PostgreSQL
#: writer's bound on a commit (msc.storage.pgjournal.WRITE_TIMEOUT_S), so that a commit that
#: fails is answered as a refusal rather than left unknown.
RECORD_TIMEOUT_S = 30.0


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
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as exc:  # (FileNotFoundError, ConnectionRefusedError, TimeoutError …): nothing sent
            raise DaemonUnavailable(str(exc)) from None
        buf = b""
        try:
            s.sendall((json.dumps(request) + "\n").encode())
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise DaemonNoAnswer(str(exc) or type(exc).__name__) from None
    if not buf.endswith(b"\n"):
        raise DaemonNoAnswer("no answer")
    return json.loads(buf)


def daemon_running(settings: Settings) -> bool:
    try:
        control(settings, {"op": "ping"}, timeout=2.0)
        return True
    except DaemonUnavailable:
        return False


def record(settings: Settings, entries: Sequence[Entry]) -> list[int]:
    """Journal entries durably; returns their sequence numbers. Raises JournalError.

    Through the running daemon if one answers on the control socket (its refusal is raised as it
    is), else directly — see the module's docstring for what guards each moment."""
    try:
        reply = control(settings, {"op": "record", "entries": msgspec.to_builtins(list(entries))},
                        timeout=RECORD_TIMEOUT_S)
    except DaemonNoAnswer as exc:
        raise JournalError(f"the running switch did not answer the record request ({exc}): it may or may not "
                           "have been journaled (search the journal before doing it again)") from None
    except DaemonUnavailable:
        pass  # no daemon answers here: directly, below
    else:
        if not reply.get("ok"):
            raise JournalError(reply.get("error", "refused"))
        return reply["seqs"]
    if shared_pair(settings):
        # Another node is active (its lease is live): the record must go through it — even
        # while its connection to the database, and so the writer lock, is down.
        refusal = not_the_active_node(settings)
        if refusal.active is not None:
            raise refusal
    try:
        return asyncio.run(_direct(settings, entries))
    except JournalBusy as exc:
        if shared_pair(settings):
            raise not_the_active_node(settings) from None
        if isinstance(exc, DaemonRunning):
            raise
        raise JournalError(f"the journal is locked by a process that does not answer: {exc}") from None


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


class DaemonRunning(JournalBusy):
    """``msc serve`` of this node runs (it holds ``serve.lock``) but did not answer on its control
    socket: the journal is not opened beside it."""


@contextlib.asynccontextmanager
async def direct_journal(settings: Settings) -> AsyncIterator[Journal]:
    """The journal opened as its writer by this process, for a moment, closed after — only when
    no ``msc serve`` of this node runs (:func:`msc.instance.no_daemon_here`, held
    throughout; else :class:`DaemonRunning`) and no other process holds the writer lock
    (else :class:`JournalBusy`). Callers ask the daemon first (:func:`control`) and come here
    when none answers."""
    from msc.instance import DaemonHere, no_daemon_here
    from msc.storage.backends import Backends

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(no_daemon_here(settings.data_dir))
        except DaemonHere as exc:
            raise DaemonRunning(str(exc)) from None
        j = Backends(settings).journal()
        await j.open()
        try:
            yield j
        finally:
            await j.close()


async def _direct(settings: Settings, entries: Sequence[Entry]) -> list[int]:
    async with direct_journal(settings) as j:
        return await j.append(*entries)


def record_admin(settings: Settings, text: str, *, user: str | None = None) -> list[int]:
    return record(settings, [Entry(kind=Kind.ADMIN, user=user, text=text)])


def notify_users_changed(settings: Settings, text: str, *, user: str | None = None) -> None:
    """Journal an ADMIN record of a users.toml change and have a running daemon apply it now."""
    record_admin(settings, text, user=user)
    try:
        control(settings, {"op": "users_changed"})
    except DaemonUnavailable:
        pass  # no daemon: it reads the file when it starts
