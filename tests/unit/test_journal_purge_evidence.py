"""A purged month is accepted only with its signed purge record, written when it was old enough.

Forged purges (meta.db marks a month purged, its leaf hashes are kept, its files are deleted — no
key needed) used to pass ``verify``. Each forgery below must now fail ``verify`` (also with
``--min-tree-size``) naming the month's first record, and the journal refuses to open on it.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from msc.journal import Entry, Journal, KeyRing
from msc.journal.reader import Reader
from msc.journal.retention import purge_txn
from msc.journal.schema import partition_path
from msc.journal.selfcheck import JournalRefused
from msc.journal.verify import verify
from tests.timeline import Clock, run_for, utc

pytestmark = pytest.mark.timeout(180)
NAME = "TEST-MSC"


@pytest.fixture
def young(young_journal):
    return young_journal


@pytest.fixture
def old(old_journal):
    return old_journal


def copy(base: Path, tmp_path: Path) -> tuple[Path, KeyRing]:
    dst = tmp_path / "copy"
    shutil.copytree(base, dst)
    return dst, KeyRing(dst / "keys", dst / "keys" / "master.key")


def span(d: Path, period: str) -> tuple[int, int]:
    r = Reader(d / "journal")
    try:
        return r.period_range(period)
    finally:
        r.close()


def forge_purge(d: Path, period: str, *, purge_seq: int | None = None, first: int | None = None,
                last: int | None = None, keep_leaves: bool = True) -> tuple[int, int]:
    """What someone with a shell and no key can do: copy the month's leaf hashes aside, mark it
    purged in meta.db, delete its files."""
    jd = d / "journal"
    lo, hi = span(d, period)
    conn = sqlite3.connect(partition_path(jd, period))
    leaves = b"".join(leaf for (leaf,) in conn.execute("SELECT leaf FROM records ORDER BY seq"))
    conn.close()
    first = lo if first is None else first
    last = hi if last is None else last
    if keep_leaves:
        (jd / f"{period}.leaves").write_bytes(leaves)
    meta = sqlite3.connect(jd / "meta.db", isolation_level=None)
    cols = {r[1] for r in meta.execute("PRAGMA table_info(purged)")}
    if "purge_seq" in cols:
        meta.execute("INSERT INTO purged(period, first_seq, last_seq, purged_at, purge_seq) VALUES (?, ?, ?, 0, ?)",
                     (period, first, last, purge_seq))
    else:
        meta.execute("INSERT INTO purged(period, first_seq, last_seq, purged_at) VALUES (?, ?, ?, 0)", (period, first, last))
    meta.close()
    for name in (f"{period}.db", f"{period}.idx.db"):
        for suffix in ("", "-wal", "-shm"):
            (jd / f"{name}{suffix}").unlink(missing_ok=True)
    return lo, hi


async def append_admin(d: Path, ring: KeyRing, clock_t: float, entry: Entry, *, checkpoint: bool = True) -> int:
    """An ADMIN record written with the key (an insider, or an old version of msc)."""
    j = Journal(d / "journal", ring, name=NAME, clock=Clock(clock_t))
    await j.open()
    [seq] = await j.append(entry)
    if checkpoint:
        await j.checkpoint()
    await j.close()
    return seq


def assert_refused(d: Path, ring: KeyRing, first: int, period: str, *, expect: str) -> None:
    """verify fails at the month's first record (also given the journal's size as the floor),
    and the journal refuses to open, for the reason ``expect`` (the start-up check follows the
    purge record meta.db points at; verify searches the whole journal for one)."""
    res = verify(d / "journal", ring, name=NAME)
    assert not res.ok and res.first_bad == first, res.problems
    assert period in res.reason, res.reason
    assert not verify(d / "journal", ring, name=NAME, min_tree_size=res.tree_size).ok

    async def open_it():
        j = Journal(d / "journal", ring, name=NAME, clock=Clock(utc(2025, 2, 15)))
        await j.open()
        await j.close()

    with pytest.raises(JournalRefused, match=expect):
        asyncio.run(open_it())


def test_the_issue_forgery_a_one_month_old_month_marked_purged_is_refused(young, tmp_path):
    d, ring = copy(young, tmp_path)
    assert verify(d / "journal", ring, name=NAME).ok
    first, _last = forge_purge(d, "2025-01")
    assert_refused(d, ring, first, "2025-01", expect="no purge record says so")


# A table of further forgeries of a purge (each on a fresh copy).
def _points_at_an_ordinary_record(d, ring):
    lo, hi = span(d, "2025-02")
    return forge_purge(d, "2025-01", purge_seq=lo + 3), "not a purge record"


def _points_beyond_the_journal(d, ring):
    _lo, hi = span(d, "2025-02")
    return forge_purge(d, "2025-01", purge_seq=hi + 100), "not covered by a signed checkpoint"


def _insider_purge_record_too_young(d, ring):
    lo, hi = span(d, "2025-01")
    seq = asyncio.run(append_admin(d, ring, utc(2025, 2, 15, 13), Entry(
        kind="ADMIN", code="PURGE", txn=purge_txn("2025-01", lo, hi, 1096), text="RETENTION PURGE 2025-01")))
    return forge_purge(d, "2025-01", purge_seq=seq), "before its retention"


def _purge_record_for_other_bounds(d, ring):
    lo, hi = span(d, "2025-01")
    seq = asyncio.run(append_admin(d, ring, utc(2025, 2, 15, 13), Entry(
        kind="ADMIN", code="PURGE", txn=purge_txn("2025-01", lo, hi - 1, 1096), text="RETENTION PURGE 2025-01")))
    return forge_purge(d, "2025-01", purge_seq=seq), "not 2025-01"


def _leaves_not_kept(d, ring):
    return forge_purge(d, "2025-01", keep_leaves=False), "missing or incomplete"


def _shorter_range_claimed(d, ring):
    lo, hi = span(d, "2025-01")
    forge_purge(d, "2025-01", last=hi - 5)
    return (lo, hi - 5), "starts at"


YOUNG_FORGERIES = [_points_at_an_ordinary_record, _points_beyond_the_journal, _insider_purge_record_too_young,
                   _purge_record_for_other_bounds, _leaves_not_kept, _shorter_range_claimed]


@pytest.mark.parametrize("forge", YOUNG_FORGERIES, ids=[f.__name__.strip("_") for f in YOUNG_FORGERIES])
def test_forged_purges_of_a_young_month_are_refused(young, tmp_path, forge):
    d, ring = copy(young, tmp_path)
    (first, _last), expect = forge(d, ring)
    assert_refused(d, ring, first, "2025-01", expect=expect)


def _genuine_record_of_another_month(d, ring):
    async def go():
        j = Journal(d / "journal", ring, name=NAME, clock=Clock(utc(2025, 2, 15, 13)))
        await j.open()
        assert [p for p, _f, _l in await j.purge(1096)] == ["2022-01"]
        await j.close()

    asyncio.run(go())
    meta = sqlite3.connect(d / "journal" / "meta.db")
    (seq,) = meta.execute("SELECT purge_seq FROM purged WHERE period = '2022-01'").fetchone()
    meta.close()
    return forge_purge(d, "2022-02", purge_seq=seq), "is for 2022-01", "2022-02"


def _retention_below_three_years(d, ring):
    lo, hi = span(d, "2022-01")
    seq = asyncio.run(append_admin(d, ring, utc(2025, 2, 15, 13), Entry(
        kind="ADMIN", code="PURGE", txn=purge_txn("2022-01", lo, hi, 365), text="RETENTION PURGE 2022-01")))
    return forge_purge(d, "2022-01", purge_seq=seq), "retention of 365 days", "2022-01"


def _purge_record_never_signed(d, ring):
    """The purge record is in the journal, but no signed checkpoint covers it (the switch was
    stopped before it could write one): it proves nothing yet."""
    lo, hi = span(d, "2022-01")

    async def go():
        j = Journal(d / "journal", ring, name=NAME, clock=Clock(utc(2025, 2, 15, 13)))
        await j.open()
        [seq] = await j.append(Entry(kind="ADMIN", code="PURGE", txn=purge_txn("2022-01", lo, hi, 1096),
                                     text="RETENTION PURGE 2022-01"))
        shutil.copytree(d / "journal", d / "journal.snapshot")  # the files as a kill -9 leaves them
        await j.close()
        return seq

    seq = asyncio.run(go())
    shutil.rmtree(d / "journal")
    (d / "journal.snapshot").rename(d / "journal")
    (d / "journal.hwm").unlink()
    return forge_purge(d, "2022-01", purge_seq=seq), "not covered", "2022-01"


OLD_FORGERIES = [_genuine_record_of_another_month, _retention_below_three_years, _purge_record_never_signed]


@pytest.mark.parametrize("forge", OLD_FORGERIES, ids=[f.__name__.strip("_") for f in OLD_FORGERIES])
def test_forged_purges_of_old_months_are_refused(old, tmp_path, forge):
    d, ring = copy(old, tmp_path)
    (first, _last), expect, period = forge(d, ring)
    assert_refused(d, ring, first, period, expect=expect)


def test_a_genuine_purge_verifies_and_opens(old, tmp_path):
    d, ring = copy(old, tmp_path)

    async def go():
        j = Journal(d / "journal", ring, name=NAME, clock=Clock(utc(2025, 2, 15, 13)))
        await j.open()
        done = await j.purge(1096)
        await j.close()
        j = Journal(d / "journal", ring, name=NAME, clock=Clock(utc(2025, 2, 15, 14)))
        await j.open()  # the start-up self-check accepts it
        await j.close()
        return done

    assert [p for p, _f, _l in asyncio.run(go())] == ["2022-01"]
    res = verify(d / "journal", ring, name=NAME)
    assert res.ok and res.purged_records > 0, res.problems


@pytest.mark.timeout(300)
def test_proof_outlives_the_month_that_held_it(old, tmp_path):
    """January 2022's purge record is written in February 2025; three years later February 2025
    is purged too: its purge records' sealed bytes stay in meta.db, and verify still proves
    January's purge. Altering those kept bytes is caught."""
    d, ring = copy(old, tmp_path)

    async def go():
        clock = Clock(utc(2025, 2, 15, 13))
        j = Journal(d / "journal", ring, name=NAME, clock=clock, synchronous="normal", checkpoint_every=500)
        await j.open()
        assert [p for p, _f, _l in await j.purge(1096)] == ["2022-01"]
        await run_for(j, clock, utc(2028, 3, 15))
        done = await j.purge(1096)
        await j.close()
        return [p for p, _f, _l in done]

    done = asyncio.run(go())
    assert "2025-02" in done and done[0] == "2022-02"
    res = verify(d / "journal", ring, name=NAME)
    assert res.ok, res.problems
    meta = sqlite3.connect(d / "journal" / "meta.db", isolation_level=None)
    (seq, blob) = meta.execute("SELECT seq, blob FROM kept ORDER BY seq LIMIT 1").fetchone()
    forged = bytearray(blob)
    forged[-5] ^= 1
    meta.execute("UPDATE kept SET blob = ? WHERE seq = ?", (bytes(forged), seq))
    meta.close()
    res = verify(d / "journal", ring, name=NAME)
    assert not res.ok and "2022-01" in res.reason, res.problems
