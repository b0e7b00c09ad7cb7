"""An upstream's resend of a message msc journaled but could not acknowledge (PROTOCOL.md §4
"Messages msc journaled and could not acknowledge").

An upstream sends each message as an ``M`` frame and keeps it until msc answers ``A`` (or a
final ``N``); msc answers ``A`` only once the message's journal record is committed. When the
connection is gone by then — failed in its handshake, failed by msc's link-health rules, closed
by the upstream or the network — the record exists (and the message was delivered or queued) but
the ``A`` could not be written, so the upstream sends the message again on its next connection,
to either endpoint. The link protocol gives msc nothing to know it by: an ``xid`` is numbered per
connection (PROTOCOL.md §1), and neither the CLETS PPP nor NCIC/Nlets texts carry a number msc
could keep.

What msc does know is exactly which messages it journaled and could not acknowledge. This table
keeps them, per upstream (both endpoints: the two switching centres of PPP §1.4.1 resend each
other's traffic), as the SHA-256 of their bytes:

* a message whose commit finished after its connection was gone is an **orphan**, kept until
  ``resend_wait_s`` after the link's next connection came up (the upstream resends at once on a
  new connection), at most :data:`MAX_ORPHANS` per upstream, oldest forgotten first;
* a message still **committing** when a message with the same bytes comes on a *later*
  connection: the commit now answers on that connection;
* a message from the upstream with the bytes of one of these is its resend: msc answers it ``A``
  once the first copy's record is committed — no second record, no second delivery. If that
  commit failed, the resend is answered ``N E501`` as the first copy would have been (the upstream
  sends it again, and it is then a new message).

The same bytes on the *same* connection are never taken for a resend (an upstream sends a
message again only after its ``N`` or on a new connection), and each kept message matches one
resend: two identical messages lost together are two records, and each resend takes one.

Limits (PROTOCOL.md §4): the table lives in memory, so a resend after msc restarted, or after a
failover to the other node, is journaled again; and an ``A`` msc wrote that the upstream never
read (the connection broke while it was on the wire) cannot be told from a delivered one.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Orphans kept per upstream at most (32-byte digests): beyond it the oldest is forgotten and its
#: resend, if it still comes, is journaled again.
MAX_ORPHANS = 10_000
#: How often (seconds) the orphans' deadlines are looked at, at most.
PRUNE_EVERY_S = 1.0


def digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


@dataclass(slots=True)
class _Orphan:
    made_at: float  # monotonic: when its (latest) commit finished with the connection gone
    deadline: float | None = None  # resend_wait_s after the link's next connection came up
    count: int = 1  # identical messages lost together: each resend takes one


@dataclass(slots=True, eq=False)
class Copy:
    """A message from an upstream whose record is being committed: its ``A`` (or ``N E501``) goes to
    ``xid`` on ``connection`` — the latest connection the upstream sent it on."""

    payload: bytes
    connection: Any
    xid: int
    resent: int = 0  # times it came again, on a later connection, while its commit was under way


@dataclass
class _Upstream:
    """One upstream's messages journaled, or being journaled, without their A."""

    #: connection → xid → its copy: messages whose commit is under way.
    committing: dict[Any, dict[int, Copy]] = field(default_factory=dict)
    orphans: OrderedDict[bytes, _Orphan] = field(default_factory=OrderedDict)
    pruned_at: float = -PRUNE_EVERY_S


#: What :meth:`Resends.match` found: a resend of a message still being committed (its copy now
#: answers on the resend's connection), or of one already journaled (answer it ``A`` now).
COMMITTING = "committing"
JOURNALED = "journaled"


