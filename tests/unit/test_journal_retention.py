"""Retention: whole months older than retention_days are purged and their keys destroyed."""

from __future__ import annotations

import datetime as dt

import pytest

from msc.journal import Entry, Journal, JournalError, KeyRing
from msc.journal.journal import month_expired
from msc.journal.search import Query, search
from msc.journal.verify import verify
from tests.timeline import build_continuous, run_for


def ts(y, m, d) -> float:
    return dt.datetime(y, m, d, 12, tzinfo=dt.UTC).timestamp()


def test_month_expired_boundaries():
    # January 2023 ends 2023-02-01; + 1096 days = 2026-02-01.
    assert not month_expired("2023-01", 1096, ts(2026, 1, 31))
    assert month_expired("2023-01", 1096, dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp())


async def test_purge_destroys_old_months_keeps_verification_and_is_recorded(tmp_path):
    """The journal ran from January 2022 to February 2025 (a record at least every 2 hours): by
    then January 2022 is older than 1096 days by the clock and by the journal's own timeline."""
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    j, clock = await build_continuous(tmp_path / "journal", ring, ts(2022, 1, 15), ts(2022, 2, 10),
                                      first_texts=[f"ICS1.QW.CA0130000.NAM/OLD, RECORD{i}" for i in range(12)])
    for i in range(4):
        await j.append(Entry(kind="RECEIVED", user="TS0001", text=f"ICS1.QW.CA0130000.NAM/FEB, RECORD{i}"))
    await run_for(j, clock, ts(2025, 2, 15))  # Jan 2022 is older than 1096 days; Feb 2022 is not yet
    for i in range(3):
        await j.append(Entry(kind="RECEIVED", user="TS0002", text=f"ICS1.QW.CA0130000.NAM/NEW, RECORD{i}"))
    with pytest.raises(JournalError):
        await j.purge(365)  # never below three years
    purged = await j.purge(1096)
    assert [p for p, _f, _l in purged] == ["2022-01"]
    assert await j.purge(1096) == []  # idempotent
    await j.close()
    assert not (tmp_path / "journal" / "2022-01.db").exists()
    assert (tmp_path / "journal" / "2022-01.leaves").exists()
    assert ring.period("2022-01", create=False) is None  # crypto-shredded
    texts = [r.text for r in search(tmp_path / "journal", ring, Query())]
    assert not any("OLD, RECORD" in t for t in texts)
    assert any("FEB, RECORD" in t for t in texts)
    assert any(t.startswith("RETENTION PURGE 2022-01 SEQ/1-") for t in texts)
    # The purge record carries its claim in its sealed metadata, covered by a signed checkpoint.
    [rec] = [r for r in search(tmp_path / "journal", ring, Query(kind="ADMIN")) if r.code == "PURGE"]
    assert rec.txn.startswith("PURGE:2022-01:1-") and rec.txn.endswith(":1096")
    res = verify(tmp_path / "journal", ring, name="MSC")
    assert res.ok, res.problems
    assert res.purged_records >= 12
    # The kept leaf hashes are still checked: altering one breaks verification.
    leaves = tmp_path / "journal" / "2022-01.leaves"
    data = bytearray(leaves.read_bytes())
    data[40] ^= 1
    leaves.write_bytes(bytes(data))
    assert not verify(tmp_path / "journal", ring, name="MSC").ok


async def test_key_rotation_rewraps_and_everything_still_reads(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    j = Journal(tmp_path / "journal", ring)
    await j.open()
    await j.append(Entry(kind="RECEIVED", text="ICS1.QW.CA0130000.NAM/ROTATE, ME"))
    await j.close()
    old_master = (tmp_path / "keys" / "master.key").read_bytes()
    old_id, new_id = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key").rotate()
    assert old_id != new_id and (tmp_path / "keys" / "master.key").read_bytes() != old_master
    fresh = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    assert [r.text for r in search(tmp_path / "journal", fresh, Query())] == ["ICS1.QW.CA0130000.NAM/ROTATE, ME"]
    assert verify(tmp_path / "journal", fresh, name="MSC").ok
    # The old master key no longer opens the ring.
    (tmp_path / "old.key").write_bytes(old_master)
    (tmp_path / "old.key").chmod(0o600)
    from msc.keyring import KeyError_

    stale = KeyRing(tmp_path / "keys", tmp_path / "old.key")
    with pytest.raises(KeyError_):
        stale.users_aead()
