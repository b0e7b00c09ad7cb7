"""The key ring in PostgreSQL (issue 16): one key ring shared by every node of a pair.

With SQLite the key ring is a file (``data_dir/keys/keyring.json``). On PostgreSQL it lives in
``[storage]``'s database beside the journal, so a month's key made by one node is the key every
node reads — a standby that takes over finds every month the active node wrote (before, each node
kept its own file and a failover died on "the key of 2026-11 was destroyed").

What the database holds is only what the file held: entries **wrapped** (AES-256-GCM) by the
master key. The master key (the key-encryption key, ``journal.key_file``) stays a file on each
machine, copied once at set-up; it never enters the database, so the tables alone — a dump, a base
backup, the WAL — open nothing. :mod:`msc.keyring` does all the cryptography; this module stores
the document as :class:`msc.keyring.KeyStore` describes::

    keyring_meta       one row: version, master (the id of the master key every entry is wrapped
                       by), users and signing (their wrapped entries, JSON as in keyring.json)
    keyring_periods    period → entry (JSON): {"master", "wrapped", "created"}, or after the
                       retention purge {"destroyed"} (the wrapped secret overwritten)
    keyring_journals   journal id → when it was first opened with this key ring

A month's key is created race-free between nodes: ``INSERT … ON CONFLICT DO NOTHING`` then the
row is read back, so both nodes use the winner's secret. Creating a month holds ``keyring_meta``
``FOR SHARE`` and ``msc keys rotate`` (and the import of a node's old file) ``FOR UPDATE``, so
a month is never wrapped by a master key the rotation has just replaced.

Blocking, like the other stores (:class:`msc.storage.postgres.Blocking`): the journal asks for a
month's key from a worker thread, the ``msc`` command directly. Database errors surface as
:class:`KeyRingUnavailable` (a :class:`msc.keyring.KeyError_`), never as a hang: each statement
has the client's command timeout.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from msc.keyring import KEYRING_VERSION, KeyError_
from msc.reasons import explain
from msc.storage.postgres import DB_ERRORS, OneConnection, PgSettings, safe_dsn

T = TypeVar("T")

SCHEMA_LOCK = 0x6D73_6305

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyring_meta(
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL,
    master text NOT NULL,
    users text NOT NULL,
    signing text NOT NULL
);
CREATE TABLE IF NOT EXISTS keyring_periods(period text PRIMARY KEY, entry text NOT NULL);
CREATE TABLE IF NOT EXISTS keyring_journals(journal_id text PRIMARY KEY, first_opened text NOT NULL);
"""


class KeyRingUnavailable(KeyError_):
    """The database holding the key ring cannot be reached (or failed the statement)."""


