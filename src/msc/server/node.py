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
from msc.ha.site import lease_for
from msc.journal.records import JournalFenced

#: ``msc serve``'s exit status after it stepped down (sysexits' EX_TEMPFAIL: "try again"): its
#: supervisor (systemd ``Restart=always``) starts it again, and it comes back as a standby.
EXIT_STEPPED_DOWN = 75


def keeper_for(settings: Settings, *, on_role: Callable[[Role, int, str], None] | None = None,
               on_attempt: Callable[[str], None] | None = None,
               hold_back: Callable[[], str | None] | None = None) -> LeaseKeeper:
    """The lease keeper for ``[node]``: its name, lease time and the lease's database (and
    ``hold_back``: :class:`LeaseKeeper`'s). Raises ValueError when the configuration names no
    lease database (validation refuses that first)."""
    lease = lease_for(settings)
    return LeaseKeeper(lease, LeaseMachine(lease.ttl_s), on_role=on_role, on_attempt=on_attempt, hold_back=hold_back)


class FencedWriter:
    """A journal writer (:class:`msc.journal.interfaces.JournalWriter`) whose every write first
    asks ``check()``, which raises when this node no longer believes it holds the lease.

    The refusal is a :class:`JournalFenced` (a :class:`JournalError`) before anything reaches the storage: the journal
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
            raise JournalFenced(f"not written: {exc}") from None

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

