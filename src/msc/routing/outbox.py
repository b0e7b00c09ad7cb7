"""The durable side of store-and-forward: output queues and OSNs in ``data_dir/state.db``.

The journal is the source of truth: an output is *created* by a ``RECEIVED`` record that carries
its ``osn`` and *finished* by a ``DELIVERED`` or ``UNDELIVERED`` record with that ``osn``. This
table is a snapshot of the result, written in the background and holding only effects of records
already committed, so that a restart does not have to read months of journal:

* ``applied`` is a journal sequence number such that every record up to it is reflected here;
* on start the switch loads the snapshot and replays the journal records after ``applied``
  that carry an ``osn`` (:func:`replay`), which is idempotent.

A crash between a journal commit and the next snapshot therefore loses nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from msc.config.files import open_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    endpoint TEXT NOT NULL,
    osn INTEGER NOT NULL,
    seq INTEGER NOT NULL,          -- the journal record holding the output's text
    mnemonic TEXT NOT NULL,
    txn TEXT,
    created REAL NOT NULL,
    PRIMARY KEY(endpoint, osn)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS osn(endpoint TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied(k TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Stored:
    endpoint: str
    osn: int
    seq: int
    mnemonic: str
    txn: str | None
    created: float


@runtime_checkable
class OutboxBackend(Protocol):
    """Delivery queues and OSNs as any storage backend keeps them (checked by the contract suite
    ``tests/contract/``). Blocking calls, made from a worker thread."""

    def load(self) -> tuple[list[Stored], dict[str, int], int]:
        """(outputs waiting, by endpoint then OSN; last OSN per endpoint; the journal sequence
        number up to which every record is reflected)."""

    def apply(self, adds: Iterable[Stored], removes: Iterable[tuple[str, int]], osns: dict[str, int],
              applied: int) -> None:
        """One atomic step of the snapshot: outputs added and removed (endpoint, OSN), last OSNs
        (an endpoint's OSN never moves back), and the journal position now reflected."""

    def close(self) -> None:
        """Release the connection."""


class OutboxStore:
    """The SQLite :class:`OutboxBackend` (``data_dir/state.db``)."""

    def __init__(self, path: Path) -> None:
        # NORMAL is enough: anything lost here is rebuilt from the journal (see module doc).
        self._conn = open_sqlite(path, SCHEMA, synchronous="NORMAL")
        self._lock = threading.Lock()

    def load(self) -> tuple[list[Stored], dict[str, int], int]:
        with self._lock:
            rows = [Stored(*r) for r in self._conn.execute(
                "SELECT endpoint, osn, seq, mnemonic, txn, created FROM outbox ORDER BY endpoint, osn")]
            osns = dict(self._conn.execute("SELECT endpoint, last FROM osn"))
            row = self._conn.execute("SELECT seq FROM applied WHERE k = 'journal'").fetchone()
        return rows, osns, row[0] if row else 0

    def apply(self, adds: Iterable[Stored], removes: Iterable[tuple[str, int]], osns: dict[str, int],
              applied: int) -> None:
        with self._lock:
            c = self._conn
            c.execute("BEGIN")
            try:
                c.executemany("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?)",
                              [(a.endpoint, a.osn, a.seq, a.mnemonic, a.txn, a.created) for a in adds])
                c.executemany("DELETE FROM outbox WHERE endpoint = ? AND osn = ?", list(removes))
                c.executemany("INSERT INTO osn(endpoint, last) VALUES (?, ?) "
                              "ON CONFLICT(endpoint) DO UPDATE SET last = MAX(last, excluded.last)", list(osns.items()))
                c.execute("INSERT OR REPLACE INTO applied(k, seq) VALUES ('journal', ?)", (applied,))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()
