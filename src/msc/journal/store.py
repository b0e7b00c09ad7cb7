"""On-disk layout of the journal and the synchronous writer that owns it.

::

    journal/
      2026-11.db      one SQLite database (WAL) per calendar month: the records (with their
                      blind-index tokens packed in one column)
      2026-12.db
      meta.db         signed checkpoints (with the Merkle frontier at each), purged months and
                      the purge records that prove them (msc.journal.retention), the silences
                      of the timeline, the journal's identity
      2023-10.leaves  leaf hashes of a purged month (kept so the tree stays verifiable)
    journal.hwm       beside the directory: the high-water mark (msc.journal.highwater)

Records are never updated or deleted: triggers refuse it. Only the retention purge removes a
whole month, by deleting its file after saving its leaf hashes (JOURNAL.md "Retention").

:class:`Writer` is used from exactly one thread. It commits batches that the event loop has
already sealed, maintains the Merkle :class:`~msc.journal.merkle.Frontier` over committed
records, and writes checkpoints.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from msc.config.files import atomic_write, private_db, private_dir
from msc.journal.merkle import Frontier
from msc.journal.records import JournalError
from msc.journal.retention import TIMELINE_GAP_S


class JournalBusy(JournalError):
    """Another process holds the journal's writer lock (normally the running daemon)."""

#: A silence longer than this between two records is a timeline gap (msc.journal.retention).
GAP_US = TIMELINE_GAP_S * 1_000_000

PARTITION_RE = re.compile(r"(\d{4})-(\d{2})\.db\Z")  # not YYYY-MM.idx.db

COLUMNS = (
    "seq", "ts", "kind", "direction", "peer", "mnemonic", "user", "taf", "ori", "mke", "txn",
    "code", "purpose", "osn",
)
_RECORD_COLS = f"INSERT INTO records({', '.join(COLUMNS)}, blob, leaf, tokens) VALUES "
_RECORD_ROW = f"({', '.join('?' * (len(COLUMNS) + 3))})"
#: Rows per INSERT statement (17 parameters each; SQLite allows 32,766). A statement is one
#: sqlite3_step, during which the writer thread does not hold the GIL; between statements it must
#: take the GIL back, and with the event loop busy each re-take can wait. One statement per batch
#: (plus BEGIN and COMMIT) keeps that to three waits per commit instead of one per row.
MAX_ROWS_PER_STATEMENT = 1024


def insert_rows(conn: sqlite3.Connection, head: str, row: str, rows: list[tuple]) -> None:
    for i in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        chunk = rows[i : i + MAX_ROWS_PER_STATEMENT]
        conn.execute(head + ",".join([row] * len(chunk)), [v for r in chunk for v in r])

PARTITION_SCHEMA = """
CREATE TABLE IF NOT EXISTS records(
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    direction TEXT NOT NULL,
    peer TEXT, mnemonic TEXT, user TEXT, taf TEXT, ori TEXT, mke TEXT, txn TEXT,
    code TEXT, purpose TEXT, osn INTEGER,
    blob BLOB NOT NULL,
    leaf BLOB NOT NULL,
    tokens BLOB            -- the record's blind-index tokens, 16 bytes each, packed
);
-- No secondary index here: they are built in batches in YYYY-MM.idx.db (msc.journal.indexer).
CREATE TRIGGER IF NOT EXISTS records_append_only_u BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_append_only_d BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
"""

