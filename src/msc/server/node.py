"""One node of an active/standby pair (``[node]``; OPERATIONS.md "Running two nodes").

:func:`keeper_for` makes the lease keeper a configuration describes; :class:`FencedWriter`
wraps the journal's writer of an active node so that no write leaves this process once the
node may no longer believe it holds the lease — the local half of the fence. (The database half,
``msc_fence`` inside each commit transaction, is the PostgreSQL journal writer's: it takes
:meth:`msc.ha.keeper.LeaseKeeper.fence`.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from msc.config.load import Settings
from msc.ha.keeper import LeaseKeeper
from msc.ha.lease import LeaseMachine, Role
from msc.ha.pglease import PgLease, connector
from msc.journal.records import JournalError

#: ``msc serve``'s exit status after it stepped down (sysexits' EX_TEMPFAIL: "try again"): its
#: supervisor (systemd ``Restart=always``) starts it again, and it comes back as a standby.
EXIT_STEPPED_DOWN = 75


def keeper_for(settings: Settings, *, on_role: Callable[[Role, int, str], None] | None = None,
               on_attempt: Callable[[str], None] | None = None) -> LeaseKeeper:
    """The lease keeper for ``[node]``: its name, lease time and the lease's database. Raises
    ValueError when the configuration names no lease database (validation refuses that first)."""
    node = settings.config.node
    if node is None:
        raise ValueError("no [node] table: a single node is always active")
    dsn, password_file = node.lease_dsn, node.lease_password_file
    if dsn is None:
        # The journal's own database ([storage] backend = "postgresql", issue 16 item 1): the lease
        # and the records it fences live together.
        storage = getattr(settings.config, "storage", None)
        if storage is None or getattr(storage, "backend", None) != "postgresql" or not storage.dsn:
            raise ValueError("[node] needs lease_dsn, or [storage] backend = \"postgresql\" (CONFIG.md \"Two nodes\")")
        dsn, password_file = storage.dsn, storage.password_file
    password = None
    if password_file is not None:
        lines = settings.path(password_file).read_text().splitlines()
        password = lines[0] if lines else ""
    lease = PgLease(connector(dsn, password=password, timeout_s=min(5.0, node.lease_ttl_s)),
                    holder=node.name, ttl_s=node.lease_ttl_s, timeout_s=min(5.0, node.lease_ttl_s))
    return LeaseKeeper(lease, LeaseMachine(node.lease_ttl_s), on_role=on_role, on_attempt=on_attempt)


class FencedWriter:
    """A journal writer (:class:`msc.journal.interfaces.JournalWriter`) whose every write first
    asks ``check()``, which raises when this node no longer believes it holds the lease.

    The refusal is a :class:`JournalError` before anything reaches the storage: the journal
    treats it as a failed commit (its senders are answered ``E501``, nothing is forwarded).
    Reads and properties pass through.
    """

    def __init__(self, inner: Any, check: Callable[[], None]) -> None:
        self._inner = inner
        self._check = check

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _fence(self) -> None:
        try:
            self._check()
        except Exception as exc:
            raise JournalError(f"not written: {exc}") from None

    async def commit(self, rows: Sequence[Any], poke_indexer: bool = False) -> None:
        self._fence()
        await self._inner.commit(rows, poke_indexer)

    async def checkpoint(self, name: str, ts: int) -> Any:
        self._fence()
        return await self._inner.checkpoint(name, ts)

    async def purge_period(self, period: str, purge_seq: int) -> Any:
        self._fence()
        return await self._inner.purge_period(period, purge_seq)

    async def delete_partition(self, period: str) -> None:
        self._fence()
        await self._inner.delete_partition(period)

