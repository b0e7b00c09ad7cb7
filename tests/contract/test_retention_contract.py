"""Retention on every backend (JOURNAL.md "Retention"): ``Journal.purge`` reads the journal's
own timeline through the reader, writes the purge record, covers it by a signed checkpoint,
marks the month purged (its leaf hashes kept), destroys the month's key and deletes its records
(SQLite: the month's file; PostgreSQL: its two partitions dropped). Afterwards the month's
records are gone from search, the journal verifies (the purged month through its kept leaf
hashes and purge record), and the start-up self-check of a new Journal passes.

The journal "ran" from January 2022 to February 2025 with a record every 1.9 h (below the
timeline's gap), written as sealed rows straight to the backend's writer so that three years
take a few seconds (tests/timeline.py writes them one commit at a time)."""

from __future__ import annotations

import pytest

from msc.journal.records import Entry, JournalError, entry_columns, seal
from msc.journal.schema import Row
from msc.journal.search import Query, search
from msc.journal.tokens import tokens_for
from msc.journal.verify import verify
from msc.keyring import KeyRing, period_of
from tests.contract.test_journal_group_commit import NAME, journal_on
from tests.timeline import STEP_S, Clock, utc


@pytest.fixture
def keyring(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "master.key")
    ring.init()
    return ring


def rows_between(ring: KeyRing, start: float, end: float) -> list[Row]:
    """Twelve case records at ``start``, then a heartbeat every STEP_S until ``end``."""
    entries: list[tuple[float, Entry]] = [
        (start, Entry(kind="RECEIVED", user="TS0001", mnemonic="ICS1", mke="QW", text=f"ICS1.QW.CA0130000.NAM/OLD, RECORD{i}"))
        for i in range(12)]
    t = start
    while t + STEP_S < end:
        t += STEP_S
        entries.append((t, Entry(kind="ADMIN", text="HEARTBEAT")))
    rows = []
    for seq, (when, e) in enumerate(entries, start=1):
        ts = int(when * 1_000_000)
        period = period_of(ts)
        keys = ring.period(period)
        _meta, blob = seal(keys.aead, e, seq, ts, period)
        rows.append(Row(period, (seq, ts, *entry_columns(e)), blob,
                        tokens_for(keys.index_key, e.text, e.requester, e.recipient) if e.text else ()))
    return rows


async def test_purge_drops_the_month_destroys_its_key_and_the_journal_still_verifies(journal_backend, keyring,
                                                                                     tmp_path):
    start, end = utc(2022, 1, 15), utc(2025, 2, 15)
    rows = rows_between(keyring, start, end)
    w = journal_backend.journal_writer(keyring.signing_key())
    await w.start()
    for i in range(0, len(rows), 2000):
        await w.commit(rows[i:i + 2000])
    assert await w.checkpoint(NAME, rows[-1].values[1]) is not None
    await w.close()

    clock = Clock(end + 60)
    j = journal_on(journal_backend, keyring, tmp_path, clock=clock)
    await j.open()
    assert j.selfcheck is not None and j.selfcheck.ok, j.selfcheck
    for i in range(3):
        await j.append(Entry(kind="RECEIVED", user="TS0002", text=f"ICS1.QW.CA0130000.NAM/NEW, RECORD{i}"))
    with pytest.raises(JournalError):
        await j.purge(365)  # never below three years
    purged = await j.purge(1096, actor="AD0001")
    jan = [r for r in rows if r.period == "2022-01"]
    assert purged == [("2022-01", 1, jan[-1].values[0])]  # January 2022 only: February is not old enough
    assert await j.purge(1096) == []  # done once
    await j.close()

    assert keyring.period("2022-01", create=False) is None  # crypto-shredded
    r = journal_backend.journal_reader()
    try:
        assert "2022-01" not in r.periods() and r.periods()[0] == "2022-02"
        assert r.blob(1) is None and r.purged() == [("2022-01", 1, jan[-1].values[0])]
        assert r.purged_leaf_count("2022-01") == len(jan)
        texts = [rec.text for rec in search(r, keyring, Query(kind="RECEIVED"))]
        assert not any("OLD, RECORD" in t for t in texts) and sum("NEW, RECORD" in t for t in texts) == 3
        [rec] = [rec for rec in search(r, keyring, Query(kind="ADMIN", code="PURGE"))]
        assert rec.user == "AD0001" and rec.txn == f"PURGE:2022-01:1-{jan[-1].values[0]}:1096"
        res = verify(r, keyring, name=NAME)
        assert res.ok, res.problems
        assert res.purged_records == len(jan)
    finally:
        r.close()

    again = journal_on(journal_backend, keyring, tmp_path, clock=clock)  # a restart after the purge
    await again.open()
    assert again.selfcheck is not None and again.selfcheck.ok, again.selfcheck
    await again.close()


async def test_a_shifted_clock_purges_nothing_and_says_why(journal_backend, keyring, tmp_path):
    """The clock says three years passed; the journal's own timeline (records until March 2022)
    does not: nothing is purged, an ADMIN record says why."""
    rows = rows_between(keyring, utc(2022, 1, 15), utc(2022, 3, 1))
    w = journal_backend.journal_writer(keyring.signing_key())
    await w.start()
    await w.commit(rows)
    await w.checkpoint(NAME, rows[-1].values[1])
    await w.close()
    j = journal_on(journal_backend, keyring, tmp_path, clock=Clock(utc(2025, 6, 1)))
    await j.open()
    try:
        with pytest.raises(JournalError, match="refused"):
            await j.purge(1096)
    finally:
        await j.close()
    r = journal_backend.journal_reader()
    try:
        assert r.periods()[0] == "2022-01" and r.purged() == []
        assert [rec.code for rec in search(r, keyring, Query(kind="ADMIN", code="E502"))] == ["E502"]
    finally:
        r.close()
    assert keyring.period("2022-01", create=False) is not None  # its key kept
