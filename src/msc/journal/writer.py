"""The journal's single writer (SQLite backend), and its thread transport.

:class:`Writer` is used from exactly one thread. It commits batches that the event loop has
already sealed, maintains the Merkle :class:`~msc.journal.merkle.Frontier` over committed
records, and writes checkpoints. On open it recovers (:mod:`msc.journal.recovery`). It is driven
through the asynchronous :class:`~msc.journal.interfaces.JournalWriter` interface by
:class:`ThreadWriter` (a worker thread: short-lived CLI use) or by
:class:`msc.journal.writerproc.WriterProcess` (a child process: the daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from msc.config.files import FileLocked, atomic_write, file_lock, private_dir
from msc.journal import recovery
from msc.journal.bundle_verifier import checkpoint_message
from msc.journal.indexer import Indexer
from msc.journal.merkle import Frontier
from msc.journal.records import JournalError
from msc.journal.schema import (
    COLUMNS,
    PARTITION_SCHEMA,
    TIMELINE_GAP_S,
    Checkpoint,
    Row,
    connect,
    journal_id,
    last_checkpoint,
    list_partitions,
    load_purged,
    open_meta,
    partition_path,
)


class JournalBusy(JournalError):
    """Another process holds the journal's writer lock (normally the running daemon)."""


#: A silence longer than this between two records is a timeline gap (msc.journal.retention).
GAP_US = TIMELINE_GAP_S * 1_000_000

_RECORD_COLS = f"INSERT INTO records({', '.join(COLUMNS)}, blob, leaf, tokens) VALUES "
_RECORD_ROW = f"({', '.join('?' * (len(COLUMNS) + 3))})"
#: Rows per INSERT statement (17 parameters each; SQLite allows 32,766). A statement is one
#: sqlite3_step, during which the writer thread does not hold the GIL; between statements it must
#: take the GIL back, and with the event loop busy each re-take can wait. One statement per batch
#: (plus BEGIN and COMMIT) keeps that to three waits per commit instead of one per row.
#: A power of two (insert_rows).
MAX_ROWS_PER_STATEMENT = 1024


def insert_rows(conn: sqlite3.Connection, head: str, row: str, rows: list[tuple]) -> None:
    """Insert ``rows`` with multi-row INSERTs of power-of-two sizes (37 rows: 32 + 4 + 1).

    The connection caches its prepared statements (``cached_statements``), and a cached
    statement keeps its last bound values — copies of the records' blobs — until it is used
    again (Python's sqlite3 resets a statement but never clears its bindings). With one INSERT
    text per batch size, every size a burst ever used kept its last batch's records: the journal
    writer process held ~120 MB of SQLite memory after three bursts of 30 kB records and never
    gave it back (probe14 case 7; ``sqlite3_memory_used`` 123 MB, Python objects 18 MB). With
    power-of-two sizes at most 11 such statements exist, each holding at most its size in
    records, and a batch takes at most popcount(n) statements (a GIL re-take each)."""
    i = 0
    while i < len(rows):
        n = min(MAX_ROWS_PER_STATEMENT, 1 << ((len(rows) - i).bit_length() - 1))
        chunk = rows[i : i + n]
        conn.execute(head + ",".join([row] * n), [v for r in chunk for v in r])
        i += n