class Resends:
    """The messages each upstream may send again (see the module text). ``wait_s(name)`` is the
    upstream's ``resend_wait_s``; ``up_at(name)`` the monotonic time its current connection came up
    (None while it is down)."""

    def __init__(self, *, wait_s: Callable[[str], float], up_at: Callable[[str], float | None],
                 clock: Callable[[], float] = time.monotonic, max_orphans: int = MAX_ORPHANS) -> None:
        self._wait_s = wait_s
        self._up_at = up_at
        self._clock = clock
        self._max = max_orphans
        self._by_link: dict[str, _Upstream] = {}
        self.forgotten = 0  # orphans dropped for room (MAX_ORPHANS)

    def _state(self, link: str) -> _Upstream:
        st = self._by_link.get(link)
        if st is None:
            st = self._by_link[link] = _Upstream()
        return st

    # -- the hot path: every message from an upstream -------------------------------------------

    def committing(self, link: str, connection: Any, xid: int, payload: bytes) -> Copy:
        """A message's record was submitted; answer it through the copy returned."""
        copy = Copy(payload, connection, xid)
        self._state(link).committing.setdefault(connection, {})[xid] = copy
        return copy

    def committed(self, link: str, copy: Copy, *, acknowledged: bool, recorded: bool) -> None:
        """Its commit ended: ``recorded`` it is in the journal, ``acknowledged`` its A was written
        (on ``copy.connection``). A record without its A is kept as an orphan."""
        st = self._by_link.get(link)
        if st is None:
            return
        on = st.committing.get(copy.connection)
        if on is not None and on.get(copy.xid) is copy:
            del on[copy.xid]
            if not on:
                del st.committing[copy.connection]
        if recorded and not acknowledged:
            self.orphan(link, copy.payload)

    def may_hold(self, link: str, connection: Any) -> bool:
        """Could a message on ``connection`` be a resend? (cheap: False on a healthy link)"""
        st = self._by_link.get(link)
        if st is None:
            return False
        return bool(st.orphans) or any(c is not connection for c in st.committing)

    def match(self, link: str, connection: Any, xid: int, payload: bytes) -> str | None:
        """Is ``payload``, received on ``connection`` as ``xid``, a resend? :data:`COMMITTING`: of a
        message whose commit is under way — its answer now goes to this ``xid`` and connection;
        :data:`JOURNALED`: of an orphan, now forgotten (answer ``A``; if that cannot be written
        either, :meth:`orphan` it again); None: a new message."""
        st = self._by_link.get(link)
        if st is None:
            return None
        for conn, on in st.committing.items():
            if conn is connection:
                continue
            for old_xid, copy in on.items():
                if copy.payload == payload:
                    del on[old_xid]
                    if not on:
                        del st.committing[conn]
                    copy.connection, copy.xid = connection, xid
                    copy.resent += 1
                    st.committing.setdefault(connection, {})[xid] = copy
                    return COMMITTING
        if st.orphans:
            self._prune(link, st)
            key = digest(payload)
            o = st.orphans.get(key)
            if o is not None:
                o.count -= 1
                if o.count == 0:
                    del st.orphans[key]
                return JOURNALED
        return None

    # -- orphans --------------------------------------------------------------------------------

    def orphan(self, link: str, payload: bytes) -> None:
        """``payload`` is journaled and its A could not be written: keep it for its resend."""
        st = self._state(link)
        key = digest(payload)
        o = st.orphans.pop(key, None)
        st.orphans[key] = _Orphan(self._clock(), count=o.count + 1 if o is not None else 1)
        while len(st.orphans) > self._max:
            st.orphans.popitem(last=False)
            self.forgotten += 1

    def orphans(self, link: str) -> int:
        st = self._by_link.get(link)
        return len(st.orphans) if st is not None else 0

    def _prune(self, link: str, st: _Upstream) -> None:
        now = self._clock()
        if now - st.pruned_at < PRUNE_EVERY_S:
            return
        st.pruned_at = now
        up_at = self._up_at(link)
        wait = self._wait_s(link)
        for key, o in list(st.orphans.items()):
            if o.deadline is None and up_at is not None:
                o.deadline = max(up_at, o.made_at) + wait
            if o.deadline is not None and now >= o.deadline:
                del st.orphans[key]


__all__ = ["COMMITTING", "JOURNALED", "MAX_ORPHANS", "Copy", "Resends", "digest"]