class PgKeyStore:
    """:class:`msc.keyring.KeyStore` on PostgreSQL (see the module docstring). One connection,
    opened at the first use and again after it fails; :meth:`close` ends it."""

    def __init__(self, pg: PgSettings) -> None:
        self.pg = pg
        self._db = OneConnection(pg, "msc-keyring", SCHEMA, SCHEMA_LOCK)
        self._lock = threading.RLock()  # one statement sequence at a time on the one connection

    def describe(self) -> str:
        return f"PostgreSQL ({safe_dsn(self.pg.dsn)})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def abort(self, why: str) -> None:
        """Give a call waiting on the database back now (:class:`KeyRingUnavailable`) and cut the
        connection, without waiting for anything: for a node that stepped down and must leave
        (``Switch.abandon_storage``) while its journal's look at the key ring (``keys_ahead``, in
        a worker thread the teardown joins) waits on a frozen database. Later calls are refused;
        :meth:`close` still closes the loop."""
        self._db.abort(why)

    def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        with self._lock:
            return self._run_unlocked(work)

    def _run_unlocked(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        try:
            return self._db.run(work)
        except DB_ERRORS as exc:
            raise KeyRingUnavailable(f"the key ring in {self.describe()}: {explain(exc)}") from None

    # -- KeyStore ------------------------------------------------------------------------

    def exists(self) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM keyring_meta"))

        return self._run(work)

    def read(self, *, consistent: bool = False) -> dict[str, Any]:
        """One snapshot (REPEATABLE READ): always consistent."""
        async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await _read(conn)

        doc = self._run(work)
        if doc is None:
            raise KeyError_(f"no key ring in {self.describe()}: run `msc keys init` on one node")
        return doc

    def create(self, doc: dict[str, Any]) -> None:
        async def work(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)  # two `msc keys init` at once
                if await conn.fetchval("SELECT count(*) FROM keyring_meta"):
                    return False
                await _write(conn, None, doc)
                return True

        if not self._run(work):
            raise KeyError_(f"{self.describe()} already holds a key ring: on another node copy only the master key "
                            "file (journal.key_file) and users.toml")

    def period_entry(self, period: str, make: Callable[[str], dict[str, str]] | None) -> dict[str, Any] | None:
        async def work(conn: asyncpg.Connection) -> str | None:
            # Most calls find the month: one plain read, no row lock (a lock would make the
            # commit of a read wait for the WAL flush).
            found: str | None = await conn.fetchval("SELECT entry FROM keyring_periods WHERE period = $1", period)
            if found is not None or make is None:
                return found
            async with conn.transaction():
                master = await conn.fetchval("SELECT master FROM keyring_meta FOR SHARE")
                if master is None:
                    raise KeyError_(f"no key ring in {self.describe()}: run `msc keys init` on one node")
                entry: str | None = await conn.fetchval("SELECT entry FROM keyring_periods WHERE period = $1", period)
                if entry is None and make is not None:
                    # Another node may insert the same month now: the first commit wins, the other's
                    # insert does nothing, and both read back the winner's entry.
                    await conn.execute("INSERT INTO keyring_periods(period, entry) VALUES ($1, $2) "
                                       "ON CONFLICT (period) DO NOTHING", period, json.dumps(make(master)))
                    entry = await conn.fetchval("SELECT entry FROM keyring_periods WHERE period = $1", period)
                return entry

        got = self._run(work)
        return None if got is None else dict(json.loads(got))

    def destroy_period(self, period: str, tombstone: dict[str, str]) -> None:
        """The month's row keeps only the tombstone (so the month is never made again); the row
        version that held the wrapped secret is a dead tuple until VACUUM, run here at once
        (best effort: autovacuum gets it otherwise). The WAL and base backups still hold the
        wrapped entry — useless without the master key (JOURNAL.md "Retention")."""
        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO keyring_periods(period, entry) VALUES ($1, $2) "
                               "ON CONFLICT (period) DO UPDATE SET entry = EXCLUDED.entry", period, json.dumps(tombstone))

        self._run(work)

        async def vacuum(conn: asyncpg.Connection) -> None:
            await conn.execute("VACUUM keyring_periods")

        with contextlib.suppress(KeyError_):  # the destruction is committed; a failed VACUUM only waits for autovacuum
            self._run(vacuum)

    def register_journal(self, journal_id: str, when: str) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO keyring_journals(journal_id, first_opened) VALUES ($1, $2) "
                               "ON CONFLICT (journal_id) DO NOTHING", journal_id, when)

        self._run(work)

    def rewrite(self, change: Callable[[dict[str, Any] | None], dict[str, Any]],
                then: Callable[[], None] | None = None) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                # Everything else waits: period_entry holds keyring_meta FOR SHARE, a second
                # rewrite (or create) FOR UPDATE; with no key ring yet, an advisory lock.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await conn.execute("SELECT 1 FROM keyring_meta FOR UPDATE")
                old = await _read(conn)
                before = None if old is None else json.loads(json.dumps(old))
                await _write(conn, before, change(old))

        with self._lock:  # this process's other key ring calls wait for `then` (another node cannot anyway)
            self._run_unlocked(work)
            if then is not None:
                then()


async def _read(conn: asyncpg.Connection) -> dict[str, Any] | None:
    meta = await conn.fetchrow("SELECT version, master, users, signing FROM keyring_meta")
    if meta is None:
        return None
    periods = {r["period"]: json.loads(r["entry"]) for r in await conn.fetch("SELECT period, entry FROM keyring_periods")}
    journals = {r["journal_id"]: r["first_opened"]
                for r in await conn.fetch("SELECT journal_id, first_opened FROM keyring_journals")}
    return {"version": meta["version"], "master": meta["master"], "users": json.loads(meta["users"]),
            "signing": json.loads(meta["signing"]), "periods": periods, "journals": journals}


async def _write(conn: asyncpg.Connection, old: dict[str, Any] | None, doc: dict[str, Any]) -> None:
    """Store ``doc`` over ``old`` (None: nothing yet), inside the caller's transaction: only the
    rows that changed are written."""
    await conn.execute(
        "INSERT INTO keyring_meta(one, version, master, users, signing) VALUES (true, $1, $2, $3, $4) "
        "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version, master = EXCLUDED.master, "
        "users = EXCLUDED.users, signing = EXCLUDED.signing",
        int(doc.get("version", KEYRING_VERSION)), doc["master"], json.dumps(doc["users"]), json.dumps(doc["signing"]))
    before = {} if old is None else old["periods"]
    changed = [(p, json.dumps(e)) for p, e in doc["periods"].items() if before.get(p) != e]
    if changed:
        await conn.executemany("INSERT INTO keyring_periods(period, entry) VALUES ($1, $2) "
                               "ON CONFLICT (period) DO UPDATE SET entry = EXCLUDED.entry", changed)
    journals = [(j, w) for j, w in doc.get("journals", {}).items() if j not in (old or {}).get("journals", {})]
    if journals:
        await conn.executemany("INSERT INTO keyring_journals(journal_id, first_opened) VALUES ($1, $2) "
                               "ON CONFLICT (journal_id) DO NOTHING", journals)
