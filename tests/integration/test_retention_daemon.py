"""The daemon's daily retention run, with an injected clock (Switch(clock=…)).

The switch's journal is a copy of one that ran from January 2022 to February 2025 (a record at
least every two hours). With its clock right, the daily run purges January 2022; with its clock
three years ahead it purges nothing — not the current month, not its key — and says why, in the
journal and the log.
"""

from __future__ import annotations

import shutil

import pytest

from msc.journal.schema import list_partitions
from msc.journal.search import Query, search
from msc.journal.verify import verify
from tests.timeline import Clock, utc

pytestmark = pytest.mark.timeout(120)


async def start(harness, old_journal, now: float):
    shutil.copytree(old_journal, harness.tmp / "data")
    sw = await harness.start_switch(clock=Clock(now))
    return sw


def admin(sw) -> list:
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(kind="ADMIN")))


async def test_the_daily_run_purges_what_clock_and_journal_agree_on(harness, old_journal):
    sw = await start(harness, old_journal, utc(2025, 2, 15, 13))
    assert [m for m, _f, _l in await sw.run_retention()] == ["2022-01"]
    assert await sw.run_retention() == []
    assert "2022-01" not in list_partitions(sw.settings.journal_dir)
    assert sw.journal.keyring.period("2022-01", create=False) is None
    [rec] = [r for r in admin(sw) if r.code == "PURGE"]
    assert rec.txn.startswith("PURGE:2022-01:1-")
    await harness.stop()
    assert verify(sw.settings.journal_dir, sw.journal.keyring, name="TEST-MSC").ok


@pytest.mark.parametrize("now", [utc(2028, 2, 15), utc(2026, 6, 1), utc(2023, 1, 1)],
                         ids=["three-years-ahead", "sixteen-months-ahead", "two-years-behind"])
async def test_with_the_clock_shifted_the_daily_run_purges_nothing_and_says_why(harness, old_journal, now):
    sw = await start(harness, old_journal, now)
    before = list_partitions(sw.settings.journal_dir)
    assert await sw.run_retention() == []
    assert list_partitions(sw.settings.journal_dir)[: len(before)] == before
    assert all(sw.journal.keyring.period(p, create=False) is not None for p in before)  # no key destroyed
    refusals = [r for r in admin(sw) if r.text.startswith("RETENTION PURGE REFUSED")]
    assert len(refusals) == 1 and "NOTHING WAS PURGED" in refusals[0].text
    assert sw.journal.healthy  # traffic goes on
