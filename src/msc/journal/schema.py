"""The journal's on-disk layout (SQLite backend): files, tables, row types, connections.

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

The writer (:mod:`msc.journal.writer`) and the reader (:mod:`msc.journal.reader`) share what is
here; :class:`Row`, :class:`StoredRecord` and :class:`Checkpoint` are also the types of the
backend-neutral interfaces (:mod:`msc.journal.interfaces`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgspec

from msc.config.files import private_db
from msc.journal.records import META_COLUMNS

#: The code of a retention purge's ADMIN record (msc.journal.retention).
PURGE_CODE = "PURGE"
TIMELINE_GAP_S = 2 * 3600  # a longer silence between two records is time the journal did not see

PARTITION_RE = re.compile(r"(\d{4})-(\d{2})\.db\Z")  # not YYYY-MM.idx.db

#: The metadata columns of ``records``, in stored order: the one definition is the record's
#: (:data:`msc.journal.records.META_COLUMNS`).
COLUMNS = META_COLUMNS
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



class Row(msgspec.Struct, array_like=True, frozen=True):
    """One sealed record ready for the writer: metadata columns, canonical bytes, tokens."""

    period: str
    values: tuple[int | str | None, ...]  # in COLUMNS order
    blob: bytes
    tokens: Sequence[bytes]

    @property
    def seq(self) -> int:
        return cast(int, self.values[0])

    @property
    def ts(self) -> int:
        """Microseconds since the epoch, UTC."""
        return cast(int, self.values[1])


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


class Checkpoint(msgspec.Struct, array_like=True, frozen=True):
    """A signed checkpoint: the Merkle root of the first ``tree_size`` records, its time (µs),
    the Ed25519 signature of :func:`~msc.journal.bundle_verifier.checkpoint_message`, and the
    frontier (:class:`~msc.journal.merkle.Frontier`) to continue the tree from."""

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


def leaves_path(directory: Path, period: str) -> Path:
    """The leaf hashes kept of a purged month (32 bytes each, in sequence order)."""
    return directory / f"{period}.leaves"


def read_leaves_file(directory: Path, period: str) -> bytes:
    return leaves_path(directory, period).read_bytes()


