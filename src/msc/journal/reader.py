"""Read-only access to a journal (SQLite backend): the :class:`~msc.journal.interfaces.JournalReader`.

Search, verify, export, the self-check and store-and-forward's read-back use it; it never takes
the writer's lock and opens every file read-only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from msc.journal.indexer import index_path
from msc.journal.interfaces import TXN_SUMMARY_SQL, TxnSummary
from msc.journal.schema import (
    COLUMNS,
    Checkpoint,
    StoredRecord,
    connect,
    journal_id,
    last_checkpoint,
    leaves_path,
    list_partitions,
    load_checkpoints,
    load_gaps,
    load_purge_seqs,
    load_purged,
    partition_path,
)


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

    def records(self, period: str, first_seq: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """A month's records with ``seq >= first_seq``, in sequence order (at most ``limit``:
        then the statement is read to completion before the first is returned, so no read
        transaction stays open between a caller's steps)."""
        n = len(COLUMNS)
        sql = f"SELECT {', '.join(COLUMNS)}, blob, leaf FROM records WHERE seq >= ? ORDER BY seq"
        if limit is None:
            cur: Iterable[tuple] = self.conn(period).execute(sql, (first_seq,))
        else:
            cur = self.conn(period).execute(sql + " LIMIT ?", (first_seq, limit)).fetchall()
        for r in cur:
            yield StoredRecord(r[:n], r[n], r[n + 1])

    def candidates(self, period: str, *, where: Mapping[str, object], tokens: Sequence[bytes],
                   start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        """Sealed records of a month that may match a search, in sequence order: metadata columns
        equal to ``where``, carrying every blind-index token in ``tokens``, ``start <= ts < end``
        (µs). A superset where tokens are concerned (a byte match may straddle two packed tokens
        of the unindexed tail): the caller confirms each by decrypting (msc.journal.search).

        Below the month's ``indexed_upto`` the batch-built index (``YYYY-MM.idx.db``) drives
        (CROSS JOIN fixes the loop order: index range first, then record lookups by sequence);
        above it, the short tail is scanned."""
        for col in where:
            if col not in COLUMNS:
                raise ValueError(f"not a metadata column: {col!r}")
        conn = self.conn(period)
        upto = attach_index(conn, self.dir, period)
        common: list[str] = []
        cparams: list[object] = []
        if start is not None:
            lo = seq_bound(conn, start)
            if lo is not None:
                common.append("seq >= ?")
                cparams.append(lo)
        if end is not None:
            hi = seq_bound(conn, end)
            if hi is not None:
                common.append("seq < ?")
                cparams.append(hi)
        for col, value in where.items():
            common.append(f"{col} = ?")
            cparams.append(value)
        toks = list(tokens)
        outer: str | None
        key: str | None
        if toks:
            outer, key, value = "ix_token", "token", toks[0]
        else:
            driver = next((c for c in ("txn", "user", "mnemonic") if where.get(c) is not None), None)
            outer, key, value = (f"ix_{driver}", driver, where.get(driver)) if driver else (None, None, None)
        if outer is not None:
            head_sql = (f"SELECT r.blob FROM ix.{outer} AS i CROSS JOIN records AS r ON r.seq = i.seq "
                        f"WHERE i.{key} = ? AND i.seq <= ?")
            hparams: list[object] = [value, upto]
            for t in toks[1:]:
                head_sql += " AND r.seq IN (SELECT seq FROM ix.ix_token WHERE token = ?)"
                hparams.append(t)
            for c in common:
                head_sql += " AND " + c.replace("seq", "i.seq", 1) if c.startswith("seq") else " AND r." + c
            head_sql += " ORDER BY i.seq"
        else:
            head_sql = "SELECT blob FROM records WHERE " + " AND ".join(["seq <= ?", *common]) + " ORDER BY seq"
            hparams = [upto]
        tail: list[str] = ["seq > ?"]
        tparams: list[object] = [upto]
        for t in toks:
            # A byte match may straddle two packed tokens: decryption confirms every hit.
            tail.append("instr(tokens, ?) > 0")
            tparams.append(t)
        tail_sql = "SELECT blob FROM records WHERE " + " AND ".join(tail + common) + " ORDER BY seq"
        parts = [(tail_sql, tparams)] if upto == 0 else [(head_sql, hparams), (tail_sql, tparams)]
        for sql, params in parts:
            for (blob,) in conn.execute(sql, [*params, *cparams]):
                yield blob

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

    def next_checkpoint(self, after: int) -> Checkpoint | None:
        """The oldest checkpoint of tree size greater than ``after``."""
        def first(m: sqlite3.Connection) -> Checkpoint | None:
            row = m.execute("SELECT tree_size, root, ts, signature, frontier FROM checkpoints WHERE tree_size > ? "
                            "ORDER BY tree_size LIMIT 1", (after,)).fetchone()
            return Checkpoint(*row) if row else None

        return self._with_meta(first, None)

    def purge_seqs(self) -> dict[str, int | None]:
        return self._with_meta(load_purge_seqs, {})

    def purged_leaf_count(self, period: str) -> int:
        """How many leaf hashes the month's ``.leaves`` file holds (0: no file). A file whose
        size is not a multiple of 32 counts its whole hashes plus one (never "complete")."""
        try:
            size = leaves_path(self.dir, period).stat().st_size
        except OSError:
            return 0
        return size // 32 + (1 if size % 32 else 0)

    def purged_leaves(self, period: str, start: int, count: int) -> bytes:
        try:
            with open(leaves_path(self.dir, period), "rb") as f:
                f.seek(start * 32)
                return f.read(count * 32)
        except OSError:
            return b""

    def kept(self) -> dict[int, bytes]:
        """Sealed bytes of purge records whose own month was purged, by sequence number."""
        def load(m: sqlite3.Connection) -> dict[int, bytes]:
            try:
                return dict(m.execute("SELECT seq, blob FROM kept").fetchall())
            except sqlite3.OperationalError:  # a meta.db from before the table existed
                return {}

        return self._with_meta(load, {})

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

    def metadata(self, period: str, columns: Sequence[str], *, first_seq: int = 0, last_seq: int | None = None,
                 start: int | None = None, end: int | None = None, kinds: Sequence[str] | None = None,
                 where: Mapping[str, object] | None = None, not_null: Sequence[str] = ()) -> Iterator[tuple]:
        """Metadata columns of a month's records (see the interface), by the sequence range."""
        for col in (*columns, *(where or {}), *not_null):
            if col not in COLUMNS:
                raise ValueError(f"not a metadata column: {col!r}")
        conds: list[str] = ["seq >= ?"]
        params: list[object] = [first_seq]
        if last_seq is not None:
            conds.append("seq <= ?")
            params.append(last_seq)
        if start is not None:
            conds.append("ts >= ?")
            params.append(start)
        if end is not None:
            conds.append("ts < ?")
            params.append(end)
        if kinds is not None:
            conds.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        for col, value in (where or {}).items():
            conds.append(f"{col} = ?")
            params.append(value)
        conds.extend(f"{col} IS NOT NULL" for col in not_null)
        yield from self.conn(period).execute(
            f"SELECT {', '.join(columns)} FROM records WHERE {' AND '.join(conds)} ORDER BY seq", params)

    def seq_at(self, period: str, ts: int) -> int | None:
        return seq_bound(self.conn(period), ts)

    def end(self, period: str, up_to: int | None = None) -> tuple[int, int] | None:
        conn = self.conn(period)
        last = up_to if up_to is not None else conn.execute("SELECT MAX(seq) FROM records").fetchone()[0]
        if last is None:
            return None
        row = conn.execute("SELECT ts FROM records WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (last,)).fetchone()
        return None if row is None else (last, row[0])

    def txn_summary(self, period: str, first_seq: int, last_seq: int) -> list[TxnSummary]:
        # One grouped pass (the hot month has no txn index; a correlated subquery would be quadratic).
        aggregates = TXN_SUMMARY_SQL.format(ne_am="mke IS NOT 'AM'", ne_msc="peer IS NOT 'MSC'")
        sql = (f"SELECT txn, {aggregates} FROM records "
               "WHERE seq >= ? AND seq <= ? AND txn IS NOT NULL AND kind IN ('FORWARDED', 'RECEIVED', 'UNDELIVERED') "
               "GROUP BY txn")
        return [TxnSummary(*r) for r in self.conn(period).execute(sql, (first_seq, last_seq))]

    def rows(self, period: str, where: str = "", params: Sequence = (), *, columns: str = "*") -> Iterator[tuple]:
        sql = f"SELECT {columns} FROM records {('WHERE ' + where) if where else ''} ORDER BY seq"
        yield from self.conn(period).execute(sql, params)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def seq_bound(conn: sqlite3.Connection, ts: int) -> int | None:
    """The smallest sequence number whose timestamp is >= ts (timestamps never decrease)."""
    # Two statements: SQLite answers a lone MIN() or MAX() from the b-tree, but scans for both.
    lo: int | None = conn.execute("SELECT MIN(seq) FROM records").fetchone()[0]
    if lo is None:
        return None
    hi: int = conn.execute("SELECT MAX(seq) FROM records").fetchone()[0]
    if conn.execute("SELECT ts FROM records WHERE seq = ?", (hi,)).fetchone()[0] < ts:
        return hi + 1
    while lo < hi:
        mid = (lo + hi) // 2
        r = conn.execute("SELECT ts FROM records WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)).fetchone()
        if r[0] < ts:
            lo = mid + 1
        else:
            hi = mid
    return lo


def attach_index(conn: sqlite3.Connection, directory: Path, period: str) -> int:
    """Attach the month's index read-only (if any); return the sequence it covers up to."""
    path = index_path(directory, period)
    if not path.exists():
        return 0
    if not any(row[1] == "ix" for row in conn.execute("PRAGMA database_list")):
        conn.execute("ATTACH DATABASE ? AS ix", (f"file:{path}?mode=ro",))
    try:
        rows = dict(conn.execute("SELECT k, v FROM ix.meta"))
    except sqlite3.DatabaseError:
        conn.execute("DETACH DATABASE ix")
        return 0
    upto: int = rows.get("indexed_upto", 0)
    return upto
