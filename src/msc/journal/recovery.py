"""Crash recovery when the journal is opened (JOURNAL.md "Crash safety").

What the writer re-reads from the files before it accepts anything — after a clean stop, a
crash, a failed commit or fsync, or a writer process that died:

* where the journal ends (:func:`last_position`), so sequence numbers continue without a gap;
* the Merkle frontier (:func:`rebuild_frontier`): the newest signed checkpoint's frontier plus
  the leaves committed after it;
* purges interrupted between recording a month purged and destroying its files
  (:meth:`msc.journal.writer.Writer.open`) or its key (:func:`finish_key_destruction`).

The start-up self-check that decides whether the journal may be appended to at all is
:mod:`msc.journal.selfcheck`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from msc.journal.merkle import Frontier
from msc.journal.schema import Checkpoint, read_leaves_file

ConnOf = Callable[[str], sqlite3.Connection]


def last_position(conn_of: ConnOf, periods: list[str], purged: list[tuple[str, int, int]]) -> tuple[int, int]:
    """(last seq, its ts) of the journal: the newest month with records, else the last purged seq."""
    for period in reversed(periods):
        row = conn_of(period).execute("SELECT seq, ts FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        if row:
            return row[0], row[1]
    return (purged[-1][2], 0) if purged else (0, 0)


def rebuild_frontier(directory: Path, conn_of: ConnOf, cp: Checkpoint | None, periods: list[str],
                     purged: list[tuple[str, int, int]]) -> Frontier:
    """Start from checkpoint ``cp``'s frontier and replay the leaves committed after it: from the
    kept leaf files of purged months, then from the months' records."""
    f = Frontier.from_bytes(cp.tree_size, cp.frontier) if cp else Frontier()
    for period, first, last in purged:
        if last <= f.size:
            continue
        data = read_leaves_file(directory, period)
        for i in range(max(first, f.size + 1), last + 1):
            off = (i - first) * 32
            f.append(data[off : off + 32])
    for period in periods:
        for (leaf,) in conn_of(period).execute("SELECT leaf FROM records WHERE seq > ? ORDER BY seq", (f.size,)):
            f.append(leaf)
    return f


def finish_key_destruction(source, keyring) -> None:
    """A purge that stopped between marking a month purged and destroying its key: finish it.
    ``source``: a SQLite journal directory or any backend's reader (the caller's to close)."""
    from msc.journal.reader import Reader

    reader = Reader(source) if isinstance(source, Path) else source
    try:
        purged = [p for p, _f, _l in reader.purged()]
    finally:
        if isinstance(source, Path):
            reader.close()
    for period in purged:
        if keyring.period(period, create=False) is not None:
            keyring.destroy_period(period)
