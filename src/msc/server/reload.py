"""How a running switch takes a new configuration (CONFIG.md "Reload", SIGHUP; ``msc user``,
``msc station`` through the control socket).

A part of :class:`msc.server.switch.Switch` (its attributes: :class:`msc.server.parts.SwitchParts`):
both files are re-read and validated; if either is invalid the switch keeps running as before. A
valid change applies without dropping sessions — each session re-points what it holds
(:meth:`msc.server.session.Session.reconfigure`), removed or disabled stations and users are logged
off, listeners and upstream links are added, removed or re-bound as their tables changed, and every
bound and limit that can change at run time does. The listeners are opened here too
(:meth:`ConfigChanges._listen`), at start and by a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from msc.config.diff import changes as config_changes
from msc.config.model import ListenerSection
from msc.config.settings import Settings
from msc.config.tls import server_ssl_context
from msc.config.validate import parse_hostport
from msc.journal.records import Entry, JournalError, Kind
from msc.mnemonics.directory import Directory
from msc.server.listener import ListenerRuntime, TlsServer
from msc.server.parts import SwitchParts, started
from msc.server.session import Session


class ConfigChanges(SwitchParts):
    """reload_users, apply_directory, reload (see the module docstring)."""

    def reload_users(self) -> str | None:
        """Re-read users.toml; apply it if valid. Returns an error text, or None."""
        from msc.config.issues import ConfigIssue
        from msc.config.load import decode_file
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
        for sess in self.sessions:
            # Sessions judge the next message by the new configuration.
            sess.reconfigure(directory)

    async def reload(self) -> bool:
        """CONFIG.md "Reload": re-read both files; if either is invalid, keep running as before.

        A valid change applies without dropping sessions: removed or disabled stations and users
        are logged off, authorizations and routes apply to the next message, listeners and
        upstream links are added, removed or re-bound as their tables changed.
        """
        from msc.config.issues import ConfigError
        from msc.config.load import load

        try:
            new = await asyncio.to_thread(load, self.settings.config_path)
        except ConfigError as exc:
            self.last_reload_error = "; ".join(str(i) for i in exc.issues)[:2000]
            self.metrics.config_reload.labels("error").inc()
            self.log.error("config.reload_failed", errors=len(exc.issues), first=str(exc.issues[0]))
            with contextlib.suppress(JournalError):
                await started(self.journal).append(Entry(kind=Kind.ADMIN, code="E502",
                                                text=f"CONFIG RELOAD FAILED: {len(exc.issues)} ERROR(S); RUNNING CONFIG KEPT"))
            return False
        refused = await self.publish_users()  # (PostgreSQL, a hand edit of users.toml: userdir.py)
        if refused is not None:
            self.last_reload_error = refused[:2000]
            self.metrics.config_reload.labels("error").inc()
            self.log.error("config.reload_failed", errors=1, first=refused)
            with contextlib.suppress(JournalError):
                await started(self.journal).append(Entry(kind=Kind.ADMIN, code="E502",
                                                text="CONFIG RELOAD FAILED: USERS.TOML NOT PUBLISHED; RUNNING CONFIG KEPT"))
            return False
        old = self.settings
        changes = await self._apply_config(old, new)
        self.last_reload_error = None
        self.metrics.config_reload.labels("ok").inc()
        self.log.info("config.reloaded", changes=changes)
        with contextlib.suppress(JournalError):
            await started(self.journal).append(Entry(kind=Kind.ADMIN, text="CONFIG RELOAD OK" + (
                f": {'; '.join(changes)}" if changes else "")))
        return True

    async def check_deferred_reload(self) -> bool:
        """A SIGHUP to a node not serving yet (a pair's standby, or a switch still starting): the
        files are read and validated now, their changes applied once it serves (``msc serve``
        calls :meth:`reload` then). A file that does not validate is said at once, as by a
        serving switch — log ``config.reload_failed`` (error), ``msc_config_reload_total{outcome=
        "error"}``, ``/readyz`` ``last_reload_error`` — not at the takeover (newcomer8: it showed
        only when the standby took over, and a restart of that standby, exit 2, would have left the
        pair without one). Nothing is journaled: a standby has no journal; the takeover's reload
        journals its outcome. A file that validates is ``config.reload_deferred`` (info) and
        clears an earlier refusal. True when the files validate."""
        from msc.config.issues import ConfigError
        from msc.config.load import load

        try:
            await asyncio.to_thread(load, self.settings.config_path)
        except ConfigError as exc:
            self.last_reload_error = "; ".join(str(i) for i in exc.issues)[:2000]
            self.metrics.config_reload.labels("error").inc()
            self.log.error("config.reload_failed", errors=len(exc.issues), first=str(exc.issues[0]),
                           deferred="not serving yet: if it takes over, it keeps its previous configuration; "
                                    "a restart with these files would fail")
            return False
        self.last_reload_error = None
        self.log.info("config.reload_deferred", why="not serving yet: applied once the switch has started")
        return True

    async def _apply_config(self, old: Settings, new: Settings) -> list[str]:
        changes: list[str] = []
        router, delivery, journal = started(self.router), started(self.delivery), started(self.journal)
        ops = started(self.ops)
        oc, nc = old.config, new.config
        # (In a worker thread: the run-time state may be a PostgreSQL database.)
        disabled = frozenset(await asyncio.to_thread(self.state.disabled_stations))
        self.settings = new
        self.apply_directory(Directory(new, disabled_stations=disabled))
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
            link = router.links.get(u.name)
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
            await router.links.pop(name).stop()
            changes.append(f"upstream {name} removed")
        # Everything else that can change at run time.
        self.auth.cost = nc.switch.password_cost
        self.logon_gate.configure(checks=nc.switch.logon_checks,
                                  queue=nc.switch.logon_queue, wait_s=nc.switch.logon_wait_s)
        self.logon_attempts.limit = nc.switch.logon_failures_per_address
        self.logon_attempts.window_s = nc.switch.logon_failures_window_s
        self.accounts.throttle_delay_s = nc.switch.logon_throttle_delay_s
        self.budgets.configure(nc.journal)
        for sess in self.sessions:
            sess.refusals.limits = self.budgets.limits
        self.auth.rehash = self.users_rehash(new)
        delivery.queue_max = nc.switch.queue_max
        delivery.output_memory_bytes = nc.switch.output_memory_bytes
        delivery.expiry_s = nc.switch.queue_expiry_s
        router.requests.late_answer_s = nc.switch.late_answer_s
        journal.checkpoint_every = nc.journal.checkpoint_every
        journal.checkpoint_interval_s = nc.journal.checkpoint_interval_s
        if nc.metrics.bind != oc.metrics.bind:
            await ops.stop()
            await ops.start(nc.metrics.bind)
            changes.append("metrics endpoint re-bound")
        restart_only = [k for k in ("dir", "key_file", "synchronous") if getattr(oc.journal, k) != getattr(nc.journal, k)]
        if nc.switch.data_dir != oc.switch.data_dir:
            restart_only.append("data_dir")
        if nc.node != oc.node:
            restart_only.append("node")
        if nc.storage != oc.storage:  # the journal, state and queues stay where they were opened
            restart_only.append("storage")
        if restart_only:
            self.log.warning("config.needs_restart", settings=restart_only)
            changes.append(f"needs a restart to apply: {', '.join(restart_only)}")
        if oc.station != nc.station or oc.pool != nc.pool or oc.agency != nc.agency:
            changes.append("stations/pools/agencies updated")
        if oc.route != nc.route:
            changes.append("routes updated")
        if old.users != new.users:
            changes.append("users updated")
        return changes + config_changes(oc, nc)  # every other setting, by name

    # -- listeners ------------------------------------------------------------------------

    async def _listen(self, lc: ListenerSection, *, register: bool = True) -> ListenerRuntime:
        host, port = parse_hostport(lc.bind)
        rt = ListenerRuntime(lc, metrics=self.metrics)
        services = started(self.services)
        if lc.proxy_protocol:
            # A relay's connections (PROXY header first, proxied.py); TLS, if any, by the event loop.
            from msc.server.proxied import ProxyGate

            ctx = server_ssl_context(self.settings, lc.tls) if lc.tls else None
            rt.server = await asyncio.get_running_loop().create_server(
                lambda: ProxyGate(services, rt), host, port, ssl=ctx, backlog=1024, reuse_address=True)
        elif lc.tls:
            # TLS: accepted here, each handshake holding a slot with its own deadline (listener.py).
            server = TlsServer(rt, server_ssl_context(self.settings, lc.tls),
                               lambda h: Session(services, rt, handshake=h), self.budgets.tls_failed)
            server.bind(host, port)
            rt.server = server
        else:
            rt.server = await asyncio.get_running_loop().create_server(
                lambda: Session(services, rt), host, port, backlog=1024, reuse_address=True)
        if self.stepped_down is not None:
            # The lease was lost while this node was starting (a takeover's journal open or START
            # record): Switch.step_down closed what was open then; what opens after it serves nothing.
            rt.server.close()
        rt.configured()
        if register:
            self.listeners.append(rt)
        return rt

    def listener_ports(self) -> dict[str, int]:
        return {rt.cfg.name: rt.server.sockets[0].getsockname()[1] for rt in self.listeners if rt.server}