META_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints(
    tree_size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    ts INTEGER NOT NULL,
    signature BLOB NOT NULL,
    frontier BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS purged(
    period TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    purged_at INTEGER NOT NULL,
    purge_seq INTEGER          -- the purge record (msc.journal.retention) that justifies it
);
-- Sealed bytes of purge records whose own month was purged: the proof outlives the month.
CREATE TABLE IF NOT EXISTS kept(seq INTEGER PRIMARY KEY, blob BLOB NOT NULL);
-- Silences of more than retention.TIMELINE_GAP_S between two records (restarts, clock jumps):
-- time the journal did not observe. Derived from the records (verify recomputes them).
CREATE TABLE IF NOT EXISTS gaps(seq INTEGER PRIMARY KEY, from_ts INTEGER NOT NULL, to_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal(k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_u BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_d BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
"""


# The exact bytes an Ed25519 checkpoint signature covers: one definition, the verifier's.
from msc.journal.bundle_verifier import checkpoint_message  # noqa: E402, F401  (re-exported)


@dataclass(frozen=True)
class Row:
    """One sealed record ready for the writer: metadata columns, canonical bytes, tokens."""

    period: str
    values: tuple  # in COLUMNS order
    blob: bytes
    tokens: Sequence[bytes]

    @property
    def seq(self) -> int:
        return self.values[0]


@dataclass(frozen=True)
class StoredRecord:
    """One committed record as a reader returns it: metadata (in :data:`COLUMNS` order), the
    sealed bytes and the Merkle leaf hash."""

    values: tuple  # in COLUMNS order
    blob: bytes
    leaf: bytes

    @property
    def seq(self) -> int:
        return self.values[0]


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root: bytes
    ts: int
    signature: bytes
    frontier: bytes


def partition_path(directory: Path, period: str) -> Path:
    return directory / f"{period}.db"


def list_partitions(directory: Path) -> list[str]:
    """Periods that have a partition file, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(f"{m.group(1)}-{m.group(2)}" for p in directory.iterdir() if (m := PARTITION_RE.match(p.name)))


def connect(path: Path, *, readonly: bool = False, synchronous: str = "full") -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        private_db(path)  # 0600 before SQLite makes its -wal/-shm with the same mode
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
        # Records are ~1.2 KB: 16 KB pages write a commit's WAL frames in a quarter of the
        # pwrite calls (a no-op for a file that already exists; set before its first table).
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MB for the writer
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    return conn


def open_meta(directory: Path) -> sqlite3.Connection:
    conn = connect(directory / "meta.db")
    conn.executescript(META_SCHEMA)
    if "purge_seq" not in {r[1] for r in conn.execute("PRAGMA table_info(purged)")}:
        conn.execute("ALTER TABLE purged ADD COLUMN purge_seq INTEGER")  # a meta.db from before it existed
    return conn


def load_checkpoints(meta: sqlite3.Connection) -> list[Checkpoint]:
    return [Checkpoint(*r) for r in meta.execute(
        "SELECT tree_size, root, ts, signature, frontier FROM checkpoints ORDER BY tree_size")]


def last_checkpoint(meta: sqlite3.Connection, at_most: int | None = None) -> Checkpoint | None:
    """The newest checkpoint (of tree size ``<= at_most`` if given): one b-tree lookup, however
    many checkpoints three years of traffic leave (a few million)."""
    if at_most is None:
        row = meta.execute("SELECT tree_size, root, ts, signature, frontier FROM checkpoints "
                           "ORDER BY tree_size DESC LIMIT 1").fetchone()
    else:
        row = meta.execute("SELECT tree_size, root, ts, signature, frontier FROM checkpoints WHERE tree_size <= ? "
                           "ORDER BY tree_size DESC LIMIT 1", (at_most,)).fetchone()
    return Checkpoint(*row) if row else None


def journal_id(meta: sqlite3.Connection) -> str | None:
    """The journal's identity (random, made when its meta.db was created), or None."""
    try:
        row = meta.execute("SELECT v FROM journal WHERE k = 'id'").fetchone()
    except sqlite3.OperationalError:  # a meta.db from before the table existed
        return None
    return row[0] if row else None


def load_purged(meta: sqlite3.Connection) -> list[tuple[str, int, int]]:
    return list(meta.execute("SELECT period, first_seq, last_seq FROM purged ORDER BY first_seq"))


def load_purge_seqs(meta: sqlite3.Connection) -> dict[str, int | None]:
    try:
        return dict(meta.execute("SELECT period, purge_seq FROM purged"))
    except sqlite3.OperationalError:
        return {p: None for p, _f, _l in load_purged(meta)}


def load_gaps(meta: sqlite3.Connection) -> list[tuple[int, int]]:
    """(from_ts, to_ts) in µs of each silence recorded by the writer, in sequence order."""
    try:
        return list(meta.execute("SELECT from_ts, to_ts FROM gaps ORDER BY seq"))
    except sqlite3.OperationalError:
        return []


def read_leaves_file(directory: Path, period: str) -> bytes:
    return (directory / f"{period}.leaves").read_bytes()


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
        self._lock_fd: int | None = None
        self._needs_reopen = False

    # -- opening and recovery ---------------------------------------------------------------

    def open(self) -> None:
        private_dir(self.dir)
        if self._lock_fd is None:
            # One writer per journal, across processes: the daemon, or the CLI when no daemon runs.
            fd = os.open(self.dir / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JournalBusy(f"{self.dir} is being written by another process") from None
            self._lock_fd = fd
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
        self._finish_interrupted_purges(purged)
        periods = list_partitions(self.dir)
        last = 0
        last_ts = 0
        for period in reversed(periods):
            row = self._conn(period).execute("SELECT seq, ts FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            if row:
                last, last_ts = row
                break
        if not last and purged:
            last = purged[-1][2]
        self.last_seq = last
        self.last_ts = last_ts
        self.frontier = self._rebuild_frontier(periods, purged)

    def _rebuild_frontier(self, periods: list[str], purged: list[tuple[str, int, int]]) -> Frontier:
        """Start from the latest checkpoint's frontier and replay the leaves committed after it."""
        assert self._meta is not None
        cp = last_checkpoint(self._meta, self.last_seq)
        f = Frontier.from_bytes(cp.tree_size, cp.frontier) if cp else Frontier()
        for _period, first, last in purged:
            if last <= f.size:
                continue
            data = read_leaves_file(self.dir, _period)
            for i in range(max(first, f.size + 1), last + 1):
                off = (i - first) * 32
                f.append(data[off : off + 32])
        for period in periods:
            for (leaf,) in self._conn(period).execute("SELECT leaf FROM records WHERE seq > ? ORDER BY seq", (f.size,)):
                f.append(leaf)
        return f

    def _finish_interrupted_purges(self, purged: list[tuple[str, int, int]]) -> None:
        """A purge that stopped after recording itself still has files to delete: finish it."""
        for period, _first, _last in purged:
            self.delete_partition(period)

    def purge_period(self, period: str, purge_seq: int) -> tuple[int, int] | None:
        """Retention: keep the month's leaf hashes (and the sealed bytes of any purge record in
        it), mark it purged by the purge record ``purge_seq`` — already committed and covered by
        a signed checkpoint (msc.journal.retention) — for :meth:`delete_partition` to finish.

        The caller destroys the month's key (crypto-shredding) between this and the deletion;
        a crash anywhere in between is completed by :meth:`open` and the Journal's open.
        """
        from msc.journal.retention import PURGE_CODE

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
        if rows and self.last_ts and rows[0].values[1] - self.last_ts > GAP_US:
            gap = (rows[0].seq, self.last_ts, rows[0].values[1])
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
                self.last_ts = rows[end - 1].values[1]
                start = end
        except (sqlite3.Error, OSError) as exc:
            # Never assume a failed commit (or fsync) succeeded: reconnect and re-read the truth.
            self._reset_after_failure()
            raise JournalError(f"journal commit failed: {exc}") from exc
        if gap is not None:
            self._record_gap(*gap)
        self._write_mark()
        return leaves

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
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class Reader:
    """Read-only access to every partition (search, verify, export, redelivery)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._conns: dict[str, sqlite3.Connection] = {}

    def periods(self) -> list[str]:
        """Partitions present, oldest first (a month whose purge was interrupted is excluded)."""
        periods = list_partitions(self.dir)
        meta = self.meta()
        if meta is None:
            return periods
        try:
            purged = {p for p, _f, _l in load_purged(meta)}
        finally:
            meta.close()
        return [p for p in periods if p not in purged]

    def conn(self, period: str) -> sqlite3.Connection:
        conn = self._conns.get(period)
        if conn is None:
            conn = connect(partition_path(self.dir, period), readonly=True)
            self._conns[period] = conn
        return conn

    def meta(self) -> sqlite3.Connection | None:
        path = self.dir / "meta.db"
        if not path.exists():
            return None
        return connect(path, readonly=True)

    def period_range(self, period: str) -> tuple[int, int] | None:
        # Two statements on purpose: a lone MIN()/MAX() is a b-tree lookup, both together a scan.
        conn = self.conn(period)
        lo = conn.execute("SELECT MIN(seq) FROM records").fetchone()[0]
        if lo is None:
            return None
        return lo, conn.execute("SELECT MAX(seq) FROM records").fetchone()[0]

    def find_period(self, seq: int) -> str | None:
        for period in reversed(self.periods()):
            r = self.period_range(period)
            if r and r[0] <= seq:
                return period if seq <= r[1] else None
        return None

    def blob(self, seq: int) -> tuple[str, bytes] | None:
        period = self.find_period(seq)
        if period is None:
            return None
        row = self.conn(period).execute("SELECT blob FROM records WHERE seq = ?", (seq,)).fetchone()
        return (period, row[0]) if row else None

    def records(self, period: str, first_seq: int = 0) -> Iterator[StoredRecord]:
        """A month's records with ``seq >= first_seq``, in sequence order."""
        n = len(COLUMNS)
        for r in self.conn(period).execute(f"SELECT {', '.join(COLUMNS)}, blob, leaf FROM records WHERE seq >= ? "
                                           "ORDER BY seq", (first_seq,)):
            yield StoredRecord(r[:n], r[n], r[n + 1])

    def _with_meta(self, fn, default):
        meta = self.meta()
        if meta is None:
            return default
        try:
            return fn(meta)
        finally:
            meta.close()

    def checkpoints(self) -> list[Checkpoint]:
        return self._with_meta(load_checkpoints, [])

    def last_checkpoint(self, at_most: int | None = None) -> Checkpoint | None:
        return self._with_meta(lambda m: last_checkpoint(m, at_most), None)

    def purged(self) -> list[tuple[str, int, int]]:
        return self._with_meta(load_purged, [])

    def gaps(self) -> list[tuple[int, int]]:
        return self._with_meta(load_gaps, [])

    def journal_id(self) -> str | None:
        return self._with_meta(journal_id, None)

    def blobs(self, seqs: Sequence[int]) -> dict[int, tuple[str, bytes]]:
        """Sealed records by sequence number, many at once: the partitions and their ranges are
        looked up once, then one query per partition (redelivery reads outputs in batches).
        Sequence numbers not in the journal are missing from the answer."""
        wanted = sorted(set(seqs))
        out: dict[int, tuple[str, bytes]] = {}
        if not wanted:
            return out
        for period in reversed(self.periods()):
            r = self.period_range(period)
            if r is None:
                continue
            mine = [s for s in wanted if r[0] <= s <= r[1]]
            for i in range(0, len(mine), 500):  # well under SQLite's host-parameter limit
                chunk = mine[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for seq, blob in self.conn(period).execute(
                        f"SELECT seq, blob FROM records WHERE seq IN ({marks})", chunk):
                    out[seq] = (period, blob)
            wanted = [s for s in wanted if s < r[0]]
            if not wanted:
                break
        return out

    def rows(self, period: str, where: str = "", params: Sequence = (), *, columns: str = "*") -> Iterator[tuple]:
        sql = f"SELECT {columns} FROM records {('WHERE ' + where) if where else ''} ORDER BY seq"
        yield from self.conn(period).execute(sql, params)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
