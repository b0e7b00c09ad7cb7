"""Storage backends other than the embedded SQLite files (issue 16): PostgreSQL.

``[storage] backend = "postgresql"`` (CONFIG.md "Storage") keeps the journal and the durable
state in one PostgreSQL database, through the same interfaces the SQLite backend implements
(:mod:`msc.journal.interfaces`, :class:`msc.mnemonics.state.RuntimeState`,
:class:`msc.routing.outbox.OutboxBackend`, :class:`msc.ops.availability.LedgerBackend`) and
checked by the same contract suite (``tests/contract/``).

* :mod:`msc.storage.postgres` — connecting (the URI, the password from a file or the
  environment) and running asyncpg for blocking callers;
* :mod:`msc.storage.pgjournal` — the journal's writer and reader (ARCHITECTURE.md "The journal
  on PostgreSQL");
* :mod:`msc.storage.pgstate` — run-time state of users and stations, delivery queues and OSNs,
  the availability ledger.
"""
