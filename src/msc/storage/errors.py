"""The one error every durable-state store raises when its storage cannot be used now.

Imports nothing of msc: the server, the ``msc`` command and every storage backend name it.
"""

from __future__ import annotations

import sqlite3


class StorageUnavailable(OSError):
    """The configured database cannot be reached, refused msc's login, or did not answer a call
    in time (``[storage] backend = "postgresql"``; a call waits at most
    :data:`msc.storage.postgres.CALL_TIMEOUT_S`). One line for the operator — what, where (the
    servers and database, never the password) and the database's own reason — no traceback.

    Raised when a handle is opened (:class:`msc.storage.backends.Backends`) and by every call of
    an open PostgreSQL handle (run-time state, delivery queues, the availability ledger): the
    call did not happen, or its outcome is unknown (a lost COMMIT answer), and nothing of the
    caller's may depend on it. The switch answers a session ``E503`` (PROTOCOL.md §6) and a
    control-socket request ``{"ok": false}``; the ``msc`` command prints the line and exits 2.
    The next call connects again by itself."""


#: What the run-time state raises when its storage cannot be used now, whichever backend:
#: PostgreSQL's :class:`StorageUnavailable`, and SQLite's ``OperationalError`` (``state.db``
#: locked beyond its busy timeout, a disk I/O error, a file that cannot be opened). A LOGON or PWD
#: that meets one is answered E503 (msc.mnemonics.accounts.Accounts ``unavailable``).
STATE_ERRORS: tuple[type[Exception], ...] = (StorageUnavailable, sqlite3.OperationalError)
