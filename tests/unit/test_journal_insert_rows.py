"""The writer's multi-row INSERTs keep few cached statements (probe14 case 7: every batch size
a burst used kept its last batch's record blobs in SQLite's statement cache for good)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sqlite3

import pytest

from msc.journal.writer import MAX_ROWS_PER_STATEMENT, insert_rows

HEAD = "INSERT INTO t(a, b) VALUES "
ROW = "(?, ?)"

#: Row counts of batches: every count inserts every row, in order, with power-of-two statements.
COUNTS = [0, 1, 2, 3, 7, 37, 255, 256, 1023, 1024, 1025, 2500, 4096 + 17]


def table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, cached_statements=256)
    conn.execute("CREATE TABLE t(a INTEGER, b BLOB)")
    return conn


class Recording:
    """The connection, with the SQL texts executed through it recorded."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.texts: list[str] = []

    def execute(self, sql: str, params=()):
        self.texts.append(sql)
        return self.conn.execute(sql, params)


@pytest.mark.parametrize("n", COUNTS)
def test_every_row_is_inserted_in_order_by_power_of_two_statements(n):
    conn = table()
    rec = Recording(conn)
    insert_rows(rec, HEAD, ROW, [(i, b"x") for i in range(n)])
    sizes = [t.count(ROW) for t in rec.texts]
    assert [a for (a,) in conn.execute("SELECT a FROM t ORDER BY rowid")] == list(range(n))
    assert sum(sizes) == n
    assert all(s & (s - 1) == 0 and s <= MAX_ROWS_PER_STATEMENT for s in sizes)
    assert len(sizes) <= bin(n % MAX_ROWS_PER_STATEMENT).count("1") + n // MAX_ROWS_PER_STATEMENT


def test_batches_of_every_size_leave_at_most_eleven_insert_texts():
    rec = Recording(table())
    for n in range(1, 300):
        insert_rows(rec, HEAD, ROW, [(i, b"x") for i in range(n)])
    assert len(set(rec.texts)) <= MAX_ROWS_PER_STATEMENT.bit_length()  # 1, 2, 4 … 1024: 11


def _sqlite_memory_used():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        fn = lib.sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int64
    return fn


def test_what_the_statement_cache_keeps_after_a_burst_of_large_records_is_bounded():
    used = _sqlite_memory_used()
    if used is None:
        pytest.skip("no shared libsqlite3 to ask")
    conn = table()
    blob = os.urandom(30_000)
    before = used()
    for n in range(1, 120):  # batches of every size up to 119 rows of 30 kB (a burst's commits)
        insert_rows(conn, HEAD, ROW, [(i, blob) for i in range(n)])
    conn.execute("DELETE FROM t")
    conn.execute("VACUUM")
    kept = used() - before
    # Power-of-two statements 1 … 64 keep at most 127 rows' blobs (3.8 MB); one statement per
    # size kept 7,140 rows' (214 MB).
    assert kept < 127 * 30_000 + 8 * 2**20, kept
