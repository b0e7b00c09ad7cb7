"""Run-time state, delivery queues and OSNs, and the availability ledger on PostgreSQL.

:class:`PgRuntimeState` (:class:`msc.mnemonics.state.RuntimeState`), :class:`PgOutbox`
(:class:`msc.routing.outbox.OutboxBackend`) and :class:`PgLedger`
(:class:`msc.ops.availability.LedgerBackend`): the same tables and rules as their SQLite
classes in ``state.db``, in the journal's database. Blocking calls (the switch makes them from
worker threads, the ``msc`` command directly); each handle runs asyncpg on its own loop thread
(:class:`msc.storage.postgres.Blocking`) with a small pool, so calls from several threads
proceed at once and the database serialises what must be atomic (``SELECT … FOR UPDATE``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from msc.mnemonics.lockout import Attempts
from msc.mnemonics.state import OpenSession, UserRow
from msc.ops.availability import Run
from msc.reasons import explain
from msc.routing.outbox import Stored
from msc.storage.errors import StorageUnavailable
from msc.storage.postgres import DB_ERRORS, Blocking, PgSettings, create_schema, safe_dsn

T = TypeVar("T")

SCHEMA_LOCK = 0x6D73_6303
SCHEMA = """
CREATE TABLE IF NOT EXISTS user_state(
    id text PRIMARY KEY,
    failures jsonb NOT NULL DEFAULT '[]',  -- times of consecutive failed logons
    locked_at double precision,
    last_logon double precision,
    last_use double precision,
    last_otp_step bigint
);
CREATE TABLE IF NOT EXISTS auth_counts(
    path text NOT NULL,
    what text NOT NULL,
    n bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (path, what)
);
CREATE TABLE IF NOT EXISTS station_state(
    mnemonic text PRIMARY KEY,
    disabled boolean NOT NULL DEFAULT false,
    changed_at double precision,
    last_use double precision
);
CREATE TABLE IF NOT EXISTS outbox(
    endpoint text NOT NULL,
    osn bigint NOT NULL,
    seq bigint NOT NULL,
    mnemonic text NOT NULL,
    txn text,
    created double precision NOT NULL,
    PRIMARY KEY (endpoint, osn)
);
CREATE TABLE IF NOT EXISTS open_sessions(
    seq bigint PRIMARY KEY,
    kind text NOT NULL,
    peer text, mnemonic text NOT NULL, pool text, "user" text, taf text,
    opened double precision NOT NULL,
    closing_after bigint
);
CREATE TABLE IF NOT EXISTS osn(endpoint text PRIMARY KEY, last bigint NOT NULL);
CREATE TABLE IF NOT EXISTS applied(k text PRIMARY KEY, seq bigint NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    id bigserial PRIMARY KEY,
    started double precision NOT NULL,
    heartbeat double precision NOT NULL,
    stopped double precision,
    pid integer
);
"""


#: How long closing a handle waits for calls still running before it cuts their connections (s).
CLOSE_TIMEOUT_S = 5.0


class _Handle:
    """A pool on a private loop thread; the schema made on first use.

    Every call is bounded (:data:`msc.storage.postgres.CALL_TIMEOUT_S`) and any failure of the
    database — unreachable, restarting, a connection ended under the call, no answer in time —
    raises :class:`~msc.storage.errors.StorageUnavailable` naming what (``what``), where and
    why; the next call connects again (the pool replaces a broken connection by itself)."""

    what = "PostgreSQL storage"

    def __init__(self, pg: PgSettings, name: str, max_size: int = 4) -> None:
        self._where = safe_dsn(pg.dsn)
        self._run = Blocking(name)
        try:
            self._pool: asyncpg.Pool = self._run.run(self._open(pg, max_size))
        except BaseException:
            self._run.close()
            raise

    @staticmethod
    async def _open(pg: PgSettings, max_size: int) -> asyncpg.Pool:
        pool = await pg.pool(max_size)
        async with pool.acquire() as conn:
            await create_schema(conn, SCHEMA, SCHEMA_LOCK)
        return pool

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` on this handle's loop, bounded; a database failure as StorageUnavailable."""
        try:
            return self._run.run(coro)
        except DB_ERRORS as exc:
            raise StorageUnavailable(f"{self.what} on PostgreSQL ({self._where}): "
                                     f"{explain(exc)}") from None

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return self.call(self._pool.fetch(sql, *args))

    def execute(self, sql: str, *args: Any) -> str:
        status: str = self.call(self._pool.execute(sql, *args))
        return status

    def abort(self, why: str) -> None:
        """Give every caller waiting on the database back now (StorageUnavailable) and cut the
        pool's connections, without waiting for anything: for a node that stepped down and must
        leave (msc.server.main). Later calls are refused; :meth:`close` still closes the loop."""
        self._run.abort(why)
        if not self._run.loop.is_closed():
            self._run.loop.call_soon_threadsafe(self._pool.terminate)

    def close(self) -> None:
        """Close the pool — waiting at most CLOSE_TIMEOUT_S for calls still running, then
        cutting their connections (asyncpg's close waits for every connection to come back) —
        and the loop."""
        if not self._run.loop.is_closed():
            try:
                self._run.run(self._pool.close(), timeout=CLOSE_TIMEOUT_S)
            except Exception:
                if not self._run.loop.is_closed():
                    self._run.loop.call_soon_threadsafe(self._pool.terminate)
            finally:
                self._run.close()


