"""What the switch's parts share: the attributes :class:`msc.server.switch.Switch` sets, declared
once for the classes it is made of (:mod:`msc.server.background`, :mod:`msc.server.reload`,
:mod:`msc.server.controls`, :mod:`msc.server.roles`), so that the type checker sees each where it
is used.

Nothing here runs: ``Switch.__init__`` and ``Switch.start`` assign every attribute (those that
need the journal open are None until ``start``); the methods at the end are defined by the switch
or one of its parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from msc.protocol.codes import MscError

if TYPE_CHECKING:
    from msc.config.model import UpstreamSection
    from msc.config.settings import Settings
    from msc.journal.journal import Journal
    from msc.memory import Trimmer
    from msc.mnemonics.accounts import Accounts
    from msc.mnemonics.acp import AccessControlPoint
    from msc.mnemonics.auth import AuthService
    from msc.mnemonics.directory import Directory
    from msc.mnemonics.state import RuntimeState
    from msc.mnemonics.throttle import AddressAttempts
    from msc.mnemonics.userfile import UsersStore
    from msc.ops.availability import LedgerBackend
    from msc.ops.http import OpsServer
    from msc.ops.metrics import Metrics
    from msc.routing.admission import LastUse
    from msc.routing.delivery import Delivery
    from msc.routing.router import Router
    from msc.routing.upstream import UpstreamLink
    from msc.server.budgets import Budgets
    from msc.server.listener import ListenerRuntime
    from msc.server.logons import LogonGate
    from msc.server.services import Registry, Services
    from msc.storage.backends import Backends, Deferred


T = TypeVar("T")


class StartupError(MscError):
    """The switch refuses to start (``msc serve`` says why and exits 2)."""


def started(part: T | None) -> T:
    """A part the switch makes in ``start`` (the journal, the router, delivery …): there once the
    switch runs, which is when its parts use it."""
    if part is None:
        raise RuntimeError("the switch has not started")
    return part


class SwitchParts:
    """The switch's attributes as its parts use them (see the module docstring)."""

    settings: Settings
    clock: Callable[[], float]
    metrics: Metrics
    log: Any  # a structlog logger bound to the switch's name
    backends: Backends  # where the durable state is ([storage]: SQLite files or PostgreSQL)
    state: RuntimeState
    _state: Deferred  # the same handle, opened at first use (a pair's node: at start)
    _state_deferred: bool
    directory: Directory
    auth: AuthService
    acp: AccessControlPoint
    accounts: Accounts
    logon_gate: LogonGate
    logon_attempts: AddressAttempts
    budgets: Budgets
    sessions: Registry
    listeners: list[ListenerRuntime]
    journal: Journal | None
    router: Router | None
    delivery: Delivery | None
    services: Services | None  # what sessions are given, once the journal is open
    ops: OpsServer | None
    ledger: LedgerBackend | None
    stop_split: int | None  # the run of no length that carries a stop mark after a journal outage
    verify_failures: list[dict[str, Any]]
    last_reload_error: str | None
    last_use: LastUse
    _trimmer: Trimmer
    _queued_before: int
    # One node of an active/standby pair ([node], msc.server.roles); a single node is "active".
    node_name: str | None
    role: str
    lease_epoch: int
    stepped_down: str | None
    write_check: Callable[[], None] | None
    fence: Callable[[Any], Awaitable[None]] | None
    lease_info: Callable[[], dict[str, str | None]] | None
    users_store: UsersStore | None  # PostgreSQL: the user directory every node enforces (userdir.py)

    def _add_link(self, up: UpstreamSection) -> UpstreamLink:
        raise NotImplementedError  # msc.server.switch.Switch._add_link

    def reload_users(self) -> str | None:
        raise NotImplementedError  # msc.server.reload.ConfigChanges.reload_users

    def watch_users(self) -> None:
        raise NotImplementedError  # msc.server.userdir.UserDirectory.watch_users

    def abandon_users(self) -> None:
        raise NotImplementedError  # msc.server.userdir.UserDirectory.abandon_users

    def users_rehash(self, settings: Settings) -> Callable[[str, str, str], bool]:
        raise NotImplementedError  # msc.server.userdir.UserDirectory.users_rehash

    async def publish_users(self) -> str | None:
        raise NotImplementedError  # msc.server.userdir.UserDirectory.publish_users

    def apply_directory(self, directory: Directory) -> None:
        raise NotImplementedError  # msc.server.reload.ConfigChanges.apply_directory
