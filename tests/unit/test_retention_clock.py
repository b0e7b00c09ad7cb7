"""A purge never trusts the wall clock alone (JOURNAL.md "Retention").

With the clock three years ahead, ``msc journal purge`` and the daemon's daily run used to delete
the current month and destroy its key. Now a month goes only when the journal's own timeline
(record timestamps, without the silences it did not observe) also says it is older than the
retention, and the purge refuses — journaled — when the clock and the journal disagree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc.journal import Entry, Journal, JournalError, KeyRing
from msc.journal.retention import (
    CLOCK_SKEW_S,
    DISAGREEMENT_S,
    PurgeRefused,
    Timeline,
    current_month,
    month_end,
    month_expired,
    observed_seconds,
    plan,
)
from msc.journal.schema import list_partitions
from msc.journal.search import Query, search
from msc.journal.verify import verify
from tests.timeline import Clock, utc

pytestmark = pytest.mark.timeout(120)
DAY = 86400.0
NAME = "TEST-MSC"


def months(first: str, n: int) -> tuple[tuple[str, int, int], ...]:
    y, m = map(int, first.split("-"))
    out = []
    for i in range(n):
        out.append((f"{y:04d}-{m:02d}", i * 10 + 1, i * 10 + 10))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return tuple(out)


# -- the decision, as a pure function -------------------------------------------------------------

THREE_YEARS = Timeline(months("2022-01", 38), utc(2025, 2, 15))  # ran without a pause, last record 2025-02-15


@pytest.mark.parametrize("now, due, refused", [
    # the clock and the journal agree: January 2022 is due, February 2022 not yet
    (utc(2025, 2, 15, 13), ["2022-01"], None),
    # the clock three years ahead (the case): refused, nothing due
    (utc(2028, 2, 15), [], "SAYS"),
    # the clock one year ahead
    (utc(2026, 2, 15), [], "SAYS"),
    # the clock behind the journal's newest record
    (utc(2024, 2, 15), [], "BEHIND"),
    (utc(2025, 2, 15) - CLOCK_SKEW_S - 1, [], "BEHIND"),
    # a few minutes behind is clock skew, not disagreement
    (utc(2025, 2, 15) - CLOCK_SKEW_S + 1, ["2022-01"], None),
    # ten days ahead: February 2022 is due by the clock but ten days short by the journal: it waits
    (utc(2025, 3, 10), ["2022-01"], None),
])
def test_plan_against_a_journal_that_ran_three_years(now, due, refused):
    p = plan(THREE_YEARS, 1096, now)
    assert [m for m, _f, _l in p.due] == due
    if refused:
        assert p.refused and refused in p.refused
    else:
        assert p.refused is None


def test_a_gap_in_the_timeline_is_time_the_journal_did_not_see():
    # The clock jumped three years ahead on 2025-02-15 and the switch kept writing: the jump is a
    # gap, so by the journal only the time since counts — nothing is due and the clock disagrees.
    jumped = Timeline(months("2022-01", 38), utc(2028, 2, 20), gaps=((utc(2025, 2, 15), utc(2028, 2, 15)),))
    p = plan(jumped, 1096, utc(2028, 2, 20))
    assert p.due == [] and p.refused and "GAP" in p.refused
    # A real 10-day outage only delays: on the day January 2022 would be due it waits 10 days.
    outage = Timeline(months("2022-01", 38), utc(2025, 2, 3), gaps=((utc(2023, 6, 1), utc(2023, 6, 11)),))
    p = plan(outage, 1096, utc(2025, 2, 3))
    assert p.due == [] and p.refused is None and p.waiting[0][0] == "2022-01"
    later = Timeline(outage.months, utc(2025, 2, 12), outage.gaps)
    assert [m for m, _f, _l in plan(later, 1096, utc(2025, 2, 12)).due] == ["2022-01"]


def test_below_three_years_is_refused():
    with pytest.raises(JournalError):
        plan(THREE_YEARS, 1095, utc(2025, 2, 15))


@st.composite
def timelines(draw):
    n = draw(st.integers(1, 48))
    first = draw(st.sampled_from(["2020-01", "2021-07", "2022-12"]))
    ms = months(first, n)
    start = month_end(ms[0][0]) - 20 * DAY
    last_ts = draw(st.floats(start, start + 8 * 365 * DAY))
    gaps = []
    t = start
    for _ in range(draw(st.integers(0, 4))):
        a = draw(st.floats(t, last_ts))
        b = draw(st.floats(a, last_ts))
        gaps.append((a, b))
        t = b
    return Timeline(ms, last_ts, tuple(gaps))


@settings(max_examples=300, deadline=None)
@given(timelines(), st.floats(utc(2019, 1, 1), utc(2035, 1, 1)), st.sampled_from([1096, 1200, 2000]))
def test_no_month_is_due_unless_both_the_clock_and_the_journal_say_so(tl, now, days):
    p = plan(tl, days, now)
    keep = days * DAY
    if now < tl.last_ts - CLOCK_SKEW_S:
        assert p.refused and not p.due
    if p.refused:
        assert p.due == []
    names = [m for m, _f, _l in tl.months]
    due = [m for m, _f, _l in p.due]
    assert due == names[: len(due)]  # oldest first, no hole left behind
    for m in due:
        assert month_expired(m, days, now) and m < current_month(now)
        assert observed_seconds(month_end(m), tl.last_ts, tl.gaps) >= keep
    # Whenever the clock makes a month due that the journal says is far from it: refused.
    for m in names:
        if month_expired(m, days, now) and m < current_month(now) and now >= tl.last_ts - CLOCK_SKEW_S:
            if observed_seconds(month_end(m), tl.last_ts, tl.gaps) < keep - DISAGREEMENT_S:
                assert p.refused


# -- the purge itself, on a journal that ran three years ---------------------------------------------

def copy(base: Path, tmp_path: Path) -> tuple[Path, KeyRing]:
    dst = tmp_path / "copy"
    shutil.copytree(base, dst)
    return dst, KeyRing(dst / "keys", dst / "keys" / "master.key")


def refusals(d: Path, ring: KeyRing) -> list[str]:
    return [r.text for r in search(d / "journal", ring, Query(kind="ADMIN")) if r.text.startswith("RETENTION PURGE REFUSED")]


# Clock shifts: (where the clock is when the purge runs, whether the switch wrote under it first)
SHIFTS = [
    ("three-years-ahead", utc(2028, 2, 15), False),
    ("three-years-ahead-after-running-a-day", utc(2028, 2, 15), True),
    ("one-year-ahead", utc(2026, 2, 15), False),
    ("four-months-ahead-after-running", utc(2025, 6, 15), True),
    ("a-year-behind", utc(2024, 2, 15), False),
    ("a-year-behind-after-running", utc(2024, 2, 15), True),
]


@pytest.mark.parametrize("name, now, wrote", SHIFTS, ids=[s[0] for s in SHIFTS])
async def test_a_shifted_clock_purges_nothing_and_the_refusal_is_journaled(old_journal, tmp_path, name, now, wrote):
    d, ring = copy(old_journal, tmp_path)
    before = list_partitions(d / "journal")
    clock = Clock(now)
    j = Journal(d / "journal", ring, name=NAME, clock=clock)
    await j.open()
    if wrote:  # the switch ran under the wrong clock: records with its times, hourly checkpoints
        for _ in range(24):
            clock.t += 3600
            await j.append(Entry(kind="ADMIN", text="RUNNING"))
    with pytest.raises(PurgeRefused) as exc:
        await j.purge(1096)
    await j.close()
    assert "nothing was purged" in str(exc.value)
    # Nothing deleted, no key destroyed — least of all the current month's.
    assert list_partitions(d / "journal")[: len(before)] == before
    assert all(ring.period(p, create=False) is not None for p in before)
    assert len(refusals(d, ring)) == 1
    assert verify(d / "journal", ring, name=NAME).ok


async def test_a_journal_that_recorded_a_future_time_keeps_refusing_until_real_time_passes_it(old_journal, tmp_path):
    """Record times never go backwards: whatever was journaled under a clock three years ahead
    keeps that time, so once the clock is corrected it is *behind* the journal. The purge keeps
    refusing (clearly) rather than trusting either; it never deletes anything early."""
    d, ring = copy(old_journal, tmp_path)
    clock = Clock(utc(2028, 2, 15))
    j = Journal(d / "journal", ring, name=NAME, clock=clock)
    await j.open()
    with pytest.raises(PurgeRefused, match="SAYS 2022-"):
        await j.purge(1096)
    clock.t = utc(2025, 2, 15, 13)  # NTP corrected it
    with pytest.raises(PurgeRefused, match="IS BEHIND THE JOURNAL'S NEWEST RECORD"):
        await j.purge(1096)
    await j.close()
    assert len(refusals(d, ring)) == 2 and "2022-01" in list_partitions(d / "journal")
    assert verify(d / "journal", ring, name=NAME).ok
