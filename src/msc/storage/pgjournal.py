"""The journal on PostgreSQL: :class:`PgWriter` (a :class:`~msc.journal.interfaces.JournalWriter`)
and :class:`PgReader` (a :class:`~msc.journal.interfaces.JournalReader`).

Layout (ARCHITECTURE.md "The journal on PostgreSQL")::

    journal_records   PARTITION BY LIST (period): one partition per month, journal_records_pYYYY_MM;
                      the metadata columns (msc.journal.records.META_COLUMNS), the sealed bytes
                      and the Merkle leaf hash; primary key (seq, period)
    journal_tokens    PARTITION BY LIST (period), the same months: (token, seq) — the blind index
    journal_periods   the months that have partitions
    journal_checkpoints, journal_purged (with the purged month's leaf hashes), journal_kept,
    journal_gaps, journal_info (the journal's identity)

Records are sealed by the same code as for SQLite (:meth:`msc.journal.journal.Journal` seals;
the writer stores :class:`~msc.journal.schema.Row` as it gets it) and the leaf hash and the
Merkle frontier are the same functions (:mod:`msc.journal.merkle`), so a checkpoint signed here
verifies exactly as one signed by the SQLite writer. UPDATE and DELETE of records and
checkpoints are refused by triggers; retention drops a month's partitions (``DROP TABLE``).

Group commit: one :meth:`PgWriter.commit` is one transaction, however many records and months
(one ``INSERT … SELECT FROM unnest(…)`` for the records, one for the tokens). Fencing (issue 16
item 2): an optional ``fence(conn)`` coroutine runs first inside that transaction (and the
checkpoint's); if it raises, nothing of the batch is written and the caller gets
:class:`~msc.journal.records.JournalError` (E501, fail closed).

One writer per journal: a session advisory lock on the writer's connection (a second writer
gets :class:`~msc.journal.writer.JournalBusy`; a writer whose connection died loses it, and
takes it again before writing anything more).

Why one module of ~620 lines (issue 15: none over ~500 without a reason): the writer and the reader
share the table layout above and its SQL; they are the PostgreSQL half of one contract suite
(tests/contract), read side by side with the SQLite modules they mirror.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from msc.journal.bundle_verifier import checkpoint_message
from msc.journal.interfaces import TXN_SUMMARY_SQL, TxnSummary
from msc.journal.merkle import Frontier
from msc.journal.records import META_COLUMNS, JournalError, JournalFenced, JournalUnavailable
from msc.journal.schema import PURGE_CODE, TIMELINE_GAP_S, Checkpoint, Row, StoredRecord
from msc.journal.writer import JournalBusy
from msc.reasons import explain
from msc.storage.postgres import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S, DB_ERRORS, Blocking, PgSettings, create_schema, reason

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: ``fence(conn)``: called inside every transaction that makes something durable, before it
#: writes; raising aborts it (the lease/epoch check of issue 16 item 2 goes here).
Fence = Callable[[asyncpg.Connection], Awaitable[None]]

GAP_US = TIMELINE_GAP_S * 1_000_000
PERIOD_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])\Z")
#: Advisory lock keys (pg_advisory_lock's bigint space; arbitrary, fixed: "msc" + purpose).
WRITER_LOCK = 0x6D73_6301
#: How long a node holding the lease tries to take the writer lock from a session it ended (s).
EVICT_S = 10.0
#: A commit (or checkpoint) transaction not answered within this long is cut: its senders get E501 (s).
WRITE_TIMEOUT_S = 15.0
#: A node of a pair's writer session left idle inside a transaction this long is ended by the server (s).
IDLE_IN_TRANSACTION_S = 5.0
SCHEMA_LOCK = 0x6D73_6302
#: Records fetched per round trip when a reader walks a month.
PAGE = 2000
#: Leaf hashes per row of journal_purged_leaves (2 MiB).
LEAF_CHUNK = 65536

# Column types: every metadata field of the sealed record has one (a new field breaks here,
# at import, not silently at the first commit).
_TYPES = {"seq": "bigint", "ts": "bigint", "osn": "bigint"}
_NOT_NULL = {"seq", "ts", "kind", "direction"}
COLS = tuple(META_COLUMNS)
assert COLS[:2] == ("seq", "ts"), COLS
_Q = {c: f'"{c}"' for c in COLS}  # "user" is a reserved word

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS journal_records(
    {', '.join(f'{_Q[c]} {_TYPES.get(c, "text")}{" NOT NULL" if c in _NOT_NULL else ""}' for c in COLS)},
    blob bytea NOT NULL,
    leaf bytea NOT NULL,
    period text NOT NULL,
    PRIMARY KEY (seq, period)
) PARTITION BY LIST (period);
CREATE TABLE IF NOT EXISTS journal_tokens(
    token bytea NOT NULL,
    seq bigint NOT NULL,
    period text NOT NULL,
    PRIMARY KEY (token, seq, period)
) PARTITION BY LIST (period);
-- Search (msc.journal.search): what the SQLite backend's batch-built YYYY-MM.idx.db indexes.
CREATE INDEX IF NOT EXISTS journal_records_ts ON journal_records (ts);
CREATE INDEX IF NOT EXISTS journal_records_user ON journal_records ("user", seq);
CREATE INDEX IF NOT EXISTS journal_records_mnemonic ON journal_records (mnemonic, seq);
CREATE INDEX IF NOT EXISTS journal_records_txn ON journal_records (txn);
CREATE TABLE IF NOT EXISTS journal_periods(period text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS journal_checkpoints(
    tree_size bigint PRIMARY KEY,
    root bytea NOT NULL,
    ts bigint NOT NULL,
    signature bytea NOT NULL,
    frontier bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_purged(
    period text PRIMARY KEY,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    purged_at bigint NOT NULL,
    purge_seq bigint
);
-- The leaf hashes of a purged month, 32 bytes each in sequence order, in chunks of LEAF_CHUNK
-- (a month may hold more than one bytea value can): the tree stays verifiable without it.
CREATE TABLE IF NOT EXISTS journal_purged_leaves(
    period text NOT NULL,
    start integer NOT NULL,    -- index in the month of the chunk's first leaf
    leaves bytea NOT NULL,
    PRIMARY KEY (period, start)
);
ALTER TABLE journal_purged_leaves ALTER COLUMN leaves SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS journal_kept(seq bigint PRIMARY KEY, blob bytea NOT NULL);
CREATE TABLE IF NOT EXISTS journal_gaps(seq bigint PRIMARY KEY, from_ts bigint NOT NULL, to_ts bigint NOT NULL);
CREATE TABLE IF NOT EXISTS journal_info(k text PRIMARY KEY, v text NOT NULL);
CREATE OR REPLACE FUNCTION msc_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;
CREATE OR REPLACE TRIGGER journal_records_append_only BEFORE UPDATE OR DELETE ON journal_records
    FOR EACH ROW EXECUTE FUNCTION msc_append_only();
CREATE OR REPLACE TRIGGER journal_checkpoints_append_only BEFORE UPDATE OR DELETE ON journal_checkpoints
    FOR EACH ROW EXECUTE FUNCTION msc_append_only();
"""

