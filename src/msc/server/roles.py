"""The node's role in an active/standby pair (``[node]``; OPERATIONS.md "Running two nodes"):
standby start, becoming active, stepping down, and what ``/readyz`` says of the node.

A part of :class:`msc.server.switch.Switch` (its attributes: :class:`msc.server.parts.SwitchParts`); the lease that drives it is kept by
:func:`msc.server.node.keeper_for` (``msc.server.main`` wires the two).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from msc.aio import bounded
from msc.mnemonics.directory import Directory
from msc.server.parts import SwitchParts

#: How often a node of a pair looks at the key ring with its master key file (seconds; a standby
#: from its start, the active node too): the lease is not taken while the look fails, so a
#: rotation on the other machine holds this node back within about this long.
KEY_RING_RECHECK_S = 2.0
#: The look at the key ring a node takes right after the lease was granted, before it opens
#: anything, is given up after this long (seconds): the start then opens the key ring itself.
TAKEOVER_CHECK_S = 10.0


class NodeRole(SwitchParts):
    """The node's role in an active/standby pair — a part of :class:`msc.server.switch.Switch`:
    standby start, becoming active, stepping down, and what ``/readyz`` says of the node."""

    _key_ring_watch: asyncio.Task[None] | None = None
    #: Why this machine's master key file cannot open the key ring (``keyring.unusable``), or None:
    #: ``/readyz`` shows it as ``key_ring`` (a standby: among its reasons), and
    #: ``msc_key_ring_unusable`` is 1 while it holds.
    key_ring_problem: str | None = None
    _key_ring_unreachable: str | None = None  # the key ring's database could not be asked (said once)
    _watch_ring: Any = None  # the watch's own key ring handle (one connection, kept between looks)
    _watch_lock: Any = None  # threading.Lock: one look at a time (the watch's, the takeover's)
    #: The lease keeper's :meth:`msc.ha.keeper.LeaseKeeper.check` (``msc.server.main`` sets it):
    #: steps the node down now if its belief in the lease has ended and its timer has not run yet.
    lease_check: Callable[[], object] | None = None

    async def start_standby(self) -> None:
        """A standby node: only the operations endpoint (``/readyz`` answers 503 ``standby``,
        ``/metrics`` says the role); no journal, no listeners, no upstream links until
        :meth:`start`, once the node holds the lease."""
        from msc.ops.http import OpsServer

        self.metrics.role("standby")
        self.metrics.pair_node(str(self.node_name), self.settings.config.switch.name)
        self.ops = OpsServer(self)
        await self.ops.start(self.settings.config.metrics.bind)
        self.log.info("node.standby", node=self.node_name)
        # Beside standing by, not before it: a database that does not answer must not delay /readyz.
        self._key_ring_watch = asyncio.create_task(self.watch_key_ring(), name="key-ring-watch")
        self.watch_users()  # (PostgreSQL: this machine's users.toml kept the database's copy, userdir.py)

    async def watch_key_ring(self) -> None:
        """A node of a pair looks at the key ring when it starts and then every
        ``KEY_RING_RECHECK_S``, standby or active (the active journal's
        :meth:`msc.journal.journal.Journal.keys_ahead` also looks, every minute, as it makes next
        month's key): a master key rotated on the other machine shows within seconds — and the
        standby holds back from the lease (:meth:`lease_hold_back`) — and the all-clear once the
        file is copied, without a restart. Each look is one read of the key ring on the watch's
        own connection, in a worker thread."""
        try:
            while True:
                await self.check_key_ring()
                await asyncio.sleep(KEY_RING_RECHECK_S)
        finally:  # (cancelled: the node leaves or stepped down) its connection is cut, not waited for
            self._drop_watch_ring("the node is leaving")

    def _drop_watch_ring(self, why: str) -> None:
        ring, self._watch_ring = self._watch_ring, None
        if ring is None:
            return
        abort = getattr(ring.store, "abort", None)  # PostgreSQL's: a look waiting on the database given back
        with contextlib.suppress(Exception):
            if abort is not None:
                abort(why)
            ring.close()

    async def check_key_ring(self) -> None:
        """Open the key ring as a takeover would (on PostgreSQL: the shared one, importing a key
        ring file left on this machine) and unwrap its entries with this machine's master key
        file as it is now (:meth:`msc.keyring.KeyRing.check_usable`); what it found goes to
        :meth:`key_ring_checked`."""
        import threading

        if self._watch_lock is None:
            self._watch_lock = threading.Lock()

        def check() -> None:
            with self._watch_lock:
                ring = self._watch_ring
                if ring is None:  # (kept between looks: a failed one reconnects by itself)
                    ring = self._watch_ring = self.backends.keyring(self.log)
                ring.check_usable()

        try:
            await asyncio.to_thread(check)
        except Exception as exc:  # noqa: BLE001 - whatever it is, said (key_ring_checked), never a task's traceback
            self.key_ring_checked(exc)
        else:
            self.key_ring_checked(None)

    def key_ring_checked(self, exc: BaseException | None) -> None:
        """What a look at the key ring found — the standby's :meth:`check_key_ring`, the active
        journal's keys ahead (``on_keys``): None, usable (after a problem: ``keyring.usable``,
        info); the key ring's database not answering, only noted (``keyring.not_checked``, once:
        the node waits for its database anyway, and /readyz shows the journal's); anything else
        — this machine's master key file is not the key ring's, an entry that does not
        authenticate, no key ring, a file that cannot be read — is ``keyring.unusable`` (error,
        naming the fix, logged when it begins or changes), ``/readyz`` ``key_ring`` and
        ``msc_key_ring_unusable`` 1, until a look finds it usable again (OPERATIONS.md "Metrics
        and health")."""
        from msc.keyring import KeyError_

        if self.journal is not None:
            self.metrics.key_ring_next_month_ready.set(1 if self.journal.keys_ready() else 0)
        if exc is None:
            self._key_ring_unreachable = None
            if self.key_ring_problem is not None:
                self.log.info("keyring.usable", node=self.node_name, was=self.key_ring_problem)
            self.key_ring_problem = None
            self.metrics.key_ring_unusable.set(0)
            return
        if self.backends.postgresql:
            from msc.storage.pgkeyring import KeyRingUnavailable

            if isinstance(exc, KeyRingUnavailable):
                if self._key_ring_unreachable is None:
                    self.log.info("keyring.not_checked", node=self.node_name, reason=str(exc))
                self._key_ring_unreachable = str(exc)
                return
        reason = str(exc) if isinstance(exc, KeyError_) else f"{type(exc).__name__}: {exc}"
        if reason != self.key_ring_problem:
            self.log.error("keyring.unusable", node=self.node_name, reason=reason)
        self.key_ring_problem = reason
        self.metrics.key_ring_unusable.set(1)

    def lease_hold_back(self) -> str | None:
        """Why this node must not take the lease now (the lease keeper's ``hold_back``), or None:
        its master key file cannot open the key ring — it would win a failover it cannot serve
        and, failing, make the other node wait out the lease again (newcomer7 #1)."""
        if self.key_ring_problem is None:
            return None
        return f"this machine's master key file cannot open the key ring: {self.key_ring_problem}"

    async def takeover_refused(self) -> str | None:
        """Right after the lease was granted, before anything is opened: one more look at the key
        ring (the last one may be ``KEY_RING_RECHECK_S`` old — a rotation just before a failover).
        Why the takeover must not go on (the node releases the lease at once and stands by), or
        None. A look that cannot be made (the key ring's database, no answer in
        ``TAKEOVER_CHECK_S``) refuses nothing: the start opens the key ring itself."""
        with contextlib.suppress(TimeoutError):
            await bounded(self.check_key_ring(), TAKEOVER_CHECK_S)
        return self.lease_hold_back()

    def standby_reasons(self) -> dict[str, str | list[str] | None]:
        """For /readyz on a node that is not active: its role, and why the key ring would fail a
        takeover (``key_ring``) if it would."""
        reasons: dict[str, str | list[str] | None] = {"role": self.role}
        if self.key_ring_problem is not None:
            reasons["key_ring"] = self.key_ring_problem
        return reasons

    def run_words(self) -> str:
        """What the ``START`` and ``STOP`` records of a pair's node add (JOURNAL.md): which
        node, under which lease epoch — `` NODE/msc-b EPOCH/17``; nothing for a single node."""
        return f" NODE/{self.node_name} EPOCH/{self.lease_epoch}" if self.node_name is not None else ""

    async def open_deferred_state(self) -> None:
        """A node of a pair on PostgreSQL taking over: its run-time state now (the switch deferred
        it, so that a standby waits out a database outage): the locked accounts, the logon
        counts and the disabled stations from the database."""
        if not self._state_deferred:
            return
        await asyncio.to_thread(self._state.open)
        await asyncio.to_thread(self.auth.refresh)
        self.metrics.count_logons(self.state.auth_counts)
        disabled = await asyncio.to_thread(self.state.disabled_stations)
        self.directory = Directory(self.settings, disabled_stations=frozenset(disabled))

    def confirm_role(self) -> str:
        """The node's role, once the lease keeper has had its say: an active node whose belief in
        the lease has ended is stepped down first (:meth:`step_down`, by the keeper's own path).
        Its deadline timer does that when the belief ends; this covers a report asked for before
        the timer ran — an event loop busy past the end, answering ``/readyz`` first — so that no
        answer says ``active`` after ``lease_ttl_s × 0.99`` from the last renewal's send."""
        if self.role == "active" and self.lease_check is not None:
            self.lease_check()
        return self.role

    def refresh_gauges(self) -> None:
        """Before ``/metrics`` is rendered (msc.ops.http): ``msc_node_role`` as :meth:`confirm_role` has it."""
        self.confirm_role()

    def became_active(self, epoch: int, taken: str = "free", previous: str | None = None) -> None:
        """The node serves under ``epoch``. ``node.active`` is a warning only for a failover — the
        lease of another node (``previous``) ran out and this one took it (``taken`` "failover");
        a lease that was free, released or this node's own is an ordinary start: info (newcomer
        trial F8: a warning alert fired at every start)."""
        self.role = "active"
        self.lease_epoch = epoch
        self.metrics.role("active", epoch)
        level = self.log.warning if taken == "failover" else self.log.info
        level("node.active", node=self.node_name, epoch=epoch, taken=taken, previous=previous)

    def step_down(self, reason: str) -> None:
        """The lease is lost (not renewed in time, refused, or a commit was fenced): stop serving
        at once — nothing more is written to the journal, the listeners close, every session is
        sent ``SYS LOGOFF.SHUTDOWN`` (a client with two addresses goes to the other node) and
        closed. Nothing is drained: in-flight work is the new active node's (its recovery pass
        tells operators of requests that were upstream, E302). Synchronous, so that it happens
        in the loop iteration that noticed."""
        if self.stepped_down is not None:
            return
        self.stepped_down = reason
        self.role = "standby"
        self.metrics.role("standby")
        # The logon counts are left out of scrapes from now (as on a standby), before anything is
        # given back: a scrape's read failing on the given-back state is then no outage to report.
        self.metrics.stop_counting_logons()
        self.log.error("node.stepped_down", node=self.node_name, epoch=self.lease_epoch, reason=reason)
        if self.journal is not None and self.journal.refused is None:
            # As when the journal finds itself altered: every append is refused from now on.
            self.journal.refused = f"this node stepped down ({reason}): nothing more is journaled here"
            # Given up on purpose, not failed: one line (info) says what the next active node
            # signs — no checkpoint or retention error follows (they are JournalFenced or cut).
            self.log.info("journal.handed_over", node=self.node_name, epoch=self.lease_epoch,
                          committed=self.journal.committed_size, unsigned=self.journal.unsigned_tail,
                          note="the next active node signs the unsigned records" if self.journal.unsigned_tail
                          else "every committed record is signed")
        # Their ends are refused from now (the next active node journals them): one line for all.
        self.sessions.ends_refused()
        for rt in self.listeners:
            if rt.server:
                rt.server.close()
        for sess in list(self.sessions):
            sess.close("SHUTDOWN")

    def abandon_storage(self, why: str) -> None:
        """A node that stepped down is leaving: give back now every storage call still waiting on
        the database and cut the journal writer's connection, without waiting for anything.

        Why (issue 16, the hung teardown): the process's teardown joins the worker threads of
        ``asyncio.to_thread`` and of the logon checks, and each of them may be blocked in a call
        of the run-time state, the queues or the ledger (the once-a-second lockout refresh, a
        logon's attempt count, the queues' snapshot, the recovery pass's journal reads). With the
        database frozen or cut off — no
        answer, not even a reset — such a call waited for asyncpg's statement timeout, then for
        its cancellation request, then for a pool connection (minutes), and so did the exit:
        ``node.exit_forced`` fired. Every call is bounded now (CALL_TIMEOUT_S), and this makes a
        stepped-down node's teardown not wait even that: nothing of it may be written any more."""
        self._quiet_after_abandon(self.backends.postgresql)
        # What looks at the storage again and again stops first, and says nothing of the failures
        # the step-down itself makes ("this node stepped down"): the key ring's and the user
        # directory's looks, the queues' snapshot, the logon counts read at each /metrics scrape
        # (left out from now on, as on a standby) — newcomer9 F3: an error with a traceback per scrape.
        if self._key_ring_watch is not None:  # its look may be waiting on the database
            self._key_ring_watch.cancel()
        self.abandon_users()
        self.metrics.stop_counting_logons()
        if self.delivery is not None:
            self.delivery.abandon()
        self._drop_watch_ring(f"this node stepped down ({why})")
        handles = (self._state, self.ledger, self.delivery.store if self.delivery is not None else None,
                   self.users_store)
        for handle in handles:
            abort = getattr(handle, "abort", None)  # PostgreSQL's handles (SQLite's calls are local)
            if abort is not None:
                with contextlib.suppress(Exception):
                    abort(f"this node stepped down ({why})")
        writer = self.journal.writer if self.journal is not None else None
        abort_writer = getattr(writer, "abort", None)  # PostgreSQL's writer: its connection cut
        if abort_writer is not None:
            with contextlib.suppress(Exception):
                abort_writer()
        keys = getattr(getattr(self.journal, "keyring", None), "store", None)  # the journal's look at its key ring
        abort_keys = getattr(keys, "abort", None)  # PostgreSQL's key ring: its one connection cut
        if abort_keys is not None:
            with contextlib.suppress(Exception):
                abort_keys(f"this node stepped down ({why})")
        storage = getattr(self.journal, "storage", None)  # PostgreSQL's readers (the recovery pass …)
        abort_readers = getattr(storage, "abort", None)
        if abort_readers is not None:
            with contextlib.suppress(Exception):
                abort_readers(f"this node stepped down ({why})")

    @staticmethod
    def _quiet_after_abandon(postgresql: bool) -> None:
        """What a leaving node cuts short ends in errors nobody retrieves any more, which asyncio
        prints with a traceback: the database operations cut under their awaiting code (the
        driver's errors: "Future exception was never retrieved"), and a connection handler of the
        metrics endpoint or control socket accepted just before the teardown and cancelled before
        its first step — its own ``except CancelledError`` never ran, and Python 3.11's stream
        server asks the cancelled task for its exception ("Exception in callback …
        CancelledError", seen in the SIGSTOP e2e under load). Each was abandoned on purpose; the
        step-down is logged once by its cause."""
        quiet: tuple[type[BaseException], ...] = (asyncio.CancelledError,)
        if postgresql:
            from msc.storage.postgres import DB_ERRORS

            quiet += DB_ERRORS
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if isinstance(context.get("exception"), quiet):
                return
            if previous is not None:
                previous(lp, context)
            else:
                lp.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def node_status(self) -> dict[str, Any] | None:
        """For /readyz: this node's name, role and epoch (None for a single node)."""
        if self.node_name is None:
            return None
        doc: dict[str, Any] = {"name": self.node_name, "role": self.role, "epoch": self.lease_epoch}
        if self.lease_info is not None:
            info = self.lease_info()
            if self.role != "active" and info.get("holder"):
                doc["holder"] = info["holder"]  # another node, its lease valid by the last answered read
            elif self.role != "active" and info.get("lease"):
                doc["lease"] = info["lease"]  # no holder known: why (unknown, free, expired, its own name …)
            if self.role != "active" and info.get("held_back"):
                doc["held_back"] = info["held_back"]  # why it does not take the lease (lease_hold_back)
            if info.get("error"):
                doc["lease_error"] = info["error"]  # the lease's database cannot be reached
        if self.stepped_down:
            doc["stepped_down"] = self.stepped_down
        return doc
