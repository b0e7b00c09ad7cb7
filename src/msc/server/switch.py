"""The Switch: wires config, directory, journal, router, delivery and listeners together.

It owns start, stop and drain (uvicorn's ``Server`` is the model: stop accepting, ask each
connection to finish, wait with a timeout, close what remains, then the resources), and builds
the :class:`~msc.server.services.Services` every session is given — sessions never see the
switch. What it delegates: logons and PWD to :class:`msc.mnemonics.accounts.Accounts`, request
admission to :class:`msc.routing.admission.Admission`, the connections and their endpoints to
:class:`msc.server.services.Registry`, configuration changes to :mod:`msc.server.reload`,
background work (ledger, retention, verification) to :mod:`msc.server.background`, restart
recovery to :mod:`msc.routing.recovery`. Only :mod:`msc.server.main` creates the event loop; the
Switch runs inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog

from msc.config.files import private_dir, tighten_tree
from msc.config.model import UpstreamSection
from msc.config.settings import Settings
from msc.config.tls import client_ssl_context
from msc.journal.journal import Journal
from msc.journal.records import Entry, JournalError, Kind
from msc.journal.selfcheck import JournalRefused
from msc.memory import Trimmer
from msc.mnemonics import totp
from msc.mnemonics.accounts import Accounts
from msc.mnemonics.acp import AccessControlPoint
from msc.mnemonics.auth import Account, AuthService
from msc.mnemonics.directory import Directory
from msc.mnemonics.throttle import AddressAttempts
from msc.ops.availability import LedgerBackend
from msc.ops.metrics import Metrics
from msc.protocol import framing
from msc.protocol.parts import max_payload
from msc.routing.admission import Admission, LastUse
from msc.routing.delivery import Delivery
from msc.routing.recovery import recover_unanswered
from msc.routing.router import Router
from msc.routing.upstream import FAILURE_REASONS, UpstreamLink
from msc.server.background import BackgroundWork
from msc.server.budgets import Budgets
from msc.server.control import ControlServer
from msc.server.controls import ControlOps
from msc.server.listener import ListenerRuntime
from msc.server.logons import Busy, LogonGate, lower_priority
from msc.server.orphans import end_left_open
from msc.server.parts import StartupError as StartupError  # (StartupError: msc.server.main, msc.cli)
from msc.server.parts import started
from msc.server.reload import ConfigChanges
from msc.server.roles import NodeRole
from msc.server.services import Registry, Services
from msc.server.session import taf_for
from msc.server.userdir import UserDirectory
from msc.storage.backends import STATE_ERRORS, Backends, Deferred

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from msc.mnemonics.state import RuntimeState
    from msc.ops.http import OpsServer

log = structlog.get_logger("msc.switch")
T = TypeVar("T")


class Switch(BackgroundWork, ConfigChanges, ControlOps, NodeRole, UserDirectory):
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.backends = Backends(settings)  # [storage]: SQLite files or PostgreSQL (OSError: its password file)
        self.clock = clock
        self.metrics = Metrics()
        self._trimmer = Trimmer(metrics=self.metrics)  # freed memory back to the system after bursts
        self._queued_before = 0  # outputs waiting at the fullest since the queues last drained
        # A pair's node on PostgreSQL opens its state at takeover (NodeRole.open_deferred_state).
        self._state_deferred = settings.config.node is not None and self.backends.postgresql
        self._state = Deferred(self.backends.runtime_state, until_open={"locked_users": frozenset})
        self.state = cast("RuntimeState", self._state)  # opened here, or by a pair's node at start()
        if not self._state_deferred:  # AC-7's one count, whichever process checked the password (SECURITY.md)
            self.metrics.count_logons(self._state.open().auth_counts)
        self.last_use = LastUse()  # users' and stations' last use, flushed to state.db each minute
        self.directory = Directory(settings, disabled_stations=frozenset(
            () if self._state_deferred else self.state.disabled_stations()))
        # The one authentication service (terminals, pools, hosts' OIF, PWD): its state is
        # state.db, shared with the msc command; the locked set is re-read every second.
        self.auth = AuthService(accounts=lambda uid: self.directory.users.get(uid), store=self.state,
                                open_totp=self._open_totp, cost=settings.config.switch.password_cost,
                                clock=clock, rehash=self.users_rehash(settings))
        # KDF checks run here, not in the default executor: a burst of LOGONs (an attack, or every
        # terminal after a restart) queues behind its own pool and starves no other worker thread.
        sw = settings.config.switch
        # (Threads are made as the gate lets checks run, at most max_logon_checks of them busy.)
        self._auth_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="msc-auth")
        # Checks for addresses that did not log on recently run at a lower CPU priority (logons.py).
        self._auth_pool_low = ThreadPoolExecutor(max_workers=64, thread_name_prefix="msc-auth-low",
                                                 initializer=lower_priority)
        # Logon work is bounded (SECURITY.md): checks at once, a queue best-first, per-address attempts.
        self.logon_gate = LogonGate(self._auth_pool, low_executor=self._auth_pool_low, checks=sw.logon_checks,
                                    queue=sw.logon_queue,
                                    wait_s=sw.logon_wait_s, metrics=self.metrics)
        self.logon_attempts = AddressAttempts(sw.logon_failures_per_address, sw.logon_failures_window_s)
        # What unauthenticated and misbehaving peers may cost the journal (JOURNAL.md "Refused traffic").
        self.budgets = Budgets(settings.config.journal, journal=lambda: self.journal, metrics=self.metrics,
                               clock=clock, taf_for=taf_for)
        self.acp = AccessControlPoint(self.directory.pools)
        self.accounts = Accounts(auth=self.auth, directory=lambda: self.directory, acp=self.acp, gate=self.logon_gate,
                                 busy=Busy, attempts=self.logon_attempts, metrics=self.metrics, clock=clock,
                                 reload_users=self.reload_users, settings=lambda: self.settings,
                                 in_pool=self.in_auth_pool, unavailable=STATE_ERRORS, users_store=self.users_store)
        self.sessions = Registry(delivery=lambda: started(self.delivery), accounts=self.accounts,
                                 journal=lambda: self.journal, directory=lambda: self.directory,
                                 router=lambda: started(self.router), metrics=self.metrics, state=lambda: self.state)
        self.listeners: list[ListenerRuntime] = []
        self.journal: Journal | None = None
        self.router: Router | None = None
        self.delivery: Delivery | None = None
        self.services: Services | None = None  # what sessions are given, once the journal is open
        self.ops: OpsServer | None = None
        self.control: ControlServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._ledger_task: asyncio.Task[None] | None = None
        self.recovery: asyncio.Task[int] | None = None  # the restart's notices; result: how many told
        self._watch: asyncio.Task[None] | None = None
        self.verify_failures: list[dict[str, Any]] = []  # what the background verification found (newest last)
        self.ledger: LedgerBackend | None = None
        self.stop_split: int | None = None  # (msc.server.background.BackgroundWork.mark_stopped)
        #: Why the last reload was refused (the running configuration was kept), until a reload
        #: succeeds: shown by /readyz and the control socket's ping (OPERATIONS.md "Reload").
        self.last_reload_error: str | None = None
        self.started = asyncio.Event()
        #: One node of an active/standby pair ([node]; OPERATIONS.md "Running two nodes"): its name,
        #: role, lease epoch, and the check every journal write makes first (server/node.py).
        #: Without [node] the switch is a single node, always active.
        node = settings.config.node
        self.node_name: str | None = node.name if node is not None else None
        self.role = "active" if node is None else "standby"
        self.lease_epoch = 0
        self.stepped_down: str | None = None
        #: raises when the lease is lost; set before start()
        self.write_check: Callable[[], None] | None = None
        #: the commit fence for a PostgreSQL journal writer (msc.ha.keeper.LeaseKeeper.fence)
        self.fence: Callable[[Any], Awaitable[None]] | None = None
        #: what the lease keeper saw last: who holds the lease (a standby), the database's error
        self.lease_info: Callable[[], dict[str, str | None]] | None = None
        self._users_aead: AESGCM | None = None
        self.log = log.bind(switch=settings.config.switch.name)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        cfg = s.config
        await self.users_at_start()  # (PostgreSQL: the user directory every node enforces, userdir.py)
        await self.open_deferred_state()
        private_dir(s.data_dir)
        for tree in {s.data_dir, s.journal_dir, s.key_file.parent}:
            tighten_tree(tree)  # owner-only, also what an older msc left 0755/0644
        keyring = await asyncio.to_thread(self.backends.keyring, self.log)
        if not await asyncio.to_thread(lambda: keyring.exists):
            raise StartupError(f"no key ring in {keyring.describe()}: run `msc keys init --config {s.config_path}`")
        m = self.metrics
        # The availability ledger (state.db, or the runs table in PostgreSQL) remembers every earlier
        # run: evidence, for the journal's self-check, that a journal existed even if it is gone.
        self.ledger = self.backends.ledger()
        runs = await asyncio.to_thread(self.ledger.runs)
        evidence: tuple[str, ...] = ()
        if runs:
            first = dt.datetime.fromtimestamp(runs[0].started, dt.UTC).isoformat(timespec="seconds")
            where = "the runs table of the PostgreSQL database" if self.backends.postgresql else "state.db"
            evidence = (f"the availability ledger ({where}) records {len(runs)} earlier run(s) of the switch since {first}",)
        self.journal = self.backends.journal(
            keyring, fence=self.fence, clock=self.clock, on_commit=self._journal_committed, on_error=self._journal_error,
            on_checkpoint=lambda cp: m.journal_tree_size.set(cp.tree_size), on_integrity=self._journal_altered,
            on_keys=self.key_ring_checked, writer="process", prior_evidence=evidence,
        )
        # The sweep probes it every second (msc.server.background): while its database is away a
        # batch is refused at once rather than waiting for its own reconnection.
        self.journal.refuse_while_away = True
        try:
            # JOURNAL.md "Start-up self-check": before any listener opens.
            await self.journal.open()
        except JournalRefused as exc:
            self.log.error("journal.refused", problems=[str(p) for p in exc.result.problems])
            self.ledger.close()
            self.ledger = None
            self.journal = None
            raise StartupError(str(exc)) from None
        if self.write_check is not None:
            # The local half of the fence: nothing is written once the lease may have lapsed here.
            from msc.server.node import FencedWriter

            self.journal.writer = FencedWriter(self.journal.writer, self.write_check)
        check = self.journal.selfcheck
        assert check is not None  # open() ran it
        self.log.info("journal.self_check", ok=True, seconds=round(check.seconds, 4), records_checked=check.records_checked,
                      months=check.months, size=self.journal.opened_size, boot=m.boot)
        m.journal_selfcheck_seconds.set(check.seconds)
        m.journal_writer_pid = lambda: getattr(self.journal.writer, "pid", None) or "none" if self.journal else "none"
        m.journal_opened(self.journal.opened_size, self.clock())
        self._users_aead = keyring.users_aead()
        m.journal_tree_size.set(self.journal.tree_size)
        self.delivery = Delivery(self.journal, queue_max=cfg.switch.queue_max, expiry_s=cfg.switch.queue_expiry_s,
                                 output_memory_bytes=cfg.switch.output_memory_bytes,
                                 metrics=m, clock=self.clock, store=self.backends.outbox(),
                                 endpoint_of=lambda mnemonic: self.directory.endpoint_of(mnemonic))
        await self.delivery.restore(users_at=self.directory.pool_printers())  # (PROTOCOL.md §4)
        self.delivery.start()
        self.router = Router(self.journal, self.delivery, metrics=m, directory=self.directory, clock=self.clock,
                             late_answer_s=cfg.switch.late_answer_s)
        self.router.acp = self.acp
        self.router.refused_text = self.budgets.upstream  # upstream refusals within the budgets too
        self.router.output_limit = self.output_limit
        self.delivery.on_oversize = self.router.resplit
        for up in cfg.upstream:
            self._add_link(up)
        admission = Admission(directory=lambda: self.directory, router=self.router, delivery=self.delivery,
                              clock=self.clock, metrics=m, journal=self.journal, admin_upstream=self.admin_upstream,
                              last_use=self.last_use, switch=lambda: self.settings.config.switch)
        self.services = Services(accounts=self.accounts, admission=admission, delivery=self.delivery,
                                 journal=self.journal, registry=self.sessions, budgets=self.budgets,
                                 settings=lambda: self.settings, directory=lambda: self.directory, clock=self.clock,
                                 metrics=m)
        self.router.start()
        # Before any listener: the end of every session the last run left open, then START.
        await end_left_open(self.journal, self.state, Entry(kind=Kind.ADMIN, text=(
            f"START {cfg.switch.name} PID/{os.getpid()}{self.run_words()}")), "RESTART" if self.node_name is None else "FAILOVER")
        for lc in cfg.listener:
            await self._listen(lc)
        if self.ops is None:  # (a standby node has it running already)
            from msc.ops.http import OpsServer

            self.ops = OpsServer(self)
            await self.ops.start(cfg.metrics.bind)
        self.control = ControlServer(self, s.data_dir / "control.sock")
        await self.control.start()
        self.ledger.start(self.clock())
        self._ledger_task = asyncio.create_task(self._ledger_heartbeat(), name="availability-ledger")
        self._sweeper = asyncio.create_task(self._sweep(), name="session-timers")
        self._retention = asyncio.create_task(self._retention_daily(), name="journal-retention")
        if cfg.journal.verify_interval_s > 0:
            self._watch = asyncio.create_task(self._background_verification(), name="journal-verification")
        # After the listeners are up: serving does not wait for it (its notices are queued outputs).
        self.recovery = asyncio.create_task(recover_unanswered(self.journal, self.router, cfg, self.journal.last_seq),
                                             name="restart-recovery")
        for kind in ("terminal", "host", "pool", "printer"):
            m.sessions.labels(kind).set(0)
        for pool in self.directory.pools:
            self.accounts.pool_gauge(pool)
        self.started.set()
        self.log.info("switch.started", listeners=[lc.bind for lc in cfg.listener])

    async def stop(self) -> None:
        """Stop accepting, close sessions, stop links, flush and close the journal."""
        for rt in self.listeners:
            if rt.server:
                rt.server.close()
        await self.mark_stopped()  # refusing new sessions from now: down in the ledger (PPP §1.7.1)
        for task in (self._sweeper, self._retention, self._ledger_task, self.recovery, self._watch):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # (a task that failed)
                    await task
        for sess in list(self.sessions):
            sess.close("SHUTDOWN")
        await asyncio.sleep(0)
        if self.router:
            await self.router.stop()
        if self.delivery:
            await self.delivery.stop()
        if self.ops:
            await self.ops.stop()
        if self.control:
            await self.control.stop()
        with contextlib.suppress(Exception):
            await self.flush_use()
        if self.journal:
            with contextlib.suppress(Exception):
                for sess in self.sessions:
                    sess.summarize_refusals(force=True)
                self.budgets.summaries(force=True)
            with contextlib.suppress(JournalError):
                await self.journal.append(Entry(kind=Kind.ADMIN, text=f"STOP {self.settings.config.switch.name}"
                                                                      f"{self.run_words()}"))
            await self.journal.close()
        await self.sessions.flush()  # the ends just committed, forgotten before the state closes
        self._auth_pool.shutdown(wait=False, cancel_futures=True)
        self._auth_pool_low.shutdown(wait=False, cancel_futures=True)
        await self.stop_users()
        await self.close_ledger()
        if self.backends.postgresql:  # its connection pools, closed cleanly (SQLite's files close at exit)
            await asyncio.to_thread(self.backends.close, self.delivery.store if self.delivery else None, self.state)
        self.log.info("switch.stopped")

    # -- health ---------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, str | list[str] | None]]:
        """(ready, reasons it is not). A refused reload is not one: the switch serves on with its
        configuration; /readyz shows ``last_reload_error`` beside it (OPERATIONS.md "Reload")."""
        if self.confirm_role() != "active":
            return False, self.standby_reasons()  # the other node serves (OPERATIONS.md "Running two nodes")
        reasons: dict[str, str | list[str] | None] = {}
        if self.journal is None or not self.journal.healthy:
            reasons["journal"] = self.journal.last_error if self.journal else "not open"
        elif (waiting := self.journal.unanswered()) is not None:
            reasons["journal"] = waiting  # a frozen database answers nothing: not ready before the probe gives up
        unbound = [rt.cfg.name for rt in self.listeners if rt.server is None or not rt.server.is_serving()]
        if unbound or len(self.listeners) != len(self.settings.config.listener):
            reasons["listeners"] = unbound or "not started"
        return not reasons, reasons

    def _add_link(self, up: UpstreamSection) -> UpstreamLink:
        m, router = self.metrics, started(self.router)
        ctx = client_ssl_context(self.settings, up.tls) if up.tls else None
        link = UpstreamLink(up, ssl_context=ctx, on_message=router.on_upstream_message,
                            on_lost=router.on_lost, on_state=self._upstream_state,
                            on_frame=lambda d: m.frame("upstream", d),
                            on_failure=lambda lk, endpoint, reason: m.upstream_failures.labels(lk.name, endpoint,
                                                                                              reason).inc(),
                            on_pause=lambda lk: m.upstream_paused.labels(lk.name).inc())
        router.add_link(link)
        m.upstream_inbound.labels(up.name).set_function(lambda: link.inbound)
        m.upstream_paused.labels(up.name)
        for label in ("primary", "secondary")[: len(up.endpoints)]:
            m.upstream_up.labels(up.name, label).set(0)
            for reason in FAILURE_REASONS:
                m.upstream_failures.labels(up.name, label, reason)
        m.upstream_in_flight.labels(up.name).set(0)
        return link

    def output_limit(self) -> int:
        """The largest output payload every station can take: a station may connect through any
        listener, so the smallest ``max_frame`` counts (PROTOCOL.md §5 "Outputs in parts")."""
        frames = [lc.max_frame for lc in self.settings.config.listener] or [framing.DEFAULT_MAX_FRAME]
        return max_payload(min(frames))

    def in_flight(self) -> int:
        """Work accepted and not finished, in all (:meth:`open_work` counts it by kind)."""
        return sum(self.open_work().values())

    async def drain(self) -> None:
        """SIGTERM: stop accepting, let in-flight work finish (up to drain_timeout_s), then stop."""
        self.log.info("switch.draining", **self.open_work())
        for rt in self.listeners:
            if rt.server:
                rt.server.close()
        await self.mark_stopped()  # a draining switch refuses new sessions: down (PPP §1.7.1)
        deadline = asyncio.get_running_loop().time() + self.settings.config.switch.drain_timeout_s
        while self.in_flight() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self.in_flight():
            self.log.warning("switch.drain_timeout", **self.open_work())
        await self.stop()

    def _upstream_state(self, link: UpstreamLink) -> None:
        labels = ("primary", "secondary")[: len(link.endpoints)]
        for i, label in enumerate(labels):
            self.metrics.upstream_up.labels(link.name, label).set(1 if link.endpoint_index == i else 0)

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    # -- logon checks ---------------------------------------------------------------------

    async def in_auth_pool(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the logon checks' worker threads (KDFs, zxcvbn)."""
        return await asyncio.get_running_loop().run_in_executor(self._auth_pool, lambda: fn(*args, **kwargs))

    def _open_totp(self, user: Account) -> bytes:
        if user.totp is None:
            raise ValueError(f"{user.id} has no TOTP secret")
        return totp.open_secret(started(self._users_aead), user.id, user.totp)

    def admin_upstream(self) -> str | None:
        c = self.settings.config
        return c.switch.admin_upstream or (c.upstream[0].name if c.upstream else None)