_INSERT_RECORDS = (
    f"INSERT INTO journal_records(period, {', '.join(_Q[c] for c in COLS)}, blob, leaf) "
    f"SELECT * FROM unnest($1::text[], "
    + ", ".join(f"${i + 2}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(COLS))
    + f", ${len(COLS) + 2}::bytea[], ${len(COLS) + 3}::bytea[])")
#: Records and their tokens in one statement (one round trip instead of two): the records'
#: INSERT is a data-modifying CTE, which PostgreSQL always runs to completion.
_N = len(COLS) + 3
_INSERT_BATCH = (f"WITH r AS ({_INSERT_RECORDS}) "
                 f"INSERT INTO journal_tokens(period, seq, token) SELECT * FROM unnest(${_N + 1}::text[], "
                 f"${_N + 2}::bigint[], ${_N + 3}::bytea[]) ON CONFLICT DO NOTHING")
_LIVE = "period NOT IN (SELECT period FROM journal_purged)"


def leaf_of(blob: bytes) -> bytes:
    """RFC 6962 leaf hash, as :class:`msc.journal.writer.Writer` computes it."""
    return hashlib.sha256(b"\x00" + blob).digest()


def partition(table: str, period: str) -> str:
    if not PERIOD_RE.match(period):
        raise JournalError(f"not a month: {period!r}")
    return f"{table}_p{period.replace('-', '_')}"


async def last_position(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(f"SELECT seq, ts FROM journal_records WHERE {_LIVE} ORDER BY seq DESC LIMIT 1")
    if row:
        return row[0], row[1]
    last = await conn.fetchval("SELECT max(last_seq) FROM journal_purged")
    return (last, 0) if last else (0, 0)


async def rebuild_frontier(conn: asyncpg.Connection, last_seq: int) -> tuple[Frontier, Checkpoint | None]:
    """The newest checkpoint's frontier (of a tree no larger than the journal), then the leaves
    after it: from purged months' kept leaves, then from the records (as msc.journal.recovery)."""
    r = await conn.fetchrow("SELECT tree_size, root, ts, signature, frontier FROM journal_checkpoints "
                            "WHERE tree_size <= $1 ORDER BY tree_size DESC LIMIT 1", last_seq)
    cp = Checkpoint(*r) if r else None
    f = Frontier.from_bytes(cp.tree_size, cp.frontier) if cp else Frontier()
    for period, first, last in await conn.fetch("SELECT period, first_seq, last_seq FROM journal_purged "
                                                "WHERE last_seq > $1 ORDER BY first_seq", f.size):
        for start, leaves in await conn.fetch("SELECT start, leaves FROM journal_purged_leaves WHERE period = $1 "
                                              "AND start + length(leaves) / 32 > $2 ORDER BY start",
                                              period, f.size + 1 - first):
            for i in range(len(leaves) // 32):
                if first + start + i > f.size:
                    f.append(leaves[i * 32 : i * 32 + 32])
        if f.size != last:
            raise JournalError(f"kept leaf hashes of purged month {period} are missing or incomplete")
    while True:
        page = await conn.fetch(f"SELECT leaf FROM journal_records WHERE seq > $1 AND {_LIVE} "
                                "ORDER BY seq LIMIT $2", f.size, PAGE * 10)
        for (leaf,) in page:
            f.append(leaf)
        if len(page) < PAGE * 10:
            return f, cp


class PgWriter:
    """The journal's single writer on PostgreSQL (:class:`~msc.journal.interfaces.JournalWriter`).

    ``sign``: the journal's Ed25519 private key's ``sign`` (checkpoints). ``fence``: see
    :data:`Fence`. Use from one event loop (the switch's); not thread-safe.
    """

    def __init__(self, pg: PgSettings, sign: Callable[[bytes], bytes], *, fence: Fence | None = None) -> None:
        self.pg = pg
        self._sign = sign
        self._fence = fence
        self._conn: asyncpg.Connection | None = None
        self._known: set[str] = set()
        self.frontier = Frontier()
        self.last_seq = 0
        self.last_ts = 0
        self.last_checkpoint: Checkpoint | None = None
        self.journal_id: str | None = None
        self._needs_reopen = False
        #: One operation at a time on the one connection: the journal's group commit, its
        #: checkpoint timer and a retention purge are separate tasks (the SQLite writers
        #: serialise them in their thread or process; asyncpg refuses a second operation on a
        #: connection with "another operation is in progress").
        self._lock = asyncio.Lock()

    @property
    def checkpoint_size(self) -> int:
        return self.last_checkpoint.tree_size if self.last_checkpoint else 0

    # -- opening and recovery ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._open()
        except JournalError:
            await self._drop_connection()
            raise
        except DB_ERRORS as exc:
            await self._drop_connection()
            raise JournalUnavailable(f"journal database: {explain(exc, bound_s=COMMAND_TIMEOUT_S)}") from None

    async def _open(self) -> None:
        conn = self._conn = await self.pg.connect()
        if self._fence is not None:
            # A node paused inside a commit transaction (after its fence share-locked the lease row)
            # would keep the other node from ever acquiring the lease: the server ends such a session.
            await conn.execute(f"SET idle_in_transaction_session_timeout = '{int(IDLE_IN_TRANSACTION_S * 1000)}ms'")
        await self._take_writer_lock(conn)
        await create_schema(conn, SCHEMA, SCHEMA_LOCK)
        await conn.execute("INSERT INTO journal_info(k, v) VALUES ('id', $1) ON CONFLICT DO NOTHING",
                           __import__("secrets").token_hex(8))
        self.journal_id = await conn.fetchval("SELECT v FROM journal_info WHERE k = 'id'")
        for (period,) in await conn.fetch("SELECT period FROM journal_purged"):  # a purge that stopped
            await self._drop_partitions(period)
        self._known = {p for (p,) in await conn.fetch("SELECT period FROM journal_periods")}
        await self._reread()
        self._needs_reopen = False

    async def _take_writer_lock(self, conn: asyncpg.Connection) -> None:
        """The one-writer lock (a session advisory lock), or :class:`JournalBusy`.

        A node of a pair (a ``fence``) that holds the lease may take the lock from the writer
        that still has it: the node it replaced, paused (SIGSTOP, a long GC) or cut off with its
        connection open — the database keeps a session lock as long as the connection, so without
        this the new active node could never write. The fence first proves the lease (in a
        transaction, as for a commit); then the holder's backend is terminated
        (``pg_terminate_backend``: the same role may signal its own sessions) and the lock is
        tried again until EVICT_S. This takes nothing from a writer that could still commit: a
        node that lost the lease has every commit refused by the same fence (OPERATIONS.md
        "Running two nodes"). Without a fence (a single node) a held lock is refused as before."""
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK):
            return
        if self._fence is None:
            raise JournalBusy("the journal database is being written by another process")
        deadline = time.monotonic() + EVICT_S
        while True:
            try:
                async with conn.transaction():
                    await self._fence(conn)  # only the lease's holder may take the lock away
                    holders = await conn.fetch(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 "
                        "AND objid = $2 AND objsubid = 1 AND pid <> pg_backend_pid()",
                        WRITER_LOCK >> 32, WRITER_LOCK & 0xFFFF_FFFF)
            except DB_ERRORS:
                raise
            except Exception as exc:  # the fence refused: another node is the writer, rightly
                raise JournalBusy(f"the journal database is being written by another process and this node "
                                  f"does not hold the lease ({_reason(exc)})") from None
            for (pid,) in holders:
                await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK):
                return
            if time.monotonic() > deadline:
                raise JournalBusy(f"the journal database's writer lock was not released within {EVICT_S:g} s "
                                  "of ending the session that held it")
            await asyncio.sleep(0.05)

    async def _reread(self) -> None:
        assert self._conn is not None
        self.last_seq, self.last_ts = await last_position(self._conn)
        self.frontier, _ = await rebuild_frontier(self._conn, self.last_seq)
        r = await self._conn.fetchrow("SELECT tree_size, root, ts, signature, frontier FROM journal_checkpoints "
                                      "ORDER BY tree_size DESC LIMIT 1")
        self.last_checkpoint = Checkpoint(*r) if r else None

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except DB_ERRORS:
                conn.terminate()

    @staticmethod
    def _timed_out(watchdog: asyncio.TimerHandle) -> bool:
        """Did ``watchdog`` (a transaction's WRITE_TIMEOUT_S) fire?"""
        return watchdog.when() <= asyncio.get_running_loop().time()

    async def _after_failure(self, watchdog: asyncio.TimerHandle | None = None) -> None:
        """After a failed transaction nothing in memory can be trusted to match the database
        (the COMMIT's answer may have been lost): re-read it, reconnecting if the connection is
        gone; if even that fails, every later call reconnects first. Not after the transaction's
        watchdog cut a connection the server did not answer on: the next call reconnects."""
        self._needs_reopen = True
        if watchdog is not None and self._timed_out(watchdog):
            return
        try:
            if self._conn is not None and not self._conn.is_closed():
                await self._reread()
                self._needs_reopen = False
            else:
                await self._reopen()
        except JournalError:
            pass
        except DB_ERRORS:
            pass

    async def _reopen(self) -> None:
        await self._drop_connection()
        try:
            await self._open()
        except JournalError:
            await self._drop_connection()
            raise
        except DB_ERRORS as exc:
            await self._drop_connection()
            raise JournalUnavailable(f"journal database cannot be reopened: {_reason(exc)}") from None

    # -- appending ------------------------------------------------------------------------

    async def _ensure_partitions(self, periods: set[str]) -> None:
        """Each month's partitions exist before a transaction writes to it (created on their own:
        their DDL is not part of a batch that a fence may refuse)."""
        assert self._conn is not None
        for period in sorted(periods - self._known):
            for table in ("journal_records", "journal_tokens"):
                await self._conn.execute(f"CREATE TABLE IF NOT EXISTS {partition(table, period)} "
                                         f"PARTITION OF {table} FOR VALUES IN ('{period}')")
            await self._conn.execute("INSERT INTO journal_periods(period) VALUES ($1) ON CONFLICT DO NOTHING", period)
            self._known.add(period)

    async def _transaction(self, work: Callable[[asyncpg.Connection], Awaitable[Any]], *,
                           watchdog_s: float | None = WRITE_TIMEOUT_S, one_statement: bool = False) -> Any:
        """``work`` inside one transaction, after the fence. Any failure: re-read, JournalError.
        ``watchdog_s``: cut the connection if the transaction has not ended by then (None: a
        retention purge, whose month of leaf hashes may legitimately take longer).

        ``one_statement``: ``work`` runs a single statement, which PostgreSQL runs as a
        transaction of its own — all or nothing, and durable (flushed, and on a synchronous
        standby) when its answer comes, as a COMMIT's. Then, unless there is a fence to run
        first, no BEGIN and COMMIT are sent: one round trip per commit instead of three, each a
        wake-up of this process and of the server's backend (on a busy machine each of them may
        wait for a core; PERFORMANCE.md "Where the tail came from")."""
        if self._needs_reopen or self._conn is None or self._conn.is_closed():
            await self._reopen()
        conn = self._conn
        assert conn is not None
        # A database that stops answering (frozen, cut off: no reset) would hold the senders for
        # the statement timeout and then as long again for asyncpg's cancel request (60 s seen):
        # past WRITE_TIMEOUT_S the connection is cut, the batch fails (E501) at once, and the
        # next call reconnects — nothing waits here to reconnect to a server that does not answer.
        watchdog = (asyncio.get_running_loop().call_later(watchdog_s, conn.terminate) if watchdog_s is not None
                    else None)
        try:
            if one_statement and self._fence is None:
                return await work(conn)
            async with conn.transaction():
                if self._fence is not None:
                    try:
                        await self._fence(conn)
                    except DB_ERRORS:
                        raise
                    except Exception as exc:  # the fence refused: this node no longer holds the lease
                        raise JournalFenced(f"not written: {_reason(exc)}") from None
                return await work(conn)
        except JournalError:
            await self._after_failure(watchdog)
            raise
        except Exception as exc:
            await self._after_failure(watchdog)
            if watchdog is not None and self._timed_out(watchdog):
                raise JournalError(f"journal commit failed: no answer from the database within "
                                   f"{watchdog_s:g} s") from None
            raise JournalError(f"journal commit failed: {explain(exc)}") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def commit(self, rows: Sequence[Row], poke_indexer: bool = False) -> None:
        """One batch in one transaction (all or nothing, across months). ``poke_indexer`` is
        the SQLite backend's; PostgreSQL keeps its indexes current on every commit."""
        async with self._lock:
            await self._commit(rows)

    async def _commit(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        if self._needs_reopen or self._conn is None or self._conn.is_closed():
            await self._reopen()
        if rows[0].seq != self.last_seq + 1:
            raise JournalError(f"the batch starts at {rows[0].seq} but the journal ends at {self.last_seq}")
        for a, b in zip(rows, rows[1:], strict=False):
            if b.seq != a.seq + 1:
                raise JournalError(f"the batch is not contiguous ({a.seq} then {b.seq})")
        leaves = [leaf_of(r.blob) for r in rows]
        gap = (rows[0].seq, self.last_ts, rows[0].ts) if self.last_ts and rows[0].ts - self.last_ts > GAP_US else None
        try:
            await self._ensure_partitions({r.period for r in rows})
        except DB_ERRORS as exc:
            await self._after_failure()
            raise JournalError(f"journal commit failed: {explain(exc)}") from None
        columns: list[list[Any]] = [[r.period for r in rows]]
        columns += [[r.values[i] for r in rows] for i in range(len(COLS))]
        columns += [[r.blob for r in rows], leaves]
        tokens = [(r.period, r.seq, t) for r in rows for t in r.tokens]

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(_INSERT_BATCH, *columns, [t[0] for t in tokens], [t[1] for t in tokens],
                               [t[2] for t in tokens])
            if gap is not None:
                await conn.execute("INSERT INTO journal_gaps(seq, from_ts, to_ts) VALUES ($1, $2, $3) "
                                   "ON CONFLICT (seq) DO NOTHING", *gap)

        await self._transaction(work, one_statement=gap is None)
        for leaf in leaves:
            self.frontier.append(leaf)
        self.last_seq, self.last_ts = rows[-1].seq, rows[-1].ts

    async def leaves(self, first: int, last: int) -> dict[int, bytes]:
        """The leaf hashes the database holds for ``first..last`` (see the interface): the
        ``leaf`` column, as the writer that committed them stored it (this one, or another)."""
        async with self._lock:
            if self._needs_reopen or self._conn is None or self._conn.is_closed():
                await self._reopen()
            assert self._conn is not None
            try:
                rows = await self._conn.fetch(f"SELECT seq, leaf FROM journal_records WHERE seq BETWEEN $1 AND $2 "
                                              f"AND {_LIVE}", first, last)
            except DB_ERRORS as exc:
                await self._after_failure()
                raise JournalUnavailable(f"journal database: {explain(exc, bound_s=COMMAND_TIMEOUT_S)}") from None
            return {seq: bytes(leaf) for seq, leaf in rows}

    # -- checkpoints ----------------------------------------------------------------------

    async def checkpoint(self, name: str, ts: int) -> Checkpoint | None:
        async with self._lock:
            return await self._checkpoint(name, ts)

    async def _checkpoint(self, name: str, ts: int) -> Checkpoint | None:
        if self._needs_reopen or self._conn is None or self._conn.is_closed():
            await self._reopen()
        size = self.frontier.size
        if size == 0 or (self.last_checkpoint and self.last_checkpoint.tree_size >= size):
            return None
        root = self.frontier.root()
        cp = Checkpoint(size, root, ts, self._sign(checkpoint_message(name, size, root, ts)), self.frontier.to_bytes())

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO journal_checkpoints(tree_size, root, ts, signature, frontier) "
                               "VALUES ($1, $2, $3, $4, $5)", cp.tree_size, cp.root, cp.ts, cp.signature, cp.frontier)

        await self._transaction(work, one_statement=True)
        self.last_checkpoint = cp
        return cp

    # -- retention ------------------------------------------------------------------------

    async def purge_period(self, period: str, purge_seq: int) -> tuple[int, int] | None:
        """Keep the month's leaf hashes (and its purge records' sealed bytes), mark it purged
        by record ``purge_seq``; :meth:`delete_partition` then drops it (after its key is gone)."""
        async with self._lock:
            return await self._purge_period(period, purge_seq)

    async def _purge_period(self, period: str, purge_seq: int) -> tuple[int, int] | None:
        partition("journal_records", period)
        if self._needs_reopen or self._conn is None or self._conn.is_closed():
            await self._reopen()
        conn = self._conn
        assert conn is not None
        if period not in self._known:
            return None
        try:
            rows = await conn.fetch("SELECT seq, leaf FROM journal_records WHERE period = $1 ORDER BY seq", period)
            evidence = await conn.fetch("SELECT seq, blob FROM journal_records WHERE period = $1 AND kind = 'ADMIN' "
                                        "AND code = $2", period, PURGE_CODE)
        except DB_ERRORS as exc:
            await self._after_failure()
            raise JournalError(f"purge failed: {_reason(exc)}") from None
        if not rows:
            await self._delete_partition(period)
            return None
        first, last = rows[0][0], rows[-1][0]
        if len(rows) != last - first + 1:
            raise JournalError(f"{period} is not contiguous ({first}..{last}, {len(rows)} records): run verify")
        leaves = [(period, i, b"".join(leaf for _, leaf in rows[i : i + LEAF_CHUNK]))
                  for i in range(0, len(rows), LEAF_CHUNK)]

        async def work(conn: asyncpg.Connection) -> None:
            await conn.executemany("INSERT INTO journal_kept(seq, blob) VALUES ($1, $2) ON CONFLICT (seq) DO NOTHING",
                                   [tuple(e) for e in evidence])
            await conn.executemany("INSERT INTO journal_purged_leaves(period, start, leaves) VALUES ($1, $2, $3) "
                                   "ON CONFLICT DO NOTHING", leaves)
            await conn.execute("INSERT INTO journal_purged(period, first_seq, last_seq, purged_at, purge_seq) "
                               "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (period) DO NOTHING",
                               period, first, last, int(time.time() * 1_000_000), purge_seq)

        await self._transaction(work, watchdog_s=None)
        return first, last

    async def delete_partition(self, period: str) -> None:
        """Drop a purged month's partitions (its records and its blind index)."""
        async with self._lock:
            await self._delete_partition(period)

    async def _delete_partition(self, period: str) -> None:
        if self._needs_reopen or self._conn is None or self._conn.is_closed():
            await self._reopen()
        try:
            await self._drop_partitions(period)
        except DB_ERRORS as exc:
            await self._after_failure()
            raise JournalError(f"dropping {period} failed: {_reason(exc)}") from None

    async def _drop_partitions(self, period: str) -> None:
        assert self._conn is not None
        async with self._conn.transaction():
            for table in ("journal_tokens", "journal_records"):
                await self._conn.execute(f"DROP TABLE IF EXISTS {partition(table, period)}")
            await self._conn.execute("DELETE FROM journal_periods WHERE period = $1", period)
        self._known.discard(period)

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", WRITER_LOCK)
            except DB_ERRORS:
                pass
        await self._drop_connection()

    @property
    def connected(self) -> bool:
        """Has the writer a connection it trusts (False after a failure left it to reconnect)?"""
        return not self._needs_reopen and self._conn is not None and not self._conn.is_closed()

    async def probe(self) -> None:
        """Can the journal be written (again, after failed commits)? Reconnect — the writer lock
        taken again, where the journal ends re-read — if the connection is gone, else one round
        trip that asks whether a commit could be refused for what a connection alone does not
        show: the role's INSERT privilege on the records and their tokens, a server in recovery
        (a standby), a read-only session. Raises JournalError. Writes nothing
        (msc.journal.journal.Journal.probe). (``SELECT 1`` alone answered yes while every commit
        was refused ``permission denied``: ``/readyz`` said 200 without traffic, and flapped
        200/503 with it — a warning and an availability outage per flap: probe hB.)"""
        async with self._lock:
            if self._needs_reopen or self._conn is None or self._conn.is_closed():
                await self._reopen()
            assert self._conn is not None
            try:
                row = await self._conn.fetchrow(_WRITABLE)
            except DB_ERRORS as exc:
                await self._after_failure()
                raise JournalUnavailable(f"journal database: {explain(exc, bound_s=COMMAND_TIMEOUT_S)}") from None
            assert row is not None
            refusals = [why for ok, why in (
                (row["records"], "this role may not insert into journal_records"),
                (row["tokens"], "this role may not insert into journal_tokens"),
                (not row["standby"], "the server is a standby (in recovery)"),
                (row["read_only"] == "off", "the session is read-only (default_transaction_read_only)"),
            ) if not ok]
            if refusals:
                raise JournalError(f"journal database: {'; '.join(refusals)}")

    def abort(self) -> None:
        """Cut the connection now, without waiting for the server (a node that stepped down and
        must leave: msc.server.main). A commit under way fails (its senders are told E501, as
        for any failed commit); the server rolls back whatever it had not committed, and the
        writer lock goes with the session. Later calls would reconnect; nothing makes them."""
        conn, self._conn = self._conn, None
        self._needs_reopen = True
        if conn is not None:
            conn.terminate()


#: One round trip: could a commit of the journal be refused for a reason the connection does not
#: show (PgWriter.probe)?
_WRITABLE = ("SELECT has_table_privilege('journal_records', 'INSERT') AS records, "
             "has_table_privilege('journal_tokens', 'INSERT') AS tokens, "
             "pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS read_only")


class PgReader:
    """Read-only access to the journal on PostgreSQL (:class:`~msc.journal.interfaces.JournalReader`).
    Blocking (its own event loop thread and connection); one caller thread at a time."""

    def __init__(self, pg: PgSettings, *, opened: weakref.WeakSet[PgReader] | None = None) -> None:
        """``opened``: a set this reader joins before it connects (its storage's, for :meth:`abort`)."""
        self.pg = pg
        # Bounded like every blocking call, never shorter than a statement may take (a search).
        self._run = Blocking("msc-pg-reader", timeout=COMMAND_TIMEOUT_S + CONNECT_TIMEOUT_S)
        self._conn: asyncpg.Connection | None = None
        if opened is not None:
            opened.add(self)
        try:
            self._conn = self._run.run(self._connect())
        except DB_ERRORS as exc:
            self._run.close()
            raise JournalUnavailable(f"journal database: {explain(exc, bound_s=COMMAND_TIMEOUT_S)}") from None
        except BaseException:
            self._run.close()
            raise

    async def _connect(self) -> asyncpg.Connection:
        conn = await self.pg.connect()
        # The schema is made in one transaction (all of it or nothing): only an empty database
        # needs it. Not re-run on every open: its CREATE OR REPLACE TRIGGER locks journal_records
        # against the writer's INSERTs, and readers are opened often (redelivery, each command).
        if await conn.fetchval("SELECT to_regclass('journal_info')") is None:
            await create_schema(conn, SCHEMA, SCHEMA_LOCK)
        return conn

    def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One statement, read to completion. Raises JournalError when the database cannot answer."""
        if self._conn is None:
            raise JournalError("the journal reader is closed")
        try:
            return self._run.run(self._conn.fetch(sql, *args))
        except DB_ERRORS as exc:
            raise JournalUnavailable(f"journal database: {explain(exc, bound_s=COMMAND_TIMEOUT_S)}") from None

    def periods(self) -> list[str]:
        known = [p for (p,) in self._fetch(f"SELECT period FROM journal_periods WHERE {_LIVE} ORDER BY period")]
        return [p for p in known if self._fetch(f"SELECT 1 FROM {partition('journal_records', p)} LIMIT 1")]

    def period_range(self, period: str) -> tuple[int, int] | None:
        r = self._fetch(f"SELECT min(seq), max(seq) FROM journal_records WHERE period = $1 AND {_LIVE}", period)
        return (r[0][0], r[0][1]) if r and r[0][0] is not None else None

    def find_period(self, seq: int) -> str | None:
        r = self._fetch(f"SELECT period FROM journal_records WHERE seq = $1 AND {_LIVE}", seq)
        return r[0][0] if r else None

    def blob(self, seq: int) -> tuple[str, bytes] | None:
        r = self._fetch(f"SELECT period, blob FROM journal_records WHERE seq = $1 AND {_LIVE}", seq)
        return (r[0][0], r[0][1]) if r else None

    def blobs(self, seqs: Sequence[int]) -> dict[int, tuple[str, bytes]]:
        """Sealed records by sequence number, many at once (one query)."""
        wanted = sorted(set(seqs))
        if not wanted:
            return {}
        return {r[0]: (r[1], r[2]) for r in self._fetch(
            f"SELECT seq, period, blob FROM journal_records WHERE seq = ANY($1::bigint[]) AND {_LIVE}", wanted)}

    def records(self, period: str, first_seq: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """A month's records with ``seq >= first_seq`` in sequence order (at most ``limit``),
        fetched a page at a time: a month of records never sits in memory at once, and no
        statement or transaction stays open between pages."""
        cols = ", ".join(_Q[c] for c in COLS)
        n = len(COLS)
        nxt, left = first_seq, limit
        while left is None or left > 0:
            size = PAGE if left is None else min(PAGE, left)
            page = self._fetch(f"SELECT {cols}, blob, leaf FROM journal_records WHERE period = $1 AND seq >= $2 "
                               f"AND {_LIVE} ORDER BY seq LIMIT $3", period, nxt, size)
            for r in page:
                yield StoredRecord(tuple(r[:n]), r[n], r[n + 1])
            if len(page) < size:
                return
            nxt = page[-1][0] + 1
            if left is not None:
                left -= len(page)

    def candidates(self, period: str, *, where: Mapping[str, object], tokens: Sequence[bytes],
                   start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        """Sealed records of a month that may match a search (see the interface), a page at a
        time: metadata by the record indexes, tokens by ``journal_tokens``, time by ``ts``."""
        conds: list[str] = ["period = $1"]
        args: list[object] = [period]
        for col, value in where.items():
            if col not in _Q:
                raise ValueError(f"not a metadata column: {col!r}")
            args.append(value)
            conds.append(f"{_Q[col]} = ${len(args)}")
        for bound, op in ((start, ">="), (end, "<")):
            if bound is not None:
                args.append(bound)
                conds.append(f"ts {op} ${len(args)}")
        for t in tokens:
            args.append(t)
            conds.append(f"seq IN (SELECT seq FROM journal_tokens WHERE period = $1 AND token = ${len(args)})")
        sql = (f"SELECT seq, blob FROM journal_records WHERE {' AND '.join(conds)} AND seq > ${len(args) + 1} "
               f"ORDER BY seq LIMIT {PAGE}")
        after = 0
        while True:
            page = self._fetch(sql, *args, after)
            for _seq, blob in page:
                yield blob
            if len(page) < PAGE:
                return
            after = page[-1][0]

    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(*r) for r in self._fetch(
            "SELECT tree_size, root, ts, signature, frontier FROM journal_checkpoints ORDER BY tree_size")]

    def last_checkpoint(self, at_most: int | None = None) -> Checkpoint | None:
        r = self._fetch("SELECT tree_size, root, ts, signature, frontier FROM journal_checkpoints "
                        "WHERE tree_size <= $1 ORDER BY tree_size DESC LIMIT 1",
                        at_most if at_most is not None else 2**62)
        return Checkpoint(*r[0]) if r else None

    def next_checkpoint(self, after: int) -> Checkpoint | None:
        r = self._fetch("SELECT tree_size, root, ts, signature, frontier FROM journal_checkpoints "
                        "WHERE tree_size > $1 ORDER BY tree_size LIMIT 1", after)
        return Checkpoint(*r[0]) if r else None

    def purged(self) -> list[tuple[str, int, int]]:
        return [tuple(r) for r in self._fetch("SELECT period, first_seq, last_seq FROM journal_purged ORDER BY first_seq")]

    def purge_seqs(self) -> dict[str, int | None]:
        return {r[0]: r[1] for r in self._fetch("SELECT period, purge_seq FROM journal_purged")}

    def purged_leaf_count(self, period: str) -> int:
        r = self._fetch("SELECT sum(length(leaves)) FROM journal_purged_leaves WHERE period = $1", period)
        size = r[0][0] or 0
        return size // 32 + (1 if size % 32 else 0)

    def purged_leaves(self, period: str, start: int, count: int) -> bytes:
        """``count`` kept leaf hashes from the ``start``-th; only the chunks needed are read."""
        out = bytearray()
        for _start, leaves in self._fetch(
                "SELECT start, substring(leaves FROM 1 + 32 * greatest(0, $2 - start) FOR 32 * $3) "
                "FROM journal_purged_leaves WHERE period = $1 AND start < $2 + $3 "
                "AND start + length(leaves) / 32 > $2 ORDER BY start", period, start, count):
            out += leaves
        return bytes(out[: count * 32])

    def kept(self) -> dict[int, bytes]:
        """Sealed bytes of purge records whose own month was purged (the proof outlives it)."""
        return {r[0]: r[1] for r in self._fetch("SELECT seq, blob FROM journal_kept")}

    def gaps(self) -> list[tuple[int, int]]:
        return [tuple(r) for r in self._fetch("SELECT from_ts, to_ts FROM journal_gaps ORDER BY seq")]

    def journal_id(self) -> str | None:
        r = self._fetch("SELECT v FROM journal_info WHERE k = 'id'")
        return r[0][0] if r else None

    def metadata(self, period: str, columns: Sequence[str], *, first_seq: int = 0, last_seq: int | None = None,
                 start: int | None = None, end: int | None = None, kinds: Sequence[str] | None = None,
                 where: Mapping[str, object] | None = None, not_null: Sequence[str] = ()) -> Iterator[tuple[Any, ...]]:
        """Metadata columns of a month's records (see the interface), a page at a time."""
        for col in (*columns, *(where or {}), *not_null):
            if col not in _Q:
                raise ValueError(f"not a metadata column: {col!r}")
        conds: list[str] = ["period = $1"]
        args: list[object] = [period]

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if last_seq is not None:
            conds.append(f"seq <= {arg(last_seq)}")
        if start is not None:
            conds.append(f"ts >= {arg(start)}")
        if end is not None:
            conds.append(f"ts < {arg(end)}")
        if kinds is not None:
            conds.append(f"kind = ANY({arg(list(kinds))}::text[])")
        for col, value in (where or {}).items():
            conds.append(f"{_Q[col]} = {arg(value)}")
        conds.extend(f"{_Q[col]} IS NOT NULL" for col in not_null)
        sql = (f"SELECT seq, {', '.join(_Q[c] for c in columns)} FROM journal_records WHERE {' AND '.join(conds)} "
               f"AND seq >= ${len(args) + 1} ORDER BY seq LIMIT {PAGE}")
        nxt = first_seq
        while True:
            page = self._fetch(sql, *args, nxt)
            for r in page:
                yield tuple(r[1:])
            if len(page) < PAGE:
                return
            nxt = page[-1][0] + 1

    def seq_at(self, period: str, ts: int) -> int | None:
        r = self._fetch("SELECT (SELECT min(seq) FROM journal_records WHERE period = $1 AND ts >= $2), "
                        "(SELECT max(seq) FROM journal_records WHERE period = $1)", period, ts)
        found, last = r[0][0], r[0][1]
        if last is None:
            return None
        return int(found) if found is not None else int(last) + 1

    def end(self, period: str, up_to: int | None = None) -> tuple[int, int] | None:
        last = up_to
        if last is None:
            last = self._fetch("SELECT max(seq) FROM journal_records WHERE period = $1", period)[0][0]
            if last is None:
                return None
        r = self._fetch("SELECT ts FROM journal_records WHERE period = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
                        period, last)
        return (last, r[0][0]) if r else None

    def txn_summary(self, period: str, first_seq: int, last_seq: int) -> list[TxnSummary]:
        aggregates = TXN_SUMMARY_SQL.format(ne_am="mke IS DISTINCT FROM 'AM'", ne_msc="peer IS DISTINCT FROM 'MSC'")
        sql = (f"SELECT txn, {aggregates} "
               "FROM journal_records WHERE period = $1 AND seq >= $2 AND seq <= $3 AND txn IS NOT NULL "
               "AND kind IN ('FORWARDED', 'RECEIVED', 'UNDELIVERED') GROUP BY txn")
        # (the SUMs come back as numeric: made int; the MAXes as they are)
        return [TxnSummary(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), int(r[8]), int(r[9]), r[10])
                for r in self._fetch(sql, period, first_seq, last_seq)]

    def tokens(self, token: bytes, period: str | None = None) -> list[int]:
        """Sequence numbers of the records carrying a blind-index token (in sequence order)."""
        if period is None:
            rows = self._fetch(f"SELECT seq FROM journal_tokens WHERE token = $1 AND {_LIVE} ORDER BY seq", token)
        else:
            rows = self._fetch("SELECT seq FROM journal_tokens WHERE token = $1 AND period = $2 ORDER BY seq",
                               token, period)
        return [r[0] for r in rows]

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                self._run.run(conn.close(timeout=5))
            except DB_ERRORS:
                conn.terminate()
        self._run.close()

    def abort(self, why: str) -> None:
        """Give the caller waiting on the database back now and cut the connection, without
        waiting (a node that stepped down: msc.server.roles.abandon_storage)."""
        self._run.abort(why)
        conn = self._conn
        if conn is not None and not self._run.loop.is_closed():
            self._run.loop.call_soon_threadsafe(conn.terminate)