class PgRuntimeState(_Handle):
    """The run-time state of users and stations (:class:`~msc.mnemonics.state.RuntimeState`)."""

    what = "run-time state"

    def __init__(self, pg: PgSettings) -> None:
        super().__init__(pg, "msc-pg-state")

    # -- users ----------------------------------------------------------------------------

    def users(self) -> dict[str, UserRow]:
        rows = self.fetch("SELECT id, failures, locked_at, last_logon, last_use, last_otp_step FROM user_state")
        return {r[0]: UserRow(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows}

    def user(self, uid: str) -> UserRow | None:
        r = self.fetch("SELECT id, failures, locked_at, last_logon, last_use, last_otp_step FROM user_state "
                       "WHERE id = $1", uid)
        return UserRow(r[0][0], json.loads(r[0][1]), *r[0][2:]) if r else None

    def update_attempts(self, uid: str, step: Callable[[Attempts], tuple[Attempts, T]], *,
                        logon_at: float | None = None, via: str | None = None,
                        failed: bool | Callable[[T], bool] = False, account: bool = True) -> T:
        """As :meth:`msc.mnemonics.state.StateStore.update_attempts`: the row is locked
        (``SELECT … FOR UPDATE``) for the read-modify-write, in one transaction with the counts."""

        async def go() -> T:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO user_state(id) VALUES ($1) ON CONFLICT DO NOTHING", uid)
                failures, locked_at = await conn.fetchrow(
                    "SELECT failures, locked_at FROM user_state WHERE id = $1 FOR UPDATE", uid)
                new, out = step(Attempts(tuple(json.loads(failures)), locked_at))
                await conn.execute("UPDATE user_state SET failures = $2::jsonb, locked_at = $3 WHERE id = $1",
                                   uid, json.dumps(list(new.failures)), new.locked_at)
                if logon_at is not None and out is True:
                    await conn.execute("UPDATE user_state SET last_logon = $2, last_use = $2 WHERE id = $1",
                                       uid, logon_at)
                if via is not None:
                    if failed(out) if callable(failed) else failed:
                        await self._count(conn, via, "failure")
                    if account and locked_at is None and new.locked_at is not None:
                        await self._count(conn, via, "lockout")
                return out

        return self.call(go())

    @staticmethod
    async def _count(conn: asyncpg.Connection, via: str, what: str) -> None:
        await conn.execute("INSERT INTO auth_counts(path, what, n) VALUES ($1, $2, 1) "
                           "ON CONFLICT (path, what) DO UPDATE SET n = auth_counts.n + 1", via, what)

    def auth_counts(self) -> dict[tuple[str, str], int]:
        return {(r[0], r[1]): r[2] for r in self.fetch("SELECT path, what, n FROM auth_counts")}

    def claim_otp_step(self, uid: str, step: int) -> bool:
        """Use TOTP step ``step`` if no step at or after it was used: one conditional UPDATE
        (atomic across processes and nodes)."""

        async def go() -> bool:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO user_state(id) VALUES ($1) ON CONFLICT DO NOTHING", uid)
                status: str = await conn.execute("UPDATE user_state SET last_otp_step = $2 WHERE id = $1 "
                                                 "AND (last_otp_step IS NULL OR last_otp_step < $2)", uid, step)
                return status == "UPDATE 1"

        return self.call(go())

    def locked_users(self) -> set[str]:
        return {r[0] for r in self.fetch("SELECT id FROM user_state WHERE locked_at IS NOT NULL")}

    def unlock(self, uid: str) -> bool:
        was: list[bool] = []

        def step(a: Attempts) -> tuple[Attempts, bool]:
            was.append(a.locked)
            return Attempts(), True

        self.update_attempts(uid, step)
        return was[0]

    def used(self, uids: dict[str, float]) -> None:
        if uids:
            self.execute("INSERT INTO user_state(id, last_use) SELECT * FROM unnest($1::text[], $2::float8[]) "
                         "ON CONFLICT (id) DO UPDATE SET last_use = GREATEST(COALESCE(user_state.last_use, 0), "
                         "excluded.last_use)", list(uids), list(uids.values()))

    # -- stations -------------------------------------------------------------------------

    def disabled_stations(self) -> set[str]:
        return {r[0] for r in self.fetch("SELECT mnemonic FROM station_state WHERE disabled")}

    def set_station(self, mnemonic: str, disabled: bool) -> None:
        self.execute("INSERT INTO station_state(mnemonic, disabled, changed_at) VALUES ($1, $2, $3) "
                     "ON CONFLICT (mnemonic) DO UPDATE SET disabled = excluded.disabled, changed_at = excluded.changed_at",
                     mnemonic, disabled, time.time())

    def station_used(self, mnemonics: dict[str, float]) -> None:
        if mnemonics:
            self.execute("INSERT INTO station_state(mnemonic, last_use) SELECT * FROM unnest($1::text[], $2::float8[]) "
                         "ON CONFLICT (mnemonic) DO UPDATE SET last_use = "
                         "GREATEST(COALESCE(station_state.last_use, 0), excluded.last_use)",
                         list(mnemonics), list(mnemonics.values()))

    def station_last_use(self) -> dict[str, float | None]:
        return {r[0]: r[1] for r in self.fetch("SELECT mnemonic, last_use FROM station_state")}

    # -- open sessions --------------------------------------------------------------------

    def sessions_changed(self, opened: Sequence[OpenSession] = (), ended: Sequence[int] = ()) -> None:
        if not opened and not ended:
            return
        rows = [(r.seq, r.kind, r.peer, r.mnemonic, r.pool, r.user, r.taf, r.opened, r.closing_after) for r in opened]

        async def go() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                if rows:
                    await conn.executemany("INSERT INTO open_sessions VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                                           "ON CONFLICT (seq) DO NOTHING", rows)
                if ended:
                    await conn.execute("DELETE FROM open_sessions WHERE seq = ANY($1::bigint[])", list(ended))

        self.call(go())

    def open_sessions(self) -> list[OpenSession]:
        return [OpenSession(*r) for r in self.fetch(
            'SELECT seq, kind, peer, mnemonic, pool, "user", taf, opened, closing_after FROM open_sessions ORDER BY seq')]

    def sessions_closing(self, seqs: Sequence[int], after: int) -> None:
        if seqs:
            self.execute("UPDATE open_sessions SET closing_after = $1 WHERE seq = ANY($2::bigint[])", after, list(seqs))


class PgOutbox(_Handle):
    """Delivery queues and OSNs (:class:`~msc.routing.outbox.OutboxBackend`)."""

    what = "delivery queues"

    def __init__(self, pg: PgSettings) -> None:
        super().__init__(pg, "msc-pg-outbox", max_size=2)

    def load(self) -> tuple[list[Stored], dict[str, int], int]:
        async def go() -> tuple[list[Stored], dict[str, int], int]:
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                rows = [Stored(*r) for r in await conn.fetch(
                    "SELECT endpoint, osn, seq, mnemonic, txn, created FROM outbox ORDER BY endpoint, osn")]
                osns = {r[0]: r[1] for r in await conn.fetch("SELECT endpoint, last FROM osn")}
                applied = await conn.fetchval("SELECT seq FROM applied WHERE k = 'journal'")
            return rows, osns, applied or 0

        return self.call(go())

    def apply(self, adds: Iterable[Stored], removes: Iterable[tuple[str, int]], osns: dict[str, int],
              applied: int) -> None:
        adds, removes = list(adds), list(removes)

        async def go() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                if adds:
                    await conn.executemany(
                        "INSERT INTO outbox VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (endpoint, osn) DO UPDATE SET "
                        "seq = excluded.seq, mnemonic = excluded.mnemonic, txn = excluded.txn, created = excluded.created",
                        [(a.endpoint, a.osn, a.seq, a.mnemonic, a.txn, a.created) for a in adds])
                if removes:
                    await conn.executemany("DELETE FROM outbox WHERE endpoint = $1 AND osn = $2", removes)
                if osns:
                    await conn.execute(
                        "INSERT INTO osn(endpoint, last) SELECT * FROM unnest($1::text[], $2::bigint[]) "
                        "ON CONFLICT (endpoint) DO UPDATE SET last = GREATEST(osn.last, excluded.last)",
                        list(osns), list(osns.values()))
                await conn.execute("INSERT INTO applied(k, seq) VALUES ('journal', $1) "
                                   "ON CONFLICT (k) DO UPDATE SET seq = excluded.seq", applied)

        self.call(go())


class PgLedger(_Handle):
    """The availability ledger (:class:`~msc.ops.availability.LedgerBackend`)."""

    what = "availability ledger"

    def __init__(self, pg: PgSettings) -> None:
        super().__init__(pg, "msc-pg-ledger", max_size=1)
        self.run_id: int | None = None

    def start(self, now: float) -> int:
        rid = self.call(self._pool.fetchval(
            "INSERT INTO runs(started, heartbeat, pid) VALUES ($1, $1, $2) RETURNING id", now, os.getpid()))
        self.run_id = int(rid)
        return self.run_id

    def heartbeat(self, now: float) -> None:
        self.execute("UPDATE runs SET heartbeat = $1 WHERE id = $2 AND stopped IS NULL", now, self.run_id)

    def stop(self, now: float) -> None:
        self.execute("UPDATE runs SET heartbeat = $1, stopped = $1 WHERE id = $2 AND stopped IS NULL", now, self.run_id)

    def runs(self) -> list[Run]:
        return [Run(*r) for r in self.fetch("SELECT id, started, heartbeat, stopped FROM runs ORDER BY started")]
