"""The misuse report (PPP §1.10; ``msc report misuse``) from the journal's plaintext metadata on
every backend (``JournalReader.metadata``): the same counts on SQLite and PostgreSQL, by the
records' times — a range across a month boundary, the limits of the range, business hours in
the switch's time zone."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from msc.journal.records import Entry, entry_columns, seal
from msc.journal.schema import Row
from msc.keyring import KeyRing, period_of
from msc.ops import reports

TZ = "America/Los_Angeles"


def at(y, m, d, h, minute=0) -> float:  # local time in TZ
    from zoneinfo import ZoneInfo

    return dt.datetime(y, m, d, h, minute, tzinfo=ZoneInfo(TZ)).timestamp()


# (when, entry): a Monday in November (business hours 07-19 local), a Saturday, December.
SCRIPT = [
    (at(2026, 11, 23, 9), Entry(kind="RECEIVED", direction="in", peer="ICS1", user="TS0001", mke="QW", text="X")),
    (at(2026, 11, 23, 6, 59), Entry(kind="RECEIVED", direction="in", peer="ICS1", user="TS0001", mke="QW", text="X")),
    (at(2026, 11, 23, 19), Entry(kind="RECEIVED", direction="in", peer="ICS1", user="TS0002", mke="QW", text="X")),
    (at(2026, 11, 28, 12), Entry(kind="RECEIVED", direction="in", peer="ICS1", user="TS0002", mke="QV", text="X")),
    (at(2026, 11, 28, 12), Entry(kind="RECEIVED", direction="out", peer="ICS1", user="TS0002", mke="QV", text="X")),
    (at(2026, 11, 28, 13), Entry(kind="RECEIVED", direction="in", peer="NCIC", user="TS0002", mke="QV", text="X")),
    (at(2026, 11, 28, 14), Entry(kind="RECEIVED", direction="in", peer="ICS1", user="TS0002", mke="LOGON", text="X")),
    (at(2026, 11, 24, 10), Entry(kind="SESSION", peer="ICS1", user="TS0001", code="E208", text="SELF")),
    (at(2026, 11, 24, 11), Entry(kind="REJECTED", peer="ICS1", user="TS0002", code="E209", text="PUR")),
    (at(2026, 11, 24, 12), Entry(kind="REJECTED", peer="ICS1", user="TS0003", mke="LOGON", code="E202", text="PW")),
    (at(2026, 11, 24, 12), Entry(kind="REJECTED", peer="ICS1", user="TS0003", mke="LOGON", code="E203", text="LOCK")),
    (at(2026, 11, 24, 13), Entry(kind="SESSION", peer="CLI", user="AD0001", code="E202", text="CLI")),
    (at(2026, 11, 24, 13), Entry(kind="SESSION", peer="WEB", user="AD0001", code="E202", text="WEB")),
    (at(2026, 12, 1, 20), Entry(kind="RECEIVED", direction="in", peer="ICS1", user="TS0001", mke="QW", text="X")),
    (at(2026, 12, 2, 10), Entry(kind="SESSION", peer="ICS1", user="TS0001", code="E208", text="SELF")),
]


@pytest.fixture
async def sources(journal_backend, tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "master.key")
    ring.init()
    order = sorted(range(len(SCRIPT)), key=lambda i: SCRIPT[i][0])  # times never decrease with seq
    rows = []
    for seq, i in enumerate(order, start=1):
        when, e = SCRIPT[i]
        ts = int(when * 1_000_000)
        period = period_of(ts)
        keys = ring.period(period)
        _m, blob = seal(keys.aead, e, seq, ts, period)
        rows.append(Row(period, (seq, ts, *entry_columns(e)), blob, ()))
    w = journal_backend.journal_writer(ring.signing_key())
    await w.start()
    await w.commit(rows)
    await w.close()
    return SimpleNamespace(journal_reader=journal_backend.journal_reader)


SETTINGS = SimpleNamespace(config=SimpleNamespace(switch=SimpleNamespace(timezone=TZ),
                                                  upstream=[SimpleNamespace(name="NCIC")]))


def test_the_misuse_report_counts_the_same_on_every_backend(sources):
    doc = reports.misuse(SETTINGS, at(2026, 11, 1, 0), at(2026, 12, 31, 0), sources=sources)
    assert doc["self_inquiries"] == [{"user": "TS0001", "count": 2}]
    assert doc["refused_cori_purposes"] == [{"user": "TS0002", "count": 1}]
    assert sorted((r["user"], r["count"]) for r in doc["logon_failures"]) == [("AD0001", 1), ("TS0003", 2)]
    # 06:59 and 20:00 local are outside 07-19; 19:00 is too (the end is exclusive); a Saturday is.
    assert sorted((r["user"], r["messages"], r["of_total"]) for r in doc["after_hours"]) == [
        ("TS0001", 2, 3), ("TS0002", 2, 2)]


def test_the_range_is_by_time_start_included_end_excluded(sources):
    doc = reports.misuse(SETTINGS, at(2026, 11, 24, 10), at(2026, 12, 2, 10), sources=sources)
    assert doc["self_inquiries"] == [{"user": "TS0001", "count": 1}]  # Nov 24 10:00 in, Dec 2 10:00 out
    # Dec 1 20:00 (TS0001) and Saturday Nov 28 (TS0002) are in; Nov 23 06:59 and 19:00 are before it.
    assert sorted((r["user"], r["messages"]) for r in doc["after_hours"]) == [("TS0001", 1), ("TS0002", 1)]
    doc = reports.misuse(SETTINGS, at(2025, 1, 1, 0), at(2025, 2, 1, 0), sources=sources)
    assert doc["self_inquiries"] == [] and doc["after_hours"] == [] and doc["logon_failures"] == []