_reason = reason  # (the name the journal's modules and backends use)


class PgStorage:
    """The journal on PostgreSQL as :class:`msc.journal.journal.Journal` opens it
    (:class:`~msc.journal.interfaces.JournalStorage`): ``Journal(directory, keyring,
    storage=PgStorage(settings, fence=…))``."""

    def __init__(self, pg: PgSettings, *, fence: Fence | None = None) -> None:
        self.pg = pg
        self.fence = fence
        self._readers: weakref.WeakSet[PgReader] = weakref.WeakSet()
        self._aborted: str | None = None

    def describe(self) -> str:
        from msc.storage.postgres import safe_dsn

        return f"PostgreSQL ({safe_dsn(self.pg.dsn)})"

    def journal_writer(self, signing: Ed25519PrivateKey) -> PgWriter:
        return PgWriter(self.pg, signing.sign, fence=self.fence)

    def journal_reader(self) -> PgReader:
        if self._aborted is not None:
            raise JournalError(self._aborted)
        return PgReader(self.pg, opened=self._readers)

    def abort(self, why: str) -> None:
        """Every reader of this journal still open (the restart's recovery pass, a queued output's
        text read back — each in a worker thread) is given back now and later ones are refused:
        a node that stepped down must not wait for a database that does not answer."""
        self._aborted = why
        for reader in list(self._readers):
            reader.abort(why)
