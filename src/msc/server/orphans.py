"""Sessions a run's end left open: their end, journaled by the next start (JOURNAL.md "Sessions
a node's end left open", OPERATIONS.md "Mnemonic pools" and "Running two nodes").

A session's end is journaled by the process that served it: ``LOGOFF``, ``DISCONNECT``, a pooled
mnemonic's ``POOL … RELEASE …``. A process killed (``kill -9``, a crash, a power loss), or a node
that lost its lease (fenced: it may write nothing more), cannot; without this the journal would
show a loan of ``ECM2`` that never ended, and an investigator asking who held ``ECM2`` between
two times could not tell. PPP §1.6.2 B 1 c: a pooled mnemonic's traffic is logged with who
received it — so each loan's end is a record naming the user.

The run-time state remembers every session whose opening record is committed until its end is
(:class:`msc.server.services.Registry`). At the next start — the same node after a crash, the
other node of a pair at its takeover — before any listener opens, :func:`end_left_open` journals
for each session left there the records its own end would have written, with the reason
``FAILOVER`` (a pair) or ``RESTART`` (a single node):

* a pooled mnemonic's loan: ``POOL ECMDT RELEASE ECM2 FAILOVER`` and ``LOGOFF FAILOVER``;
* a terminal's logon, a bound host or printer: ``LOGOFF FAILOVER``;

each with the user, mnemonic, pool and TAF of its opening record, in the same commit as the
start's ``START`` record. Exactly once: the sessions are marked in the state with the journal's
last sequence number before that commit and forgotten after it; a start that finds marked
sessions looks for a ``START`` after that number (the interrupted start's commit, all or
nothing) and journals them only if there is none.
"""

from __future__ import annotations

import asyncio
from typing import Any

from msc.journal.records import Entry, Kind
from msc.mnemonics.state import OpenSession, RuntimeState


def end_records(row: OpenSession, reason: str) -> list[Entry]:
    """The records that end ``row``'s session, for ``reason`` (``FAILOVER``, ``RESTART``): as a
    session's own end writes them (:meth:`msc.server.services.Registry.release_pooled`,
    :meth:`msc.server.operator.Operator.logoff`)."""
    out = []
    if row.pool is not None:
        out.append(Entry(kind=Kind.SESSION, peer=row.pool, mnemonic=row.mnemonic, user=row.user, taf=row.taf,
                         text=f"POOL {row.pool} RELEASE {row.mnemonic} {reason}"))
    out.append(Entry(kind=Kind.SESSION, peer=row.peer, mnemonic=row.mnemonic, user=row.user, taf=row.taf,
                     text=f"LOGOFF {reason}"))
    return out


async def end_left_open(journal: Any, state: RuntimeState, start: Entry, reason: str) -> list[OpenSession]:
    """Journal ``start`` (the switch's ``START`` record), after the end of every session the
    state still holds as open (see the module docstring); returns the sessions ended now.
    Raises what the journal or the state raises (the start fails; nothing is lost: the next
    start does it)."""
    rows = await asyncio.to_thread(state.open_sessions)
    ended: set[int] = set()
    for after in sorted({r.closing_after for r in rows if r.closing_after is not None}):
        if await journal.starts_after(after):  # that start's commit ended them
            ended.update(r.seq for r in rows if r.closing_after == after)
    if ended:
        await asyncio.to_thread(state.sessions_changed, (), sorted(ended))
    todo = [r for r in rows if r.seq not in ended]
    if todo:
        await asyncio.to_thread(state.sessions_closing, [r.seq for r in todo], journal.last_seq)
    await journal.append(*[e for r in todo for e in end_records(r, reason)], start)
    if todo:
        await asyncio.to_thread(state.sessions_changed, (), [r.seq for r in todo])
    return todo
