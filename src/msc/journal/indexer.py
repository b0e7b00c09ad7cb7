"""Deferred search indexes: built in batches beside the journal, never on the append path.

Random-key index inserts (user, mnemonic, blind-index tokens) cost more than the append itself
(PERFORMANCE.md: "index in batches or per partition"). So each month's records database has no
secondary index at all, and a derived ``YYYY-MM.idx.db`` holds sorted ``(key, seq)`` tables that
an indexer thread fills with one ``INSERT … SELECT … ORDER BY`` per table from a read snapshot of
the records — in its own file, so it never contends for the records database's write lock.

``meta.indexed_upto`` says how far the index goes; search uses it below that and scans the short
unindexed tail above it. The index is derived data (``synchronous = NORMAL``): if it is lost or
damaged it is rebuilt from the records.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import structlog

from msc.config.files import private_db
from msc.journal.schema import list_partitions, partition_path
from msc.outage import Outage

log = structlog.get_logger("msc.journal.indexer")

INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ix_user(user TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(user, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ix_mnemonic(mnemonic TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(mnemonic, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ix_txn(txn TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(txn, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ix_token(token BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(token, seq)) WITHOUT ROWID;
"""

INDEXED = ("user", "mnemonic", "txn")


def index_path(directory: Path, period: str) -> Path:
    return directory / f"{period}.idx.db"


def open_index(directory: Path, period: str, *, readonly: bool = False) -> sqlite3.Connection | None:
    path = index_path(directory, period)
    if readonly:
        if not path.exists():
            return None
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    private_db(path)  # 0600 before SQLite makes its -wal/-shm with the same mode
    conn = sqlite3.connect(f"file:{path}", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(INDEX_SCHEMA)
    return conn


def progress(conn: sqlite3.Connection | None) -> int:
    """The sequence number the index covers up to (0: no index)."""
    if conn is None:
        return 0
    try:
        rows = dict(conn.execute("SELECT k, v FROM meta"))
    except sqlite3.DatabaseError:
        return 0
    return rows.get("indexed_upto", 0)


# Each record carries its tokens packed (16 bytes each); explode them into (token, seq) in SQL.
_EXPLODE_TOKENS = """
WITH RECURSIVE t(seq, toks, i) AS (
    SELECT seq, tokens, 0 FROM r.records WHERE seq > ? AND seq <= ? AND length(tokens) >= 16
    UNION ALL
    SELECT seq, toks, i + 16 FROM t WHERE i + 32 <= length(toks)
)
INSERT OR IGNORE INTO ix_token(token, seq) SELECT substr(toks, i + 1, 16), seq FROM t ORDER BY 1, 2
"""


def attach_records(directory: Path, period: str) -> sqlite3.Connection | None:
    """An index connection with the month's records attached read-only (None if no records)."""
    rec_path = partition_path(directory, period)
    if not rec_path.exists():
        return None
    conn = open_index(directory, period)
    conn.execute("ATTACH DATABASE ? AS r", (f"file:{rec_path}?mode=ro",))
    return conn


def catch_up(directory: Path, period: str, *, max_records: int = 200_000, conn: sqlite3.Connection | None = None) -> int:
    """Index the records of one month not yet indexed (at most ``max_records``). Returns how many.

    ``conn`` (from :func:`attach_records`) is reused when given, else one is opened and closed.
    """
    own = conn is None
    if own:
        conn = attach_records(directory, period)
        if conn is None:
            return 0
    try:
        upto = progress(conn)
        # DEFERRED: a read snapshot of the records, and a write lock on the index file only.
        conn.execute("BEGIN")
        hi = conn.execute("SELECT MAX(seq) FROM r.records WHERE seq <= ?", (upto + max_records,)).fetchone()[0]
        if hi is None or hi <= upto:
            conn.execute("ROLLBACK")
            return 0
        for col in INDEXED:
            conn.execute(f"INSERT OR IGNORE INTO ix_{col}({col}, seq) SELECT {col}, seq FROM r.records "
                         f"WHERE seq > ? AND seq <= ? AND {col} IS NOT NULL ORDER BY {col}, seq", (upto, hi))
        conn.execute(_EXPLODE_TOKENS, (upto, hi))
        conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('indexed_upto', ?)", (hi,))
        conn.execute("COMMIT")
        return hi - upto
    except sqlite3.DatabaseError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        if own:
            conn.close()


class Indexer:
    """A background thread that keeps every month's index close behind the journal.

    Only the two newest months can still receive records (timestamps never go backwards), so only
    they keep a connection open between passes. An older month is indexed with a connection of its
    own, closed after the pass, and once its index has caught up it is not looked at again (it
    cannot grow). A failure in one month is counted and does not stop the others; the log says
    once that passes fail (``journal.indexer_error``) and once that one succeeds again.
    """

    LIVE_MONTHS = 2

    def __init__(self, directory: Path, *, interval_s: float = 1.0) -> None:
        self.dir = directory
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._conns: dict[str, sqlite3.Connection] = {}
        self._complete: set[str] = set()  # older months whose index has caught up
        self.errors = 0
        # A pass every interval_s (1 s) while the disk fails: said once, and once when a whole
        # pass succeeds again (with ``failed``: how many failures between), not at every pass.
        # Only the indexer's thread uses it.
        self._outage = Outage("journal.indexer_error", "journal.indexer_recovered", logger=log, counted="failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="msc-journal-indexer", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    BATCH = 200_000

    def run_once(self) -> int:
        """One pass over every month: index what has accumulated. Within a month, loop only while
        a batch was full (a backlog); otherwise wait for the next interval rather than chase every
        new record in tiny batches (each pass has a fixed cost; under steady traffic there is
        always something new). Returns how many records were indexed."""
        done = 0
        failed = False
        periods = list_partitions(self.dir)
        live = set(periods[-self.LIVE_MONTHS:])
        for stale in set(self._conns) - live:
            self._conns.pop(stale).close()
        self._complete &= set(periods)
        for period in periods:
            if period in self._complete:
                continue
            try:
                n = self._index_month(period, keep_open=period in live)
            except (sqlite3.DatabaseError, OSError) as exc:
                self.errors += 1
                failed = True
                self._outage.failed(str(exc), period=period)
                continue
            done += n
            if period not in live and n < self.BATCH and not self._stop:
                self._complete.add(period)
        if not failed:
            self._outage.ok()
        return done

    def _index_month(self, period: str, *, keep_open: bool) -> int:
        conn = self._conns.get(period) if keep_open else None
        if conn is None:
            conn = attach_records(self.dir, period)
            if conn is None:
                return 0
            if keep_open:
                self._conns[period] = conn
        done = 0
        try:
            while True:  # at stop: one batch per month, so that stopping stays quick
                n = catch_up(self.dir, period, max_records=self.BATCH, conn=conn)
                done += n
                if n < self.BATCH or self._stop:
                    break
        except (sqlite3.DatabaseError, OSError):
            self._conns.pop(period, None)
            conn.close()
            raise
        if not keep_open:
            conn.close()
        return done

    def _run(self) -> None:
        # The index can lag (search scans the unindexed tail); traffic cannot. On Linux a thread is
        # a task with its own nice value: at 19 the indexer only gets the CPU nobody else wants.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while not self._stop:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop:
                break
            try:
                self.run_once()
            except (sqlite3.DatabaseError, OSError) as exc:
                self.errors += 1
                self._outage.failed(str(exc))
        try:
            self.run_once()  # leave the index close behind on a clean stop
        except (sqlite3.DatabaseError, OSError):
            pass
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
