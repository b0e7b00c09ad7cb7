"""The search indexer across month rollovers (an injected clock moves the journal through months).

It used to break from the third monthly file on: each pass re-opened an older month and closed
that very connection again, so every pass ended in "Cannot operate on a closed database" before
reaching the current month, which stopped being indexed; the error went to stdout.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from msc.journal import Entry, Journal, KeyRing
from msc.journal.indexer import Indexer, open_index, progress
from msc.journal.reader import Reader
from msc.journal.schema import list_partitions
from msc.journal.search import Query, search
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def month_start(y: int, m: int, day: int = 3) -> float:
    return dt.datetime(y, m, day, 8, tzinfo=dt.UTC).timestamp()


def indexed_upto(directory, period) -> int:
    conn = open_index(directory, period, readonly=True)
    try:
        return progress(conn)
    finally:
        if conn is not None:
            conn.close()


def month_ranges(directory) -> dict[str, tuple[int, int]]:
    r = Reader(directory)
    try:
        return {p: r.period_range(p) for p in r.periods()}
    finally:
        r.close()


# (year, month) sequences the clock walks through: consecutive months, a year boundary, a month
# skipped (the switch was off), and months revisited after new records in the newest one.
WALKS = [
    [(2026, 1), (2026, 2), (2026, 3), (2026, 4), (2026, 5), (2026, 6)],
    [(2025, 11), (2025, 12), (2026, 1), (2026, 2)],
    [(2026, 3), (2026, 5), (2026, 6), (2026, 9)],
]


@pytest.mark.parametrize("writer, walk", [("process", WALKS[0]), ("process", WALKS[1]), ("process", WALKS[2]),
                                          ("thread", WALKS[0])],
                         ids=["process-six-months", "process-year-boundary", "process-gaps", "thread-six-months"])
async def test_every_month_is_indexed_across_rollovers_and_errors_never_reach_stdout(tmp_path, capfd, writer, walk):
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    clock = Clock(month_start(*walk[0]))
    d = tmp_path / "journal"
    j = Journal(d, ring, clock=clock, writer=writer)
    await j.open()
    try:
        for k, (y, m) in enumerate(walk):
            clock.t = month_start(y, m)
            for i in range(5):
                await j.append(Entry(kind="RECEIVED", user=f"U{k:05d}", mnemonic="ICS1", text=f"ICS1.QW.CA0130000.NAM/M{k}, R{i}"))
            # Each month, once written, is fully indexed within the indexer's interval (1 s) —
            # including the current one, which is what stopped before.
            await j.flush()
            ranges = month_ranges(d)
            await eventually(lambda ranges=ranges: all(indexed_upto(d, p) >= hi for p, (_lo, hi) in ranges.items()))
        # Records keep arriving in the newest month after several rollovers: still indexed.
        for i in range(5):
            await j.append(Entry(kind="RECEIVED", user="LATE01", mnemonic="ICS2", text=f"ICS2.QW.CA0130000.NAM/LATE, R{i}"))
        await j.flush()
        newest = list_partitions(d)[-1]
        last = j.last_seq
        await eventually(lambda: indexed_upto(d, newest) >= last)
    finally:
        await j.close()
    assert len(list_partitions(d)) == len(walk)
    # Search finds each month's records through its index.
    for k, _ym in enumerate(walk):
        assert len(list(search(d, ring, Query(user=f"U{k:05d}")))) == 5
    assert len(list(search(d, ring, Query(user="LATE01")))) == 5
    out, err = capfd.readouterr()
    assert "closed database" not in out + err
    assert out == "", out  # nothing of the journal's on stdout
    for line in err.splitlines():  # whatever the writer logged is one JSON object per line
        if line.strip():
            json.loads(line)


def test_indexer_passes_over_many_months_without_error(tmp_path):
    """The Indexer alone, run pass by pass over a journal of eight months with no index yet."""
    import asyncio

    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    clock = Clock(month_start(2026, 1))
    d = tmp_path / "journal"

    async def build(months):
        j = Journal(d, ring, clock=clock)
        await j.open()
        for y, m in months:
            clock.t = month_start(y, m)
            await j.append(*[Entry(kind="RECEIVED", user="TS0001", text=f"{y}-{m} {i}") for i in range(3)])
        # The Journal's own indexer is stopped by close(); the test drives a fresh one below.
        await j.close()

    def drop_indexes():
        for f in d.glob("*.idx.db*"):
            f.unlink()

    asyncio.run(build([(2026, m) for m in range(1, 9)]))
    drop_indexes()
    ix = Indexer(d)
    for _ in range(4):
        ix.run_once()
    assert ix.errors == 0
    for p, (_lo, hi) in month_ranges(d).items():
        assert indexed_upto(d, p) == hi, p
    # A ninth month arrives (its index built by nobody else): the next pass covers it too.
    asyncio.run(build([(2026, 9)]))
    (d / "2026-09.idx.db").unlink()
    ix.run_once()
    assert ix.errors == 0
    for p, (_lo, hi) in month_ranges(d).items():
        assert indexed_upto(d, p) == hi, p


def test_an_index_that_cannot_be_written_is_said_once_until_a_pass_succeeds(tmp_path):
    """A failing disk under the index (here: a month's index file that cannot be opened — a
    directory where the file should be): the indexer tries every second, and each pass failed was a
    warning of its own. Now one warning for the outage (``journal.indexer_error``, with the month),
    every failure still counted, and one ``journal.indexer_recovered`` when a pass succeeds."""
    import asyncio
    import shutil

    from structlog.testing import capture_logs

    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    clock = Clock(month_start(2026, 1))
    d = tmp_path / "journal"

    async def build():
        j = Journal(d, ring, clock=clock)
        await j.open()
        await j.append(*[Entry(kind="RECEIVED", user="TS0001", text=f"r {i}") for i in range(3)])
        await j.close()

    asyncio.run(build())
    for f in d.glob("*.idx.db*"):
        f.unlink()
    [period] = list_partitions(d)
    blocker = d / f"{period}.idx.db"
    blocker.mkdir()
    ix = Indexer(d)
    with capture_logs() as logs:
        for _ in range(5):
            ix.run_once()
        assert ix.errors == 5
        shutil.rmtree(blocker)
        ix.run_once()
        ix.run_once()
    said = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("journal.indexer")]
    assert said == [("journal.indexer_error", "warning"), ("journal.indexer_recovered", "info")], said
    began, ended = (e for e in logs if e["event"].startswith("journal.indexer"))
    assert began["period"] == period and began["error"] and "exc_info" not in began
    assert ended["failed"] == 5 and ended["was"] == began["error"]
    assert indexed_upto(d, period) == month_ranges(d)[period][1]
