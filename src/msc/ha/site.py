"""The lease a configuration's ``[node]`` names: :func:`lease_for` (used by ``msc serve``'s
keeper and by the ``msc`` command, which asks who is active before journaling through a node).
"""

from __future__ import annotations

from msc.config.load import Settings
from msc.config.secrets import configured_password
from msc.ha.pglease import LeaseRow, PgLease, SeenNode, connector


def lease_for(settings: Settings) -> PgLease:
    """This node's handle on the lease (``[node]``: its name, lease time and database — ``lease_dsn``
    or the journal's own ``[storage]`` database). Raises ValueError when there is no ``[node]`` or
    the configuration names no lease database (validation refuses that first)."""
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
    # Read as the storage reads it (one function: a file that works for one works for the other).
    password = configured_password(settings, dsn, password_file,
                                   "[node] lease_password_file" if node.lease_dsn is not None else "[storage] password_file")
    timeout_s = min(5.0, node.lease_ttl_s)
    return PgLease(connector(dsn, password=password, timeout_s=timeout_s),
                   holder=node.name, ttl_s=node.lease_ttl_s, timeout_s=timeout_s)


def read_lease(settings: Settings) -> LeaseRow | None:
    """The lease row as the database has it now (or None when none was ever taken), for a command
    that asks which node is active (``msc status``, a refused ``--as`` record). Blocking, bounded
    by the lease's connection timeout. Raises LeaseUnavailable, ValueError or OSError."""
    import asyncio

    lease = lease_for(settings)

    async def current() -> LeaseRow | None:
        try:
            return await lease.current()
        finally:
            await lease.close()

    return asyncio.run(current())


def read_nodes_alive(settings: Settings, within_s: float) -> list[SeenNode]:
    """The nodes of this configuration's lease that said they were alive within ``within_s``
    seconds (``msc status``: is any node running to take an expired lease?). Blocking, bounded
    like :func:`read_lease`; raises as it does."""
    import asyncio

    lease = lease_for(settings)

    async def seen() -> list[SeenNode]:
        try:
            return await lease.seen_alive(within_s)
        finally:
            await lease.close()

    return asyncio.run(seen())
