"""Active/standby nodes (issue 16 item 2; OPERATIONS.md "Running two nodes").

Exactly one ``msc serve`` node of a pair is active at a time: it holds a lease, a row in
PostgreSQL whose expiry the database's clock decides, and every lease a node acquires carries a
new **fencing epoch**. Every journal commit of the active node checks, in the same transaction,
that its epoch is still the lease's; a node that was paused or cut off past its lease can
therefore never commit after another node took over.

- :mod:`msc.ha.lease` — the decision logic: when to acquire, renew, give up; sans-IO, pure.
- :mod:`msc.ha.pglease` — the lease's SQL (asyncpg) and the fence for commit transactions.
- :mod:`msc.ha.keeper` — the asyncio loop that runs the decision logic against the database.

This package imports no other msc package but :mod:`msc.protocol`'s error base and the
configuration (pyproject's import contracts): the server wires it to the switch.
"""
