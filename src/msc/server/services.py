"""What a session may use — and all it may use (uvicorn's ``ServerState`` is the model).

A :class:`msc.server.session.Session` is given one :class:`Services` by the switch and never sees
the :class:`msc.server.switch.Switch`: accounts (logon, PWD, a host's OIF), admission (route,
authorization, capacity, the request's records), delivery (its outputs), the journal, the
connection registry, the refusal budgets, the configuration, a clock and the metrics. The
switch, in turn, reaches a session only through its public methods (``close``, ``logoff``,
``reconfigure``, ``tick``, ``summarize_refusals``) and the delivery ``Sink``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from msc.journal.records import Entry, Kind
from msc.mnemonics.state import OpenSession
from msc.outage import Outage

if TYPE_CHECKING:
    from msc.config.model import Config
    from msc.config.settings import Settings
    from msc.mnemonics.accounts import Accounts
    from msc.mnemonics.directory import Directory
    from msc.mnemonics.state import RuntimeState
    from msc.ops.metrics import Metrics
    from msc.routing.admission import Admission
    from msc.routing.delivery import Delivery
    from msc.routing.router import Router
    from msc.server.budgets import Budgets
    from msc.server.refusals import RefusalWindow


log = structlog.get_logger("msc.sessions")

#: The opening records' sequence numbers a ``session.end_not_journaled`` line names (its ``count``
#: says how many sessions in all): a busy node's step-down ends hundreds at once.
SEQS_LOGGED = 10


class Attached(Protocol):
    """What the registry and the switch may use of a session (:class:`msc.server.session.Session`):
    its public methods, nothing private."""

    mnemonic: str | None
    endpoint: str | None
    alloc: Any
    taf: str | None
    refusals: RefusalWindow

    @property
    def user(self) -> str | None: ...

    @property
    def kind(self) -> str | None: ...

    @property
    def inflight(self) -> int: ...  # messages awaiting their journal commit

    def replaced(self) -> None: ...

    def close(self, why: str | None = None) -> None: ...

    def logoff(self, why: str) -> None: ...

    def reconfigure(self, directory: Directory) -> None: ...

    def tick(self, now: float, cfg: Config) -> None: ...

    def summarize_refusals(self, *, force: bool = False) -> None: ...


class JournalWriter(Protocol):
    """The journal as a session writes it: records in, a future of their sequence numbers out."""

    def submit(self, entries: list[Entry]) -> asyncio.Future[list[int]]: ...


@dataclass(slots=True, eq=False)
class Services:
    accounts: Accounts
    admission: Admission
    delivery: Delivery
    journal: JournalWriter
    registry: Registry
    budgets: Budgets  # what refused and unauthenticated traffic may cost
    settings: Callable[[], Settings]
    directory: Callable[[], Directory]
    clock: Callable[[], float]  # wall clock, seconds (journal times, certification dates)
    metrics: Metrics
    #: The run-time state a LOGON or PWD needs, away (E503): said once per outage for all the
    #: sessions, not at each logon (msc.outage), and once when a logon or PWD is decided again.
    storage: Outage = field(default_factory=lambda: Outage(
        "session.storage_unavailable", "session.storage_available", logger=structlog.get_logger("msc.session")))


class Registry:
    """The switch's connections, and which session holds each delivery endpoint (a station's
    mnemonic, a pooled mnemonic lent to a session).

    It also keeps, in the run-time state, the sessions open in the journal
    (:class:`~msc.mnemonics.state.OpenSession`): one row from the commit of a session's opening
    record (``LOGON OK``, ``BIND``) until the commit of its end, so that the next start — this
    node's after a crash, the other node's at a takeover — journals the end of each session this
    run could not (:mod:`msc.server.orphans`, JOURNAL.md "Sessions a node's end left open"). Its
    writes go through one worker thread, in order."""

    def __init__(self, *, delivery: Callable[[], Delivery], accounts: Accounts, journal: Callable[[], Any],
                 directory: Callable[[], Directory], router: Callable[[], Router], metrics: Metrics,
                 state: Callable[[], RuntimeState] | None = None) -> None:
        self.sessions: set[Attached] = set()
        self.holders: dict[str, Attached] = {}  # endpoint → the session it is attached to
        self.opened_at: dict[Attached, int] = {}  # session → the sequence number of its opening record
        self._state = state
        self._writes: ThreadPoolExecutor | None = None
        # Changes not yet written (sessions opened, sequence numbers of those ended): one write
        # takes all that came meanwhile (a burst of logons after a failover is a few commits).
        self._pending: tuple[list[OpenSession], list[int]] = ([], [])
        self._pending_lock = threading.Lock()
        self._write_queued = False
        # During a database outage every logon and every end fails its write: said once, and once
        # at the first write that succeeds again (msc.outage). Only the loop's thread uses it.
        self._write_outage = Outage("session.state_write_failed", "session.state_write_recovered", logger=log)
        # Sessions whose end the journal refused (their opening records' seqs), not yet said: one
        # line per occasion, not one per session (_not_journaled). After a step-down every end is
        # refused and was said at once (ends_refused): nothing more is gathered.
        self._unjournaled: list[int] = []
        self._ending: set[int] = set()  # sessions whose end's records are being committed
        self._ends_said = False
        self._delivery = delivery
        self._accounts = accounts
        self._journal = journal
        self._directory = directory
        self._router = router
        self._metrics = metrics

    def __iter__(self) -> Iterator[Attached]:
        return iter(list(self.sessions))

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, sess: Attached) -> None:
        self.sessions.add(sess)

    def discard(self, sess: Attached) -> None:
        self.sessions.discard(sess)

    def __contains__(self, sess: object) -> bool:
        return sess in self.sessions

    def bound(self, sess: Attached) -> None:
        """``sess`` logged on or bound: it holds its endpoint (a newer session of the same
        station replaces an older one — a restarted terminal)."""
        endpoint = sess.mnemonic
        assert endpoint is not None
        old = self.holders.get(endpoint)
        if old is not None and old is not sess:
            old.replaced()
        if sess.alloc is not None:
            # A new loan starts with an empty queue: what waits is an ended allocation's (an
            # output committed after its session ended, or restored from the last run).
            self._router().redirect_waiting(endpoint)
        self.holders[endpoint] = sess
        sess.endpoint = endpoint
        self._metrics.sessions.labels(sess.kind).inc()
        self._delivery().attach(endpoint, sess)  # type: ignore[arg-type]  # a Session is a Sink

    def opened(self, sess: Attached, seq: int) -> None:
        """``sess``'s opening record (``LOGON OK …``, ``BIND``) is committed as ``seq``: remember
        the session as open (unless it ended meanwhile)."""
        endpoint = sess.endpoint
        if endpoint is None or self.holders.get(endpoint) is not sess or sess in self.opened_at:
            return
        self.opened_at[sess] = seq
        alloc = sess.alloc
        row = OpenSession(seq=seq, kind=sess.kind or "terminal", peer=alloc.pool if alloc else endpoint,
                          mnemonic=endpoint, pool=alloc.pool if alloc else None, user=sess.user, taf=sess.taf,
                          opened=time.time())
        self._changed(opened=row)

    def _ended(self, sess: Attached) -> None:
        """``sess`` ended (its end's records are submitted within this loop iteration): forget it
        once they are committed — the newest append is done and no commit failed since. A failed
        or refused commit (the journal away, this node fenced or stepped down) keeps the row: the
        next start journals the end."""
        seq = self.opened_at.pop(sess, None)
        if seq is None or self._state is None:
            return
        journal = self._journal()
        errors = journal.errors_total if journal is not None else 0
        self._ending.add(seq)

        def after_records() -> None:
            fut = journal.last_submitted if journal is not None else None
            if fut is None:
                self._ending.discard(seq)
                return

            def done(f: asyncio.Future[Any]) -> None:
                self._ending.discard(seq)
                if f.cancelled() or f.exception() is not None or journal.errors_total != errors:
                    self._not_journaled(seq, journal)
                    return
                self._changed(ended=seq)
                self.say_not_journaled()  # an end journaled: the journal's outage is over

            fut.add_done_callback(done)

        asyncio.get_running_loop().call_soon(after_records)

    def _not_journaled(self, seq: int, journal: Any) -> None:
        """The end of the session opened at ``seq`` was not journaled (its row stays: the next
        start journals it). Gathered while the journal refuses commits and said in one line when
        it commits again (:meth:`say_not_journaled`; or at the stop, or the step-down) — a line per
        session was hundreds at a busy node's step-down."""
        if self._ends_said:
            return
        self._unjournaled.append(seq)
        if journal is None or journal.healthy:  # (a commit since: the outage is over already)
            self.say_not_journaled()

    def say_not_journaled(self, also: list[int] | None = None) -> None:
        """One ``session.end_not_journaled`` for the ends gathered (and ``also``), if any: ``count``
        and the first :data:`SEQS_LOGGED` opening records' ``seqs``."""
        seqs = sorted(self._unjournaled + (also or []))
        self._unjournaled = []
        if seqs:
            log.warning("session.end_not_journaled", count=len(seqs), seqs=seqs[:SEQS_LOGGED],
                        note="the next start journals their ends")

    def ends_refused(self) -> None:
        """This node stepped down (its journal refuses every append from now on): the end of
        every session still open, or whose end is still being committed, will not be journaled
        here — said now, in one line with those gathered before; the refusals that follow say
        nothing more."""
        self.say_not_journaled([*self.opened_at.values(), *self._ending])
        self._ends_said = True

    def _changed(self, *, opened: OpenSession | None = None, ended: int | None = None) -> None:
        """Note a change of the open sessions for the registry's one worker thread, which
        writes every change noted before it runs in one step (in order: a session's row is
        always written before, or in the same step as, its removal)."""
        if self._state is None:
            return
        with self._pending_lock:
            if opened is not None:
                self._pending[0].append(opened)
            if ended is not None:
                self._pending[1].append(ended)
            if self._write_queued:
                return
            self._write_queued = True
        if self._writes is None:
            self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="msc-open-sessions")
        fut = asyncio.get_running_loop().run_in_executor(self._writes, self._write_pending, self._state())

        def done(f: asyncio.Future[bool]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                self._write_outage.failed(str(exc) or type(exc).__name__)
            elif f.result():
                self._write_outage.ok()

        fut.add_done_callback(done)

    def _write_pending(self, state: RuntimeState) -> bool:
        """Write every change noted; True when there was one (False: an earlier write took them)."""
        with self._pending_lock:
            opened, ended = self._pending
            self._pending = ([], [])
            self._write_queued = False
        if not opened and not ended:
            return False
        try:
            state.sessions_changed(opened, ended)
        except BaseException:
            with self._pending_lock:  # written with the next change (or at the stop), in order
                self._pending = (opened + self._pending[0], ended + self._pending[1])
            raise
        return True

    async def flush(self) -> None:
        """Write what is noted and not yet written (a stop, before the state closes). What stays
        unwritten is said here even when its outage was said already: this is its last chance.
        The ends the journal refused that are not said yet are said now."""
        self.say_not_journaled()
        if self._writes is None or self._state is None:
            return
        try:
            if await asyncio.get_running_loop().run_in_executor(self._writes, self._write_pending, self._state()):
                self._write_outage.ok()
        except Exception as exc:  # the state away: the next start journals these sessions' ends
            with self._pending_lock:
                unwritten = len(self._pending[0]) + len(self._pending[1])
            log.warning("session.state_write_failed", error=str(exc) or type(exc).__name__, at="stop",
                        unwritten=unwritten)
        self._writes.shutdown(wait=False)
        self._writes = None

    def unbound(self, sess: Attached, why: str) -> None:
        endpoint = sess.endpoint
        self._ended(sess)
        if sess.alloc is not None:
            self.release_pooled(sess, why)
        if endpoint is None:
            return
        sess.endpoint = None
        if self.holders.get(endpoint) is sess:
            del self.holders[endpoint]
        self._delivery().detach(endpoint, sess)  # type: ignore[arg-type]
        self._metrics.sessions.labels(sess.kind).dec()

    def release_pooled(self, sess: Attached, why: str) -> None:
        """Give a pooled session's mnemonic back; what still waits for it goes to the pool's
        defined destination or is recorded undelivered (PPP §1.6.2 B 1 f)."""
        alloc = sess.alloc
        if alloc is None:
            return
        sess.alloc = None
        self._accounts.release(alloc)
        self._journal().submit([Entry(kind=Kind.SESSION, peer=alloc.pool, mnemonic=alloc.mnemonic, user=alloc.user,
                                      taf=sess.taf, text=f"POOL {alloc.pool} RELEASE {alloc.mnemonic} {why}")])
        self._router().redirect_waiting(alloc.mnemonic)
