"""The user directory in PostgreSQL (issue 16, newcomer8 #1): one copy every node of a pair enforces.

With SQLite the user directory is ``users.toml``. On PostgreSQL its authoritative copy is one
versioned row in ``[storage]``'s database; each machine's ``users.toml`` is a copy of it
(:mod:`msc.mnemonics.userfile`: every writer commits here first, then writes the file; a node
installs the database's copy at start, at takeover and every few seconds). Before, each node
enforced its own file: a user disabled on one node logged on again after a failover to the other.

::

    users_directory   one row: version (1, 2, … one per committed change), document (the
                      users.toml text: salted scrypt hashes, TOTP secrets sealed by the key
                      ring's users key — nothing in it opens without the master key file),
                      changed (when)

A change holds the row ``FOR UPDATE`` (the first one, with no row yet, an advisory lock), so
changes made on two machines at once are applied one after the other, each to the other's result.

Blocking, like the key ring (:class:`msc.storage.pgkeyring.PgKeyStore`): the ``msc`` command
calls it directly, the switch from worker threads. Database errors surface as
:class:`UsersUnavailable` (a :class:`msc.storage.errors.StorageUnavailable`): the change was not
made (or, a lost COMMIT answer, its outcome is unknown — the next look at the row tells).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from msc.mnemonics.userfile import Document
from msc.reasons import explain
from msc.storage.errors import StorageUnavailable
from msc.storage.postgres import DB_ERRORS, OneConnection, PgSettings, safe_dsn

T = TypeVar("T")

SCHEMA_LOCK = 0x6D73_6306

SCHEMA = """
CREATE TABLE IF NOT EXISTS users_directory(
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL,
    document text NOT NULL,
    changed timestamptz NOT NULL DEFAULT now()
);
"""


class UsersUnavailable(StorageUnavailable):
    """The database holding the user directory cannot be reached (or failed the statement)."""


class PgUsersStore:
    """:class:`msc.mnemonics.userfile.UsersStore` on PostgreSQL (see the module docstring). One
    connection, opened at the first use and again after it fails; :meth:`close` ends it."""

    def __init__(self, pg: PgSettings) -> None:
        self.pg = pg
        self._db = OneConnection(pg, "msc-users", SCHEMA, SCHEMA_LOCK)
        self._lock = threading.Lock()  # one statement sequence at a time on the one connection

    def describe(self) -> str:
        return f"PostgreSQL ({safe_dsn(self.pg.dsn)})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def abort(self, why: str) -> None:
        """Give a waiting call back now and refuse later ones (a node that stepped down)."""
        self._db.abort(why)

    def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        with self._lock:
            try:
                return self._db.run(work)
            except DB_ERRORS as exc:
                raise UsersUnavailable(f"the user directory in {self.describe()}: {explain(exc)}") from None

    # -- UsersStore ------------------------------------------------------------------------

    def version(self) -> int | None:
        async def work(conn: asyncpg.Connection) -> int | None:
            v = await conn.fetchval("SELECT version FROM users_directory")
            return None if v is None else int(v)

        return self._run(work)

    def read(self) -> Document | None:
        async def work(conn: asyncpg.Connection) -> Document | None:
            row = await conn.fetchrow("SELECT version, document FROM users_directory")
            return None if row is None else Document(int(row["version"]), row["document"])

        return self._run(work)

    def update(self, change: Callable[[Document | None], str | None]) -> tuple[Document | None, bool]:
        async def work(conn: asyncpg.Connection) -> tuple[Document | None, bool]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)  # (no row yet: two first writers)
                row = await conn.fetchrow("SELECT version, document FROM users_directory FOR UPDATE")
                cur = None if row is None else Document(int(row["version"]), row["document"])
                text = change(cur)
                if text is None:
                    return cur, False
                new = Document(1 if cur is None else cur.version + 1, text)
                await conn.execute(
                    "INSERT INTO users_directory(one, version, document, changed) VALUES (true, $1, $2, now()) "
                    "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version, document = EXCLUDED.document, "
                    "changed = EXCLUDED.changed", new.version, new.text)
                return new, True

        return self._run(work)