class Writer:
    """The journal's single writer. Not thread-safe: call it from one thread only."""

    def __init__(self, directory: Path, *, synchronous: str = "full", mark_path: Path | None = None) -> None:
        from msc.journal.highwater import HighWater, default_path

        self.dir = directory
        self.synchronous = synchronous
        self.mark = HighWater(mark_path or default_path(directory))  # msc.journal.highwater
        self._conns: dict[str, sqlite3.Connection] = {}
        self._meta: sqlite3.Connection | None = None
        self.frontier = Frontier()
        self.last_seq = 0
        self.last_ts = 0
        self.last_checkpoint: Checkpoint | None = None
        self.journal_id: str | None = None
        self._lock: contextlib.ExitStack | None = None  # the writer lock (.writer.lock), held while open
        self._needs_reopen = False

    # -- opening and recovery ---------------------------------------------------------------

    def open(self) -> None:
        private_dir(self.dir)
        if self._lock is None:
            # One writer per journal, across processes: the daemon, or the CLI when no daemon runs.
            lock = contextlib.ExitStack()
            try:
                lock.enter_context(file_lock(self.dir / ".writer.lock", wait=False))
            except FileLocked:
                raise JournalBusy(f"{self.dir} is being written by another process") from None
            self._lock = lock
        self._meta = open_meta(self.dir)
        os.chmod(self.dir / "meta.db", 0o600)
        self.journal_id = journal_id(self._meta)
        if self.journal_id is None:
            import secrets

            self.journal_id = secrets.token_hex(8)
            self._meta.execute("INSERT OR IGNORE INTO journal(k, v) VALUES ('id', ?)", (self.journal_id,))
            self.journal_id = journal_id(self._meta)
        self.last_checkpoint = last_checkpoint(self._meta)
        purged = load_purged(self._meta)
        for period, _first, _last in purged:  # a purge that stopped after recording itself
            self.delete_partition(period)
        periods = list_partitions(self.dir)
        self.last_seq, self.last_ts = recovery.last_position(self._conn, periods, purged)
        self.frontier = recovery.rebuild_frontier(self.dir, self._conn, last_checkpoint(self._meta, self.last_seq),
                                                  periods, purged)

    def purge_period(self, period: str, purge_seq: int) -> tuple[int, int] | None:
        """Retention: keep the month's leaf hashes (and the sealed bytes of any purge record in
        it), mark it purged by the purge record ``purge_seq`` — already committed and covered by
        a signed checkpoint (msc.journal.retention) — for :meth:`delete_partition` to finish.

        The caller destroys the month's key (crypto-shredding) between this and the deletion;
        a crash anywhere in between is completed by :meth:`open` and the Journal's open.
        """
        from msc.journal.schema import PURGE_CODE

        path = partition_path(self.dir, period)
        if not path.exists():
            return None
        conn = self._conns.pop(period, None) or connect(path, synchronous=self.synchronous)
        try:
            rows = conn.execute("SELECT seq, leaf FROM records ORDER BY seq").fetchall()
            evidence = conn.execute("SELECT seq, blob FROM records WHERE kind = 'ADMIN' AND code = ?",
                                    (PURGE_CODE,)).fetchall()
        finally:
            conn.close()
        if not rows:
            for suffix in ("", "-wal", "-shm"):
                (self.dir / f"{period}.db{suffix}").unlink(missing_ok=True)
            return None
        first, last = rows[0][0], rows[-1][0]
        if len(rows) != last - first + 1:
            raise JournalError(f"{period} is not contiguous ({first}..{last}, {len(rows)} records): run verify")
        atomic_write(self.dir / f"{period}.leaves", b"".join(leaf for _, leaf in rows), 0o600)
        assert self._meta is not None
        self._meta.execute("BEGIN IMMEDIATE")
        try:
            self._meta.executemany("INSERT OR REPLACE INTO kept(seq, blob) VALUES (?, ?)", evidence)
            self._meta.execute("INSERT OR REPLACE INTO purged(period, first_seq, last_seq, purged_at, purge_seq) "
                               "VALUES (?, ?, ?, ?, ?)", (period, first, last, int(time.time() * 1_000_000), purge_seq))
            self._meta.execute("COMMIT")
        except BaseException:
            if self._meta.in_transaction:
                self._meta.execute("ROLLBACK")
            raise
        return first, last

    def delete_partition(self, period: str) -> None:
        self._conns.pop(period, None)
        for name in (f"{period}.db", f"{period}.idx.db"):
            for suffix in ("", "-wal", "-shm"):
                (self.dir / f"{name}{suffix}").unlink(missing_ok=True)

    def _conn(self, period: str) -> sqlite3.Connection:
        conn = self._conns.get(period)
        if conn is None:
            path = partition_path(self.dir, period)
            conn = connect(path, synchronous=self.synchronous)
            conn.executescript(PARTITION_SCHEMA)
            os.chmod(path, 0o600)
            self._conns[period] = conn
            # Keep at most the two newest partitions open: writes only go to the current month.
            # (Never the one just opened: recovery may ask for an older month.)
            for old in sorted(self._conns)[:-2]:
                if old != period:
                    self._conns.pop(old).close()
        return conn

    # -- appending ------------------------------------------------------------------------

    def commit(self, rows: Sequence[Row]) -> list[bytes]:
        """Commit one batch durably (one transaction per month touched). Returns leaf hashes.

        On any failure the batch raises :class:`JournalError`; ``last_seq`` then reflects what is
        actually on disk, so the caller can re-number the next batch without a gap.
        """
        leaves = [hashlib.sha256(b"\x00" + r.blob).digest() for r in rows]
        start = 0
        if self._needs_reopen:
            self._reopen()  # re-read the truth before writing anything after a failure
        if rows and rows[0].seq != self.last_seq + 1:
            # Never leave a hole, never write over a number: if the files no longer end where the
            # caller thinks (records were removed behind our back), refuse and say where they end.
            raise JournalError(f"the batch starts at {rows[0].seq} but the journal ends at {self.last_seq}")
        gap = None
        if rows and self.last_ts and rows[0].ts - self.last_ts > GAP_US:
            gap = (rows[0].seq, self.last_ts, rows[0].ts)
        try:
            while start < len(rows):
                period = rows[start].period
                end = start
                while end < len(rows) and rows[end].period == period:
                    end += 1
                conn = self._conn(period)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    insert_rows(conn, _RECORD_COLS, _RECORD_ROW,
                                [(*r.values, r.blob, leaves[i], b"".join(r.tokens) or None)
                                 for i, r in enumerate(rows[start:end], start)])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                for i in range(start, end):
                    self.frontier.append(leaves[i])
                self.last_seq = rows[end - 1].seq
                self.last_ts = rows[end - 1].ts
                start = end
        except (sqlite3.Error, OSError) as exc:
            # Never assume a failed commit (or fsync) succeeded: reconnect and re-read the truth.
            self._reset_after_failure()
            raise JournalError(f"journal commit failed: {exc}") from exc
        if gap is not None:
            self._record_gap(*gap)
        self._write_mark()
        return leaves

    def leaves(self, first: int, last: int) -> dict[int, bytes]:
        """The leaf hashes the files hold for ``first..last`` (see the interface), newest month
        first until the month that holds ``first``. Raises JournalError."""
        if self._needs_reopen:
            self._reopen()
        found: dict[int, bytes] = {}
        try:
            for period in reversed(list_partitions(self.dir)):
                conn = self._conn(period)
                for seq, leaf in conn.execute("SELECT seq, leaf FROM records WHERE seq BETWEEN ? AND ?", (first, last)):
                    found[seq] = bytes(leaf)
                low = conn.execute("SELECT min(seq) FROM records").fetchone()[0]
                if low is not None and low <= first:
                    break
        except (sqlite3.Error, OSError) as exc:
            self._reset_after_failure()
            raise JournalError(f"journal read failed: {exc}") from exc
        return found

    def _write_mark(self, *, sync: bool = False) -> None:
        """The high-water mark after every commit (a pwrite), durably at checkpoints and close."""
        from msc.journal.highwater import Mark

        cp = self.last_checkpoint
        try:
            self.mark.write(Mark(self.journal_id, self.last_seq, self.last_ts, cp.tree_size if cp else 0), sync=sync)
        except OSError as exc:
            self.mark.errors += 1
            if self.mark.errors == 1:
                import structlog

                structlog.get_logger("msc.journal").error("journal.high_water_not_written", path=str(self.mark.path),
                                                          error=str(exc))

    def _record_gap(self, seq: int, from_ts: int, to_ts: int) -> None:
        """Note a silence the journal did not observe: retention does not count it as elapsed time.
        Derived from the records (verify recomputes gaps from them), so a failure to write it is
        logged, not fatal to the commit that already succeeded."""
        assert self._meta is not None
        try:
            self._meta.execute("INSERT OR REPLACE INTO gaps(seq, from_ts, to_ts) VALUES (?, ?, ?)", (seq, from_ts, to_ts))
        except sqlite3.Error as exc:
            import structlog

            structlog.get_logger("msc.journal").error("journal.gap_not_recorded", seq=seq, error=str(exc))

    def _reset_after_failure(self) -> None:
        """After a failed write or fsync, nothing in memory can be trusted to match the disk
        (a batch whose fsync failed may still be in the WAL). Reopen and re-read; if even that
        fails (the fault persists), every later write reopens first."""
        self._needs_reopen = True
        try:
            self._reopen()
        except JournalError:
            pass

    def _reopen(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._conns.clear()
        if self._meta is not None:
            try:
                self._meta.close()
            except sqlite3.Error:
                pass
            self._meta = None
        try:
            self.open()
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"journal cannot be reopened: {exc}") from exc
        self._needs_reopen = False

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, name: str, sign, ts: int) -> Checkpoint | None:
        """Sign and store a checkpoint of the committed tree (None if nothing new)."""
        if self._needs_reopen:
            self._reopen()
        size = self.frontier.size
        if size == 0 or (self.last_checkpoint and self.last_checkpoint.tree_size >= size):
            return None
        root = self.frontier.root()
        sig = sign(checkpoint_message(name, size, root, ts))
        cp = Checkpoint(size, root, ts, sig, self.frontier.to_bytes())
        assert self._meta is not None
        try:
            self._meta.execute(
                "INSERT INTO checkpoints(tree_size, root, ts, signature, frontier) VALUES (?, ?, ?, ?, ?)",
                (cp.tree_size, cp.root, cp.ts, cp.signature, cp.frontier),
            )
        except sqlite3.Error as exc:
            raise JournalError(f"checkpoint failed: {exc}") from exc
        self.last_checkpoint = cp
        self._write_mark(sync=True)
        return cp

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        try:
            self.mark.close()
        except OSError:
            pass
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class ThreadWriter:
    """The writer in a worker thread of this process (short-lived CLI use; the daemon uses
    :class:`msc.journal.writerproc.WriterProcess`). Same asynchronous operations."""

    def __init__(self, directory: Path, synchronous: str, signing, mark_path: Path) -> None:
        self.writer = Writer(directory, synchronous=synchronous, mark_path=mark_path)
        self._signing = signing
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="msc-journal")
        self._indexer = Indexer(directory)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        await self._run(self.writer.open)
        self._indexer.start()

    @property
    def last_seq(self) -> int:
        return self.writer.last_seq

    @property
    def last_ts(self) -> int:
        return self.writer.last_ts

    @property
    def checkpoint_size(self) -> int:
        cp = self.writer.last_checkpoint
        return cp.tree_size if cp else 0

    @property
    def journal_id(self) -> str | None:
        return self.writer.journal_id

    async def commit(self, rows, poke_indexer: bool = False) -> None:
        await self._run(self.writer.commit, rows)
        if poke_indexer:
            self._indexer.poke()

    async def leaves(self, first: int, last: int) -> dict[int, bytes]:
        return await self._run(self.writer.leaves, first, last)

    async def checkpoint(self, name: str, ts: int):
        return await self._run(self.writer.checkpoint, name, self._signing.sign, ts)

    async def purge_period(self, period: str, purge_seq: int):
        return await self._run(self.writer.purge_period, period, purge_seq)

    async def delete_partition(self, period: str) -> None:
        await self._run(self.writer.delete_partition, period)

    async def close(self) -> None:
        await self._run(self.writer.close)
        await asyncio.get_running_loop().run_in_executor(None, self._indexer.stop)
        self._executor.shutdown(wait=True)
