"""The Switch: wires config, directory, journal, router, delivery and listeners together.

It owns start, stop and the decisions that span sessions: logons (password checks in a worker
thread), who holds which mnemonic, forced logoffs. Only :mod:`msc.server.main` creates the event
loop; the Switch runs inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import msgspec
import structlog

from msc.config.files import private_dir, tighten_tree
from msc.config.load import Settings
from msc.config.model import ListenerSection
from msc.config.tls import client_ssl_context, server_ssl_context
from msc.config.validate import parse_hostport
from msc.journal.journal import Journal
from msc.journal.records import Entry, JournalError, Kind
from msc.journal.retention import PurgeRefused
from msc.journal.selfcheck import JournalRefused
from msc.keyring import KeyRing
from msc.mnemonics import authz, totp
from msc.mnemonics.acp import AccessControlPoint, Allocation
from msc.mnemonics.auth import Attempt, AuthService, users_file_rehash
from msc.mnemonics.directory import Directory, Pool, User
from msc.mnemonics.state import StateStore
from msc.mnemonics.throttle import AddressAttempts
from msc.ops.availability import HEARTBEAT_S, WINDOWS, Ledger, compute
from msc.ops.memory import Trimmer
from msc.ops.metrics import Metrics
from msc.protocol import framing
from msc.protocol.codes import MscError, ProtocolError, Reject
from msc.protocol.message import AdminText, Input, Logon, PasswordChange, format_pairs, msc_notice
from msc.protocol.parts import max_payload
from msc.routing.delivery import Delivery, Output
from msc.routing.destinations import admin_destinations
from msc.routing.outbox import OutboxStore
from msc.routing.router import Pending, Router
from msc.routing.upstream import FAILURE_REASONS, UpstreamLink
from msc.server.control import ControlServer
from msc.server.listener import Handshake, ListenerRuntime, TlsServer
from msc.server.logons import Busy, LogonGate, lower_priority
from msc.server.refusals import AddressBudget, RefusalLimits
from msc.server.session import SUMMARY, Session, State, taf_for

if TYPE_CHECKING:
    from msc.ops.http import OpsServer

log = structlog.get_logger("msc.switch")


class StartupError(MscError):
    pass


#: The background verification starts this long after the switch (at most verify_interval_s).
STARTUP_QUIET_S = 60.0

#: The notice, after a restart, for a request answered in parts whose answer window was still
#: open when the switch stopped (PROTOCOL.md §4, §6 E302): the rest of its answer may be lost.
REST_OF_ANSWER_LOST = "SWITCH RESTARTED BEFORE THE REST OF THE ANSWER"



class Users:
    """Last use of users and stations (CJIS AC-2, PPP §1.6.2), flushed to state.db periodically.
    Logon state (failures, lockout, TOTP steps) belongs to :class:`msc.mnemonics.auth.AuthService`."""

    def __init__(self) -> None:
        self.store: StateStore | None = None
        self.used: dict[str, float] = {}  # user → last use, flushed to state.db periodically
        self.stations_used: dict[str, float] = {}

    def load(self, store: StateStore) -> None:
        self.store = store

    async def flush_use(self) -> None:
        users, self.used = self.used, {}
        stations, self.stations_used = self.stations_used, {}
        if users:
            await asyncio.to_thread(self.store.used, users)
        if stations:
            await asyncio.to_thread(self.store.station_used, stations)


#: How often (seconds) the switch looks whether a burst left freed memory to give back.
TRIM_EVERY_S = 5


class Switch:
    def __init__(self, settings: Settings, *, clock=time.time) -> None:
        if settings.config.storage.backend != "sqlite":
            # Fail closed: the switch opens the SQLite files below; it must not while the
            # configuration names PostgreSQL (CONFIG.md "Storage": not wired to the switch yet).
            raise StartupError('[storage] backend = "postgresql": the switch does not run on PostgreSQL yet')
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self._trimmer = Trimmer(metrics=self.metrics)  # freed memory back to the system after bursts
        self._queued_before = 0  # outputs waiting at the fullest since the queues last drained
        self.state = StateStore(settings.state_db)
        # AC-7's one count, whichever process checked the password (SECURITY.md), read at scrape.
        self.metrics.count_logons(self.state.auth_counts)
        self.users = Users()
        self.users.load(self.state)
        self.directory = Directory(settings, disabled_stations=frozenset(self.state.disabled_stations()))
        # The one authentication service (terminals, pools, hosts' OIF, PWD): its state is
        # state.db, shared with the msc command; the locked set is re-read every second.
        self.auth = AuthService(accounts=lambda uid: self.directory.users.get(uid), store=self.state,
                                open_totp=self._open_totp, cost=settings.config.switch.password_cost,
                                clock=clock, rehash=users_file_rehash(settings.users_path))
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
        self.logon_throttle_delay_s = sw.logon_throttle_delay_s
        # What unauthenticated and misbehaving peers may cost the journal (JOURNAL.md "Refused traffic").
        j = settings.config.journal
        self.refusal_limits = RefusalLimits(j.refused_full_per_minute, j.refused_full_chars_per_minute,
                                            j.refused_records_per_minute)
        self.unauth_budget = AddressBudget(j.unauthenticated_records_per_minute,
                                           j.unauthenticated_records_per_minute_total, clock())
        self.acp = AccessControlPoint(self.directory.pools)
        self.sessions: set[Session] = set()
        self.holders: dict[str, Session] = {}  # endpoint → the session it is attached to
        self.listeners: list[ListenerRuntime] = []
        self.journal: Journal | None = None
        self.router: Router | None = None
        self.delivery: Delivery | None = None
        self.ops: OpsServer | None = None
        self.control: ControlServer | None = None
        self._sweeper: asyncio.Task | None = None
        self._retention: asyncio.Task | None = None
        self._ledger_task: asyncio.Task | None = None
        self._recovery: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self.verify_failures: list[dict] = []  # what the background verification found (newest last)
        self.ledger: Ledger | None = None
        #: Why the last reload was refused (the running configuration was kept), until a reload
        #: succeeds: shown by /readyz and the control socket's ping (OPERATIONS.md "Reload").
        self.last_reload_error: str | None = None
        self.started = asyncio.Event()
        self._users_aead = None
        self.log = log.bind(switch=settings.config.switch.name)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        cfg = s.config
        private_dir(s.data_dir)
        for tree in {s.data_dir, s.journal_dir, s.key_file.parent}:
            tighten_tree(tree)  # owner-only, also what an older msc left 0755/0644
        keyring = KeyRing(s.data_dir / "keys", s.key_file)
        if not keyring.exists:
            raise StartupError(f"no key ring in {s.data_dir / 'keys'}: run `msc keys init --config {s.config_path}`")
        m = self.metrics
        # The availability ledger (state.db) remembers every earlier run: evidence, for the
        # journal's self-check, that a journal existed even if every journal file is gone.
        self.ledger = Ledger(s.state_db)
        runs = await asyncio.to_thread(self.ledger.runs)
        evidence = ()
        if runs:
            first = dt.datetime.fromtimestamp(runs[0].started, dt.UTC).isoformat(timespec="seconds")
            evidence = (f"state.db's availability ledger records {len(runs)} earlier run(s) of the switch since {first}",)
        self.journal = Journal.from_settings(
            s, keyring, clock=self.clock, on_commit=self._journal_committed, on_error=self._journal_error,
            on_checkpoint=lambda cp: m.journal_tree_size.set(cp.tree_size), on_integrity=self._journal_altered,
            writer="process", prior_evidence=evidence,
        )
        try:
            # JOURNAL.md "Start-up self-check": before any listener opens.
            await self.journal.open()
        except JournalRefused as exc:
            self.log.error("journal.refused", problems=[str(p) for p in exc.result.problems])
            self.ledger.close()
            self.ledger = None
            self.journal = None
            raise StartupError(str(exc)) from None
        check = self.journal.selfcheck
        self.log.info("journal.self_check", ok=True, seconds=round(check.seconds, 4), records_checked=check.records_checked,
                      months=check.months, size=self.journal.opened_size, boot=m.boot)
        m.journal_selfcheck_seconds.set(check.seconds)
        m.journal_opened(self.journal.opened_size, self.clock())
        self._users_aead = keyring.users_aead()
        m.journal_tree_size.set(self.journal.tree_size)
        self.delivery = Delivery(self.journal, queue_max=cfg.switch.queue_max, expiry_s=cfg.switch.queue_expiry_s,
                                 output_memory_bytes=cfg.switch.output_memory_bytes,
                                 metrics=m, clock=self.clock, store=OutboxStore(s.state_db),
                                 endpoint_of=lambda mnemonic: self.directory.endpoint_of(mnemonic))
        await self.delivery.restore()
        self.delivery.start()
        self.router = Router(self.journal, self.delivery, metrics=m, directory=self.directory, clock=self.clock,
                             late_answer_s=cfg.switch.late_answer_s)
        self.router.acp = self.acp
        self.router.output_limit = self.output_limit
        self.delivery.on_oversize = self.router.resplit
        for up in cfg.upstream:
            self._add_link(up)
        self.router.start()
        await self.journal.append(Entry(kind=Kind.ADMIN, text=f"START {cfg.switch.name} PID/{os.getpid()}"))
        for lc in cfg.listener:
            await self._listen(lc)
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
        self._recovery = asyncio.create_task(self._recover_unanswered(self.journal.last_seq), name="restart-recovery")
        for kind in ("terminal", "host", "pool", "printer"):
            m.sessions.labels(kind).set(0)
        for pool in self.directory.pools:
            self._pool_gauge(pool)
        self.started.set()
        self.log.info("switch.started", listeners=[lc.bind for lc in cfg.listener])

    async def _recover_unanswered(self, up_to: int) -> None:
        """Requests forwarded before a crash (or a drain that timed out) whose answer never came:
        the process that would have told their operators is gone, so tell them now (E302).
        Only records written before this start (``up_to``) are considered."""
        cfg = self.settings.config
        # The longest a request may wait for its first part: its upstream's timeout, or its
        # route's own (a hit confirmation waits 10 minutes), plus the time to send it again.
        resend = max((u.resend_wait_s for u in cfg.upstream), default=30)
        window = max([u.timeout_s + u.resend_wait_s for u in cfg.upstream]
                     + [r.timeout_s + resend for r in cfg.route if r.timeout_s], default=60) + 60
        unanswered = await self.journal.unanswered_requests(window, up_to)
        # An answer came but could not be recorded (the upstream was told E501): say so.
        refused = await self.journal.refused_answers(unanswered[0].seq) if unanswered else set()
        for rec in unanswered:
            route = self.directory.routes.get(rec.mke or "")
            if route is not None and route.one_way:
                continue  # a YR, a DR …: nothing was to come back (PROTOCOL.md §4)
            header = rec.text.split(".", 1)[0]
            endpoint = self.directory.endpoint_of(rec.mnemonic) if rec.mnemonic else None
            if endpoint is None:
                continue
            pending = Pending(txn=rec.txn, header=header, mnemonic=rec.mnemonic, endpoint=endpoint, user=rec.user,
                              taf=rec.taf, ori=rec.ori, mke=rec.mke or "", category="", upstream=rec.peer or "")
            if rec.txn in refused:
                reject, detail = Reject.E501, (f"ANSWER FROM {(rec.peer or 'UPSTREAM').upper()} COULD NOT BE RECORDED; "
                                               "SWITCH RESTARTED; REPEAT THE REQUEST")
            else:
                reject, detail = Reject.E302, "SWITCH RESTARTED BEFORE THE ANSWER CAME"
            # Journaled and queued as soon as the mnemonic's queue has room (PROTOCOL.md §5 "Bounds").
            self.router.notify(endpoint, rec.mnemonic, msc_notice(header, reject, detail),
                               dict(user=pending.user, taf=pending.taf, ori=pending.ori, mke="MSC",
                                    code=reject.code, txn=pending.txn))
            self.log.warning("switch.unanswered_after_restart", txn=rec.txn, code=reject.code)
        # Answered in parts, and the window for the rest was still open when the switch stopped
        # (a drain that timed out, a crash): parts that come now are linked to nothing, so the
        # operator is told the answer may be incomplete (PROTOCOL.md §4).
        windows = {k: r.answer_window_s for k, r in self.directory.routes.items()
                   if r.answer_window_s is not None and not r.one_way}
        for rec in await self.journal.open_answers(windows, up_to):
            header = rec.text.split(".", 1)[0]
            endpoint = self.directory.endpoint_of(rec.mnemonic) if rec.mnemonic else None
            if endpoint is None:
                continue
            await self.router.emit([(endpoint, rec.mnemonic)],
                                   msc_notice(header, Reject.E302, REST_OF_ANSWER_LOST), "MSC",
                                   dict(user=rec.user, taf=rec.taf, ori=rec.ori, mke="MSC", code=Reject.E302.code,
                                        txn=rec.txn))
            self.log.warning("switch.answer_open_at_restart", txn=rec.txn, code=Reject.E302.code)

    async def _listen(self, lc: ListenerSection, *, register: bool = True) -> ListenerRuntime:
        host, port = parse_hostport(lc.bind)
        rt = ListenerRuntime(lc, metrics=self.metrics)
        if lc.proxy_protocol:
            # A relay's connections (PROXY header first, proxied.py); TLS, if any, by the event loop.
            from msc.server.proxied import ProxyGate

            ctx = server_ssl_context(self.settings, lc.tls) if lc.tls else None
            rt.server = await asyncio.get_running_loop().create_server(
                lambda: ProxyGate(self, rt), host, port, ssl=ctx, backlog=1024, reuse_address=True)
        elif lc.tls:
            # TLS: accepted here, each handshake holding a slot with its own deadline (listener.py).
            server = TlsServer(rt, server_ssl_context(self.settings, lc.tls),
                               lambda h: Session(self, rt, handshake=h), self._tls_failed)
            server.bind(host, port)
            rt.server = server
        else:
            rt.server = await asyncio.get_running_loop().create_server(
                lambda: Session(self, rt), host, port, backlog=1024, reuse_address=True)
        rt.configured()
        if register:
            self.listeners.append(rt)
        return rt

    def _tls_failed(self, h: Handshake, reason: str, detail: str) -> None:
        """A TLS handshake timed out or failed: a record within the address's budget."""
        what, detail = {"tls_handshake_timeout": ("TLS HANDSHAKE TIMEOUT", None),
                        "evicted": ("TLS HANDSHAKE ABANDONED", "SLOT TAKEN BY A NEWER CONNECTION")}.get(
            reason, ("TLS HANDSHAKE FAILED", detail[:80].upper()))
        self.unauthenticated(h.source, what, lambda: Entry(
            kind=Kind.SESSION, peer=None, taf=taf_for(h.peer_ip), code=None,
            text=f"{what} FROM {h.peer_ip}" + (f": {detail}" if detail else "")))

    # -- what unauthenticated peers may cost the journal (JOURNAL.md "Refused traffic") ------

    def unauthenticated_take(self, source: str, now: float) -> bool:
        """May a connection from ``source`` that has not logged on write one more record now?"""
        return self.unauth_budget.take(source, now)

    def unauthenticated(self, source: str, event: str, entry) -> bool:
        """Journal ``entry()`` (a SESSION record of a connection not logged on) within the
        address's budget, else count ``event`` in the address's summary. True if journaled."""
        now = self.clock()
        if self.unauth_budget.take(source, now):
            self.metrics.unauthenticated_events.labels("recorded").inc()
            self.journal.submit([entry()])
            return True
        self.metrics.unauthenticated_events.labels("counted").inc()
        self.unauth_budget.count(source, now).event(event, now)
        return False

    def _unauthenticated_summaries(self, *, force: bool = False) -> None:
        """Once a minute: one SESSION record (code SUMMARY) per address whose activity was counted
        (at most refusals.MAX_SUMMARIES, the rest in one "other addresses" record)."""
        from msc.protocol.message import decode_lossy, redact

        for summary in self.unauth_budget.due(self.clock(), force=force):
            if summary.source is None:
                src, taf = f"{summary.sources} OTHER ADDRESSES", None
            else:
                src, taf = summary.source, taf_for(summary.source.split("/")[0])
            self.journal.submit([Entry(kind=Kind.SESSION, code=SUMMARY, taf=taf, text=(
                f"UNAUTHENTICATED SUMMARY FROM {src}: {summary.tally.render(decode_lossy, redact)}"))])

    def listener_ports(self) -> dict[str, int]:
        return {rt.cfg.name: rt.server.sockets[0].getsockname()[1] for rt in self.listeners if rt.server}

    async def stop(self) -> None:
        """Stop accepting, close sessions, stop links, flush and close the journal."""
        for rt in self.listeners:
            if rt.server:
                rt.server.close()
        for task in (self._sweeper, self._retention, self._ledger_task, self._recovery, self._watch):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
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
            await self.users.flush_use()
        if self.journal:
            with contextlib.suppress(Exception):
                for sess in list(self.sessions):
                    sess._summarize_refusals(force=True)
                self._unauthenticated_summaries(force=True)
            with contextlib.suppress(JournalError):
                await self.journal.append(Entry(kind=Kind.ADMIN, text=f"STOP {self.settings.config.switch.name}"))
            await self.journal.close()
        self._auth_pool.shutdown(wait=False, cancel_futures=True)
        self._auth_pool_low.shutdown(wait=False, cancel_futures=True)
        if self.ledger is not None:
            # The clean-stop mark: the outage that follows is scheduled (OPERATIONS.md).
            await asyncio.to_thread(self.ledger.stop, self.clock())
            self.ledger.close()
        self.log.info("switch.stopped")

    # -- configuration changes ------------------------------------------------------------

    def reload_users(self) -> str | None:
        """Re-read users.toml; apply it if valid. Returns an error text, or None."""
        from msc.config.load import ConfigIssue, decode_file
        from msc.config.model import UsersFile
        from msc.config.validate import validate

        issues: list[ConfigIssue] = []
        users = decode_file(self.settings.users_path, UsersFile, issues) if self.settings.users_path.exists() else UsersFile()
        if users is None:
            return "; ".join(map(str, issues))
        settings = dataclasses.replace(self.settings, users=users)
        issues = validate(settings)
        if issues:
            return "; ".join(map(str, issues))
        self.settings = settings
        self.apply_directory(Directory(settings, disabled_stations=self.directory.disabled_stations))
        return None

    def apply_directory(self, directory: Directory) -> None:
        """Swap in a new directory; log off sessions it no longer allows (within a second)."""
        self.directory = directory
        self.acp.update(directory.pools)
        if self.router is not None:
            self.router.directory = directory
        for sess in list(self.sessions):
            # Sessions judge the next message by the new configuration: re-point what they hold.
            if sess.station is not None and sess.station.mnemonic in directory.stations:
                sess.station = directory.stations[sess.station.mnemonic]
            if sess.pool is not None:
                sess.pool = directory.pools.get(sess.pool.name, sess.pool)
            if sess.user is not None:
                u = directory.users.get(sess.user)
                if u is None or not u.active:
                    self.force_logoff(sess, "USER DISABLED" if u else "USER REMOVED")
                else:
                    sess.user_rec = u
            st = directory.stations.get(sess.station.mnemonic) if sess.station is not None else None
            if sess.station is not None and (st is None or st.disabled):
                self.journal.submit([sess._session_entry("STATION DISABLED")])
                sess._unbind("STATION DISABLED")
                sess.close("STATION DISABLED")

    async def control_users_changed(self, req) -> dict:
        err = self.reload_users()
        return {"ok": err is None, "error": err}

    async def control_checkpoint(self, req) -> dict:
        cp = await self.journal.checkpoint()
        return {"ok": True, "tree_size": cp.tree_size if cp else self.journal.tree_size}

    async def control_purge(self, req) -> dict:
        purged = await self.journal.purge(self.settings.config.journal.retention_days, actor=req.actor)
        return {"ok": True, "purged": purged}

    async def control_verify_failed(self, req) -> dict:
        self.metrics.journal_verify_failures.inc()
        self.log.error("journal.verify_failed", first_bad=req.first_bad)
        return {"ok": True}

    async def control_ping(self, req) -> dict:
        return {"ok": True, "switch": self.settings.config.switch.name, "pid": os.getpid(),
                "reload_error": self.last_reload_error}

    # -- health ---------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict]:
        """(ready, reasons it is not). A refused reload is not a reason: the switch goes on
        serving with the configuration it runs (OPERATIONS.md "Reload"); /readyz shows the
        refusal beside the status instead (``last_reload_error``)."""
        reasons = {}
        if self.journal is None or not self.journal.healthy:
            reasons["journal"] = self.journal.last_error if self.journal else "not open"
        unbound = [rt.cfg.name for rt in self.listeners if rt.server is None or not rt.server.is_serving()]
        if unbound or len(self.listeners) != len(self.settings.config.listener):
            reasons["listeners"] = unbound or "not started"
        return not reasons, reasons

    # -- reload (SIGHUP) and drain (SIGTERM) -------------------------------------------------

    async def reload(self) -> bool:
        """CONFIG.md "Reload": re-read both files; if either is invalid, keep running as before.

        A valid change applies without dropping sessions: removed or disabled stations and users
        are logged off, authorizations and routes apply to the next message, listeners and
        upstream links are added, removed or re-bound as their tables changed.
        """
        from msc.config.load import ConfigError, load

        try:
            new = await asyncio.to_thread(load, self.settings.config_path)
        except ConfigError as exc:
            self.last_reload_error = "; ".join(str(i) for i in exc.issues)[:2000]
            self.metrics.config_reload.labels("error").inc()
            self.log.error("config.reload_failed", errors=len(exc.issues), first=str(exc.issues[0]))
            with contextlib.suppress(JournalError):
                await self.journal.append(Entry(kind=Kind.ADMIN, code="E502",
                                                text=f"CONFIG RELOAD FAILED: {len(exc.issues)} ERROR(S); RUNNING CONFIG KEPT"))
            return False
        old = self.settings
        changes = await self._apply_config(old, new)
        self.last_reload_error = None
        self.metrics.config_reload.labels("ok").inc()
        self.log.info("config.reloaded", changes=changes)
        with contextlib.suppress(JournalError):
            await self.journal.append(Entry(kind=Kind.ADMIN, text="CONFIG RELOAD OK" + (f": {'; '.join(changes)}" if changes else "")))
        return True

    async def _apply_config(self, old: Settings, new: Settings) -> list[str]:
        changes: list[str] = []
        oc, nc = old.config, new.config
        self.settings = new
        self.apply_directory(Directory(new, disabled_stations=frozenset(self.state.disabled_stations())))
        # Listeners: same name and same bind/TLS keep their socket and sessions (limits update in
        # place); anything else is closed and/or bound anew.
        old_by_name = {rt.cfg.name: rt for rt in self.listeners}
        keep = []
        for lc in nc.listener:
            rt = old_by_name.pop(lc.name, None)
            if (rt is not None and rt.cfg.bind == lc.bind and rt.cfg.tls == lc.tls
                    and rt.cfg.proxy_protocol == lc.proxy_protocol):
                rt.cfg = lc
                rt.configured()
                keep.append(rt)
                continue
            if rt is not None:
                rt.server.close()
                changes.append(f"listener {lc.name} re-bound")
            else:
                changes.append(f"listener {lc.name} added")
            self.listeners.remove(rt) if rt in self.listeners else None
            keep.append(await self._listen(lc, register=False))
        for name, rt in old_by_name.items():
            rt.server.close()  # sessions already on it continue until they end
            changes.append(f"listener {name} removed")
        self.listeners = keep
        # Upstream links.
        old_up = {u.name: u for u in oc.upstream}
        for u in nc.upstream:
            link = self.router.links.get(u.name)
            if link is None:
                self._add_link(u).start()
                changes.append(f"upstream {u.name} added")
            elif old_up[u.name].endpoints != u.endpoints or old_up[u.name].tls != u.tls:
                await link.stop()
                self._add_link(u).start()
                changes.append(f"upstream {u.name} reconnected")
            else:
                link.cfg = u
        for name in set(old_up) - {u.name for u in nc.upstream}:
            await self.router.links.pop(name).stop()
            changes.append(f"upstream {name} removed")
        # Everything else that can change at run time.
        self.auth.cost = nc.switch.password_cost
        self.logon_gate.configure(checks=nc.switch.logon_checks,
                                  queue=nc.switch.logon_queue, wait_s=nc.switch.logon_wait_s)
        self.logon_attempts.limit = nc.switch.logon_failures_per_address
        self.logon_attempts.window_s = nc.switch.logon_failures_window_s
        self.logon_throttle_delay_s = nc.switch.logon_throttle_delay_s
        j = nc.journal
        self.refusal_limits = RefusalLimits(j.refused_full_per_minute, j.refused_full_chars_per_minute,
                                            j.refused_records_per_minute)
        for sess in self.sessions:
            sess.refusals.limits = self.refusal_limits
        self.unauth_budget.configure(j.unauthenticated_records_per_minute, j.unauthenticated_records_per_minute_total)
        self.auth.rehash = users_file_rehash(new.users_path)
        self.delivery.queue_max = nc.switch.queue_max
        self.delivery.output_memory_bytes = nc.switch.output_memory_bytes
        self.delivery.expiry_s = nc.switch.queue_expiry_s
        self.router.requests.late_answer_s = nc.switch.late_answer_s
        self.journal.checkpoint_every = nc.journal.checkpoint_every
        self.journal.checkpoint_interval_s = nc.journal.checkpoint_interval_s
        if nc.metrics.bind != oc.metrics.bind:
            await self.ops.stop()
            await self.ops.start(nc.metrics.bind)
            changes.append("metrics endpoint re-bound")
        restart_only = [k for k in ("dir", "key_file", "synchronous") if getattr(oc.journal, k) != getattr(nc.journal, k)]
        if nc.switch.data_dir != oc.switch.data_dir:
            restart_only.append("data_dir")
        if restart_only:
            self.log.warning("config.needs_restart", settings=restart_only)
            changes.append(f"needs a restart to apply: {', '.join(restart_only)}")
        if oc.station != nc.station or oc.pool != nc.pool or oc.agency != nc.agency:
            changes.append("stations/pools/agencies updated")
        if oc.route != nc.route:
            changes.append("routes updated")
        if old.users != new.users:
            changes.append("users updated")
        return changes

    def _add_link(self, up) -> UpstreamLink:
        m = self.metrics
        ctx = client_ssl_context(self.settings, up.tls) if up.tls else None
        link = UpstreamLink(up, ssl_context=ctx, on_message=self.router.on_upstream_message,
                            on_lost=self.router.on_lost, on_state=self._upstream_state,
                            on_frame=lambda d: m.frame("upstream", d),
                            on_failure=lambda lk, endpoint, reason: m.upstream_failures.labels(lk.name, endpoint,
                                                                                              reason).inc(),
                            on_pause=lambda lk: m.upstream_paused.labels(lk.name).inc())
        self.router.add_link(link)
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
        """Work accepted and not finished: messages awaiting their commit, requests awaiting their
        answer or (answered in parts) the rest of it within their answer window, and answers
        written to a terminal but not yet acknowledged by it."""
        return (sum(sess.inflight for sess in self.sessions) + self.router.outstanding()
                + self.router.open_answers() + self.delivery.unacknowledged())

    async def drain(self) -> None:
        """SIGTERM: stop accepting, let in-flight work finish (up to drain_timeout_s), then stop."""
        self.log.info("switch.draining", in_flight=self.in_flight())
        for rt in self.listeners:
            if rt.server:
                rt.server.close()
        deadline = asyncio.get_running_loop().time() + self.settings.config.switch.drain_timeout_s
        while self.in_flight() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        left = self.in_flight()
        if left:
            self.log.warning("switch.drain_timeout", in_flight=left,
                             committing=sum(sess.inflight for sess in self.sessions),
                             awaiting_answer=self.router.outstanding(), answer_open=self.router.open_answers(),
                             unacknowledged=self.delivery.unacknowledged())
        await self.stop()

    def _journal_committed(self, entries, seconds: float) -> None:
        self.metrics.journal_committed(entries, seconds)
        self.metrics.journal_size(self.journal.committed_size)

    def _journal_altered(self, text: str) -> None:
        """The journal found records it had committed gone while running: it refuses every
        append from now on (E501, /readyz 503); the off-box alert sees the size go back."""
        self.metrics.journal_verify_failures.inc()
        self.metrics.journal_size(self.journal.committed_size)
        self.log.error("journal.altered", error=text)

    def _journal_error(self, exc: Exception) -> None:
        self.metrics.journal_errors.inc()
        self.log.error("journal.commit_failed", error=str(exc))

    def _upstream_state(self, link: UpstreamLink) -> None:
        labels = ("primary", "secondary")[: len(link.endpoints)]
        for i, label in enumerate(labels):
            self.metrics.upstream_up.labels(link.name, label).set(1 if link.endpoint_index == i else 0)

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    # -- sessions -------------------------------------------------------------------------

    def session_bound(self, sess: Session) -> None:
        endpoint = sess.mnemonic
        old = self.holders.get(endpoint)
        if old is not None and old is not sess:
            # The same station connected again (a restarted terminal): the newer session wins.
            old._unbind("REPLACED")
            old.close("REPLACED")
        self.holders[endpoint] = sess
        sess.endpoint = endpoint
        self.metrics.sessions.labels(sess.kind).inc()
        self.delivery.attach(endpoint, sess)

    def session_unbound(self, sess: Session, why: str) -> None:
        endpoint = sess.endpoint
        if sess.alloc is not None:
            self.release_pooled(sess, why)
        if endpoint is None:
            return
        sess.endpoint = None
        if self.holders.get(endpoint) is sess:
            del self.holders[endpoint]
        self.delivery.detach(endpoint, sess)
        self.metrics.sessions.labels(sess.kind).dec()

    def force_logoff(self, sess: Session, why: str) -> None:
        sess.log.info("session.forced_logoff", why=why)
        self.journal.submit([sess._session_entry(f"LOGOFF {why}")])
        sess._unbind(why)
        sess.send_sys(f"LOGOFF.{why}")
        if sess.kind == "pool":
            sess.mnemonic = None
        if sess.state is State.OPERATOR:
            sess.state = State.READY

    async def _ledger_heartbeat(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.ledger.heartbeat, self.clock())
            if ticks % 12 == 0:
                self.refresh_availability()
            ticks += 1

    def refresh_availability(self) -> None:
        runs = self.ledger.runs()
        for window in WINDOWS:
            a = compute(runs, self.clock(), window, current=self.ledger.run_id)
            self.metrics.availability.labels(window).set(a.ratio)

    async def _retention_daily(self) -> None:
        """JOURNAL.md "Retention": purge months older than retention_days once a day."""
        await asyncio.sleep(60)
        while True:
            await self.run_retention()
            await asyncio.sleep(86400)

    async def run_retention(self) -> list[tuple[str, int, int]]:
        """One daily retention run: the months purged. A refusal (the clock and the journal's
        timeline disagree) is journaled by the journal and logged here; nothing is deleted."""
        done: list[tuple[str, int, int]] = []
        try:
            done = await self.journal.purge(self.settings.config.journal.retention_days)
            for period, first, last in done:
                self.log.info("journal.purged", period=period, first=first, last=last)
        except PurgeRefused as exc:
            self.log.error("journal.purge_refused", reason=str(exc))
        except JournalError as exc:
            self.log.error("journal.purge_failed", error=str(exc))
        with contextlib.suppress(Exception):
            self.journal.prepare_keys()
        return done

    async def _background_verification(self) -> None:
        """JOURNAL.md "Background verification": a low-priority child process re-verifies the
        whole journal, pass after pass, and follows its tail; each failure raises
        msc_journal_verify_failures_total, is logged and journaled. If the child dies it is
        started again (after a pause)."""
        import sys

        s = self.settings
        cfg = s.config
        # Not while the switch starts: a restart's minutes count against availability.
        await asyncio.sleep(min(STARTUP_QUIET_S, cfg.journal.verify_interval_s))
        args = [sys.executable, "-m", "msc.journal.watch", "--journal", str(s.journal_dir), "--keys",
                str(s.data_dir / "keys"), "--key-file", str(s.key_file), "--name", cfg.switch.name,
                "--interval", str(cfg.journal.verify_interval_s)]
        while True:
            # Its own session, like the journal writer's: a terminal's Ctrl-C (SIGINT to the
            # foreground process group) must not reach it while it is still starting up, before
            # it ignores SIGINT (a KeyboardInterrupt traceback in the switch's log).
            proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE, limit=1 << 20,
                                                        start_new_session=True)
            try:
                async for line in proc.stdout:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    await self._verification_event(event)
                await proc.wait()
                self.log.warning("journal.verification_exited", returncode=proc.returncode)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with contextlib.suppress(ProcessLookupError):
                        await proc.wait()
            await asyncio.sleep(30)

    async def _verification_event(self, event: dict) -> None:
        m = self.metrics
        kind = event.get("event")
        if kind == "progress":
            m.journal_verified_size.set(event.get("verified", 0))
        elif kind == "pass_ok":
            m.journal_verified_size.set(event.get("records", 0))
            m.journal_verify_passes.inc()
            self.log.info("journal.verified", records=event.get("records"), seconds=event.get("seconds"))
        elif kind in ("failed", "error"):
            m.journal_verify_failures.inc()
            self.verify_failures.append(event)
            self.log.error("journal.verify_failed", first_bad=event.get("first_bad"), reason=event.get("reason"),
                           background=True)
            with contextlib.suppress(JournalError):
                await self.journal.append(Entry(kind=Kind.ADMIN, code="VERIFY", text=(
                    f"BACKGROUND VERIFICATION FAILED AT SEQ/{event.get('first_bad')}: {event.get('reason')}")))

    async def _sweep(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            with contextlib.suppress(Exception):
                # Lockouts and unlocks made by another process (msc journal … --as, msc user
                # unlock) reach hosts' OIF checks within a second.
                await asyncio.to_thread(self.auth.refresh)
            if ticks % 60 == 0:
                with contextlib.suppress(Exception):
                    await self.users.flush_use()
            with contextlib.suppress(Exception):
                self._unauthenticated_summaries()
            queued = self.delivery.pending()
            if queued < self._queued_before // 2:
                # The queues drained (by half or more): what they held is free now, so a trim is
                # due at once, however little the last ones gave back (issue 14: memory returns
                # after the queue drains).
                self._trimmer.soon()
                self._queued_before = queued
            self._queued_before = max(self._queued_before, queued)
            if ticks % TRIM_EVERY_S == 0 or self._trimmer.due_soon:
                # In a worker thread (ctypes lets go of the GIL): the loop runs on meanwhile,
                # waiting only if it needs the allocator's lock of the arena being trimmed.
                trimmed = await asyncio.to_thread(self._trimmer.check)
                if trimmed is not None:
                    self.log.info("memory.trimmed", before_mb=round(trimmed[0] / 2**20, 1),
                                  after_mb=round(trimmed[1] / 2**20, 1), ms=round(trimmed[2] * 1000, 2))
            now = time.monotonic()
            cfg = self.settings.config
            for sess in list(self.sessions):
                try:
                    sess.timers(now, cfg)
                except Exception:
                    self.log.exception("session.timer_error")

    # -- logon ----------------------------------------------------------------------------

    async def logon(self, sess: Session, xid: int, inp: Input, body: Logon, pool: Pool | None) -> None:
        """CJIS AC-7/IA-2/IA-5 logon through the authentication service, then the station's and
        pool's own rules. Every refusal of the service is the same ``E202 LOGON REFUSED``."""
        journal_text = inp.journal_text()

        def refuse(reject: Reject, detail: str | None, why: str, *, cause: Reject | None = None) -> None:
            # ``cause``: the real reason's code, journaled only (the operator is shown ``reject``).
            sess._journal_session(f"LOGON FAILED {why}", code=(cause or reject).code, user=body.user)
            sess._reject(xid, reject, detail, journal_text, inp, always=True)  # AC-7: every attempt
            sess.log.info("session.logon", outcome="refused", code=reject.code)

        # Logon work is bounded (SECURITY.md): the address's attempts first, then a check slot.
        # Either refusal is E307 without a check: it says nothing about the account.
        now, source = self.clock(), sess.source
        if not self.logon_attempts.reserve(source, now):
            self.metrics.logon_throttled.labels("address").inc()
            if self.logon_throttle_delay_s > 0:
                # Answered after a delay, the connection's further frames held meanwhile: a guesser
                # past its rate gets one answer per connection and delay, not thousands a second.
                # It is not being checked: its slot may go to a newer connection and its logon
                # deadline runs (a close meanwhile still leaves the refusal's record).
                sess.checking = False
                await asyncio.sleep(self.logon_throttle_delay_s)
            sess._reject(xid, Reject.E307, "TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS, TRY LATER", journal_text, inp)
            return
        try:
            attempt = await self.logon_gate.run(self.logon_attempts.priority(source, now), functools.partial(
                self.auth.authenticate, via="pool" if pool is not None else "terminal"),
                body.user, body.password, body.otp)
        except Busy:
            self.logon_attempts.release(source)
            sess._reject(xid, Reject.E307, "LOGON BUSY, TRY AGAIN", journal_text, inp)
            return
        if not attempt.ok:
            self.attempt_refused(sess, attempt)
            refuse(Reject.E202, None, attempt.refusal.value)
            return
        self.logon_attempts.succeeded(source, self.clock())
        user: User = attempt.account  # type: ignore[assignment]
        if attempt.rehashed:  # users.toml now has the hash at the current cost
            self.reload_users()
            user = self.directory.users.get(user.id, user)
        src = pool if pool is not None else sess.station
        denied = authz.check_operator(user, src.serves, self.today())
        if denied is not None:
            # Role, agency or certification: the same E202 as any refusal (SECURITY.md
            # "Authentication"): telling the reason would tell that the password was right and what
            # the account is. The reason is journaled.
            refuse(Reject.E202, None, authz.refusal_reason(denied), cause=denied.reject)
            return
        alloc: Allocation | None = None
        if pool is not None:
            if sess.alloc is not None:  # a new logon on the same pooled session: give the old one back
                self.release_pooled(sess, "RELOGON")
            alloc = self.acp.allocate(pool.name, user.id)
            if alloc is None:
                refuse(Reject.E305, None, "POOL EXHAUSTED")
                return
            self._pool_gauge(pool.name)
            mnemonic = alloc.mnemonic
        else:
            mnemonic = sess.station.mnemonic
        text = "LOGON OK" + (f" POOL {pool.name} ALLOCATE {mnemonic}" if pool else "")
        entry = Entry(kind=Kind.SESSION, peer=pool.name if pool else mnemonic, mnemonic=mnemonic, user=user.id,
                      taf=sess.taf, text=text)
        try:
            await self.journal.append(entry)
        except JournalError:
            if alloc is not None:
                self.acp.release(alloc.mnemonic)
                self._pool_gauge(pool.name)
            sess._write(framing.nak(xid, Reject.E501.code, Reject.E501.reason))
            return
        if sess.state is State.CLOSED:
            if alloc is not None:
                self.acp.release(alloc.mnemonic)
                self._pool_gauge(pool.name)
                self.journal.submit([Entry(kind=Kind.SESSION, peer=pool.name, mnemonic=mnemonic, user=user.id,
                                           taf=sess.taf, text=f"POOL {pool.name} RELEASE {mnemonic} DISCONNECT")])
            return
        sess._write(framing.ack(xid, format_pairs(MNE=mnemonic, USR=user.id)))
        sess.alloc = alloc
        sess.logged_on(user, mnemonic, pool)
        sess.log.info("session.logon", outcome="ok")

    def attempt_refused(self, sess: Session, attempt: Attempt) -> None:
        """Journal the lockout a refused attempt caused (CJIS AC-7). The attempt and the lockout
        were counted by the auth service in state.db (``msc_logon_failures_total``)."""
        if attempt.locked_now:
            sess._journal_session("LOCKOUT", code=Reject.E203.code, user=attempt.user_id)
            sess.log.warning("session.lockout", locked_user=attempt.user_id)

    async def in_auth_pool(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._auth_pool, lambda: fn(*args, **kwargs))

    def _open_totp(self, user: User) -> bytes:
        return totp.open_secret(self._users_aead, user.id, user.totp)

    # -- pools (the Access Control Point, PPP §1.6.2 B) --------------------------------------

    def _pool_gauge(self, pool: str) -> None:
        self.metrics.pool_free.labels(pool).set(self.acp.free_count(pool))

    def release_pooled(self, sess: Session, why: str) -> None:
        """Give a pooled session's mnemonic back; what still waits for it goes to the pool's
        defined destination or is recorded undelivered (PPP §1.6.2 B 1 f)."""
        alloc = sess.alloc
        if alloc is None:
            return
        sess.alloc = None
        self.acp.release(alloc.mnemonic)
        self._pool_gauge(alloc.pool)
        self.journal.submit([Entry(kind=Kind.SESSION, peer=alloc.pool, mnemonic=alloc.mnemonic, user=alloc.user,
                                   taf=sess.taf, text=f"POOL {alloc.pool} RELEASE {alloc.mnemonic} {why}")])
        pool = self.directory.pools.get(alloc.pool)
        target = pool.unsolicited_to if pool else None
        outputs = self.delivery.take(alloc.mnemonic)
        if outputs:
            endpoint = self.directory.endpoint_of(target) if target else None
            asyncio.get_running_loop().create_task(self.router.redirect_pooled(alloc.mnemonic, outputs, target,
                                                                               endpoint))

    # -- password change (PWD, CJIS IA-5) ----------------------------------------------------

    def change_password(self, sess: Session, xid: int, inp: Input, body: PasswordChange, user: User) -> None:
        if sess.kind == "host":
            raise ProtocolError(Reject.E204, "A HOST CHANGES ITS OPERATORS' PASSWORDS ITSELF")
        sess.hold()
        asyncio.get_running_loop().create_task(self._change_password(sess, xid, inp, body, user))

    async def _change_password(self, sess: Session, xid: int, inp: Input, body: PasswordChange, user: User) -> None:
        from msc.mnemonics import userfile
        from msc.mnemonics.passwords import context_words, hash_password, password_problem

        try:
            try:
                attempt = await self.logon_gate.run((0, 0), self.auth.change_password, user.id, body.candidates())
            except Busy:
                sess._reject(xid, Reject.E307, "PASSWORD CHECKS BUSY, TRY AGAIN", inp.journal_text(), inp)
                return
            if not attempt.ok:
                # Wrong old password, locked or disabled account: one answer for all.
                self.attempt_refused(sess, attempt)
                sess._journal_session(f"PASSWORD CHANGE FAILED {attempt.refusal.value}", code=Reject.E202.code)
                sess._reject(xid, Reject.E202, "PASSWORD CHANGE REFUSED", inp.journal_text(), inp)
                return
            new = attempt.new_password
            problem = await self.in_auth_pool(password_problem, new, user.id, user.name,
                                              context=context_words(self.settings, user.ori))  # zxcvbn: ms
            if problem:
                sess._reject(xid, Reject.E108, problem.upper(), inp.journal_text(), inp)
                return
            hashed = await self.in_auth_pool(hash_password, new, ln=self.auth.cost)

            def change(users):
                return userfile.replace_user(users, user.id, lambda u: msgspec.structs.replace(u, password=hashed))

            await asyncio.to_thread(userfile.update, self.settings.users_path, change)
            self.reload_users()
            sess.user_rec = self.directory.users.get(user.id, sess.user_rec)
            sess._commit_then([sess._session_entry("PASSWORD CHANGED"),
                               Entry(kind=Kind.ADMIN, user=user.id, mnemonic=sess.mnemonic,
                                     text=f"USER PASSWD {user.id} BY PWD")], xid, b"", None)
        except Exception:
            corr = self.router.new_txn()
            self.log.exception("session.internal_error", correlation=corr)
            sess._reject(xid, Reject.E502, f"INTERNAL ERROR {corr}", inp.journal_text(), inp)
        finally:
            sess._release_held()

    # -- messages the switch handles itself -----------------------------------------------

    def admin_message(self, sess: Session, xid: int, inp: Input, body: AdminText, user: User, oif: str, taf: str) -> None:
        """``AM`` (PROTOCOL.md §2, PPP §1.6.5): to local mnemonics, ORIs and groups, and through the
        upstream to every destination msc does not host. Authorized as category ``admin``."""
        d = self.directory
        denied = authz.decide(user=user, authorizations=sess._serving()[0], serves=sess._serving()[1], route=None,
                              body=body, prohibited_purposes=d.prohibited_purposes, today=self.today())
        if denied is not None:
            raise ProtocolError(denied.reject, denied.detail)
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        local, remote = admin_destinations(d, body.destinations, now=now, attached=self.delivery.attached)
        link = None
        if remote:
            link = self.router.links.get(self.admin_upstream())
            if link is None or not link.up:
                raise ProtocolError(Reject.E302)
        router = self.router
        # Each local destination gets the message with the sender in place of the destination
        # list (in parts if longer than a station can take). Admission is all or nothing: room
        # for every output in every destination queue, reserved before the commit (PROTOCOL.md §5
        # "Bounds"); and a remote part reserves the sender's slot for its fate (E302).
        copies = []
        counts: dict[str, int] = {}
        for endpoint, m in local:
            payload = f"{m}.AM.{body.ori}.{inp.mnemonic}.TXT {body.text}".encode("ascii", "replace")
            split = router._split(payload)
            copies.append((endpoint, m, payload, split))
            counts[endpoint] = counts.get(endpoint, 0) + len(split[1])
        sender = sess._endpoint_for(inp.mnemonic)
        if remote:
            counts[sender] = counts.get(sender, 0) + 1
        if not self.delivery.reserve(counts, path="admin"):
            full = next((e for e, n in counts.items() if not self.delivery.room(e, n)), sender)
            raise ProtocolError(Reject.E307, f"QUEUE OF {full} FULL, TRY AGAIN")
        txn = router.new_txn()
        common = dict(user=oif, taf=taf, ori=body.ori, mke=inp.mke, txn=txn)
        entries = [Entry(kind=Kind.RECEIVED, direction="in", peer=sess._peer_name(), mnemonic=inp.mnemonic,
                         text=inp.journal_text(), **common)]
        forwarded = None
        if remote:
            control = "".join(f".{c}" for c in body.control)  # the Nlets control field goes along
            forwarded = f"{inp.header}.*{oif}.#{taf}.AM.{body.ori}.{','.join(remote)}{control}.TXT {body.text}"
            entries.append(Entry(kind=Kind.FORWARDED, direction="out", peer=link.name, mnemonic=inp.mnemonic,
                                 text=forwarded, **common))
        outputs: list[Output] = []
        at: list[int] = []
        for endpoint, m, payload, split in copies:
            outs, ents, pos = router.prepare([(endpoint, m)], payload, inp.mnemonic, dict(common), None, None,
                                              split=split)
            outputs += outs
            at += [len(entries) + i for i in pos]
            entries += ents
        del copies
        pending = None
        if remote:
            pending = Pending(txn=txn, header=inp.header, mnemonic=inp.mnemonic, endpoint=sender,
                              user=oif, taf=taf, ori=body.ori, mke=inp.mke, category="admin", upstream=link.name,
                              expects_answer=False, slot=True)

        def after(seqs: list[int]) -> None:
            router.deliver_committed(outputs, at, seqs)
            if pending is not None:
                # Nothing comes back for an AM: the upstream's A is its answer, a lost link E302.
                router.dispatch(pending, forwarded.encode("ascii", "replace"))

        def failed(exc: BaseException | None) -> None:
            self.delivery.release(counts)
            router.landed_undelivered(outputs, at, exc)  # outputs whose records landed anyway: closed

        sess._commit_then(entries, xid, b"", after, category="admin", pass_seqs=True, on_fail=failed)

    def admin_upstream(self) -> str | None:
        c = self.settings.config
        return c.switch.admin_upstream or (c.upstream[0].name if c.upstream else None)

    # -- run-time control (msc user …, msc station …) ----------------------------------------

    async def control_unlock(self, req) -> dict:
        await asyncio.to_thread(self.auth.unlock, req.id)
        return {"ok": True}

    async def control_auth_changed(self, req) -> dict:
        """The msc command changed logon state in state.db (a lockout, an unlock): re-read it."""
        await asyncio.to_thread(self.auth.refresh)
        return {"ok": True}

    async def control_station(self, req) -> dict:
        """``msc station disable|enable``: applied at once; a disabled station's session is dropped."""
        mnemonic, disabled = req.mnemonic, req.disabled
        await asyncio.to_thread(self.state.set_station, mnemonic, disabled)
        self.apply_directory(Directory(self.settings, disabled_stations=frozenset(self.state.disabled_stations())))
        return {"ok": True}
