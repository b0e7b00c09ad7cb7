"""The user directory of a switch on PostgreSQL (issue 16, newcomer8 #1): every node enforces the
database's copy (OPERATIONS.md "Running two nodes", CONFIG.md "users.toml").

A part of :class:`msc.server.switch.Switch` (its attributes: :class:`msc.server.parts.SwitchParts`).
With ``[storage] backend = "postgresql"`` the authoritative user directory is a versioned row in
the database (:mod:`msc.storage.pgusers`); every change — ``msc user …``, the web console, a
terminal's ``PWD``, the automatic rehash — is committed there first
(:func:`msc.mnemonics.userfile.update`). This node installs the database's copy as its
``users.toml`` and applies it (:meth:`ConfigChanges.reload_users`):

- at start and at takeover, before the journal and the listeners open (a database that holds
  none yet imports this machine's file: the first node to start wins);
- every ``USERS_RECHECK_S``, standby or active: a change made on the other machine applies here
  within about that long (a disabled user's sessions are logged off), and ``msc user list`` /
  ``msc config check`` on a standby's machine read a current file;
- a hand edit of users.toml: published by ``SIGHUP`` on the active node (validated like every
  reload; refused if the database's copy changed meanwhile); on a standby, or once the database's
  copy changes, the file is replaced — kept beside it as ``users.toml.replaced-<time>`` and logged
  (``users.file_replaced``).

SQLite (a single node): nothing here runs; users.toml is the directory, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING

from msc.mnemonics import userfile
from msc.mnemonics.auth import users_file_rehash
from msc.outage import Outage
from msc.server.parts import StartupError, SwitchParts

if TYPE_CHECKING:
    from collections.abc import Callable

    from msc.config.settings import Settings
    from msc.mnemonics.userfile import Document, UsersStore

#: How often a node looks at the database's copy of the user directory (seconds).
USERS_RECHECK_S = 2.0


class UserDirectory(SwitchParts):
    """The database's user directory on this node (see the module docstring)."""

    users_store: UsersStore | None = None
    users_doc: Document | None = None  # the database's copy this node installed last
    _users_watch: asyncio.Task[None] | None = None
    _users_outage: Outage | None = None  # the look's failures: one warning per outage (msc.outage)

    def users_rehash(self, settings: Settings) -> Callable[[str, str, str], bool]:
        """The authentication service's ``rehash``, committed to the database's copy first."""
        if self.users_store is None:
            self.users_store = self.backends.users_store()
        return users_file_rehash(settings.users_path, self.users_store)

    def _stamp(self) -> str:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")

    async def sync_users(self, *, keep_edits: bool, apply: bool = False) -> str | None:
        """Install the database's copy (:func:`msc.mnemonics.userfile.sync`) and, when it is a new
        one, apply it (:meth:`reload_users`). Returns why this node's configuration refused to
        apply it (logged), or None. Raises the store's ``OSError``."""
        store = self.users_store
        if store is None:
            return None
        path = self.settings.users_path
        done = await asyncio.to_thread(userfile.sync, path, store, last=self.users_doc, keep_edits=keep_edits,
                                       stamp=self._stamp())
        if done.imported:
            self.log.warning("users.imported", node=self.node_name, file=str(path), version=done.doc.version,
                             store=store.describe())
        if done.kept is not None:
            self.log.warning("users.file_replaced", node=self.node_name, file=str(path), kept=str(done.kept),
                             version=done.doc.version, why="users.toml differed from the user directory in the database")
        new = self.users_doc is None or done.doc.version != self.users_doc.version
        self.users_doc = done.doc
        if not (new or apply):
            return None
        err = self.reload_users()
        if err is not None:
            self.log.error("users.not_applied", node=self.node_name, version=done.doc.version, error=err[:2000])
        else:
            self.log.info("users.applied", node=self.node_name, version=done.doc.version)
        return err

    async def users_at_start(self) -> None:
        """At start or takeover, before anything serves: install and apply the database's copy
        (this machine's file, if it differs, kept beside it). Fail closed: a node that cannot
        read it, or whose configuration refuses it, does not serve (:class:`StartupError`)."""
        store = self.users_store
        if store is None:
            return
        try:
            err = await self.sync_users(keep_edits=False, apply=True)  # (even if the standby's look installed it)
        except Exception as exc:  # noqa: BLE001 - the store's OSError, or a users file that does not decode
            raise StartupError(f"the user directory could not be installed from {store.describe()}: {exc}") from None
        if err is not None:
            raise StartupError(f"the user directory in {store.describe()} is refused by this node's configuration: "
                               f"{err[:2000]}")
        self.watch_users()

    def watch_users(self) -> None:
        """Start the look every ``USERS_RECHECK_S`` (once; a standby from its start)."""
        if self.users_store is not None and self._users_watch is None:
            self._users_watch = asyncio.create_task(self._watch_users(), name="users-watch")

    async def _watch_users(self) -> None:
        """Every ``USERS_RECHECK_S``. A look that fails — the database away — is said once per
        outage (``users.not_synced``, warning, with its reason; ``users.synced`` when a look works
        again), not at every look (newcomer9: at every reason's change, a stopped server's too)."""
        outage = self._users_outage = Outage("users.not_synced", "users.synced", logger=self.log, field="reason",
                                             node=self.node_name)
        while True:
            await asyncio.sleep(USERS_RECHECK_S)
            try:
                await self.sync_users(keep_edits=self.role == "active")
            except Exception as exc:  # noqa: BLE001 - said once, never a task's traceback; the next look retries
                outage.failed(str(exc)[:500] or type(exc).__name__)
            else:
                outage.ok()

    async def publish_users(self) -> str | None:
        """SIGHUP on the active node, its users.toml validated: a hand edit becomes the
        database's copy. Returns why it was refused (the reload then keeps the running
        configuration), or None."""
        store = self.users_store
        if store is None:
            return None
        path = self.settings.users_path
        try:
            doc = await asyncio.to_thread(userfile.publish, path, store, last=self.users_doc)
        except userfile.UsersConflict as exc:
            with contextlib.suppress(Exception):  # (if it fails now, the next look installs it)
                await self.sync_users(keep_edits=False)  # the database's copy installed, the edit kept beside it
            return f"{exc}; it was kept beside users.toml and the database's copy installed: edit that and reload again"
        except OSError as exc:
            return f"users.toml was not published, the running configuration kept: {exc}"
        if doc is not None:
            self.users_doc = doc
            self.log.warning("users.published", node=self.node_name, file=str(path), version=doc.version,
                             store=store.describe())
        return None

    def abandon_users(self) -> None:
        """A node that stepped down is leaving: the look stops now (its store is given back), and
        says nothing of a failure the step-down itself made."""
        if self._users_watch is not None:
            self._users_watch.cancel()

    async def stop_users(self) -> None:
        """The switch stops: the look ends, the store's connection is closed (bounded)."""
        if self._users_watch is not None:
            self._users_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._users_watch
            self._users_watch = None
        if self.users_store is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.users_store.close)
