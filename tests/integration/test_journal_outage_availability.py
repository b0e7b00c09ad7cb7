"""A journal that cannot commit is downtime in the availability ledger, from the moment the first
failed or stalled commit began (OPERATIONS.md "Availability and reports"; PPP §1.7.1: the MSC
passes transactions — and passes none it cannot record).

The real Switch on the embedded SQLite backend (the ledger in ``state.db``), its journal's
commits held or failed by the test (tests.faults.FaultyWriter: a frozen database, a disk that
hangs or fails). Before, a run was up from its start to its last heartbeat whatever its journal
did: a single node recorded no outage at all, and a pair's node stepping down after a frozen
database had its outage start when a heartbeat written during the freeze finally landed
(newcomer7: 2.4 s late). Each test prints how far the outage's start is from the first stalled or
failed commit's send (the measurement); it asserts only what follows from the order of events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from msc.ops.availability import Ledger, between
from tests.conftest import eventually
from tests.faults import FaultyWriter

pytestmark = pytest.mark.timeout(180)

STALL_S = 0.5  # the journal's STALL_S in these tests (the product's is 2 s)
AM = "ICS1{ref}.AM.CA0130000.ICS2.TXT OUTAGE {ref}"


def runs(sw) -> list:
    ledger = Ledger(sw.settings.state_db)
    try:
        return ledger.runs()
    finally:
        ledger.close()


def outages(sw) -> list:
    rs = runs(sw)
    return between(rs, rs[0].started, time.time(), current=max(rs, key=lambda r: r.started).id).outages


@pytest.fixture
async def switch(harness, monkeypatch):
    import msc.journal.journal as journal_module
    import msc.server.background as background

    monkeypatch.setattr(background, "HEARTBEAT_S", 0.05)  # the ledger's beat (5 s in the product)
    monkeypatch.setattr(journal_module, "STALL_S", STALL_S)
    sw = await harness.start_switch()
    c = await harness.operator()
    faults = FaultyWriter.install(sw.journal)
    yield sw, c, faults
    if faults.hold is not None:
        faults.hold.set()


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    first: str  # how the first commit of the outage ends: "stalls, then commits" | "fails" | "stalls, then fails"


KINDS = [
    Kind("a frozen database: the commit stalls, then commits", "stalls, then commits"),
    Kind("a failing disk: commits fail (E501), then one commits", "fails"),
    Kind("a database that hangs, then fails the commit", "stalls, then fails"),
]


async def _outage(sw, c, faults, kind: Kind, ref: str) -> tuple[float, float, float]:
    """One outage of ``kind``; (when its first message was sent, the latest its commit can have
    begun, the earliest a commit can have succeeded again) — epoch seconds."""
    if kind.first == "fails":
        faults.fail_commits = True
        sent = time.time()
        f = await c.send(AM.format(ref=ref + "F"))
        began_by = time.time()
        assert f.type == "N" and f.code == "E501"
        back = time.time()  # (no commit can succeed before the fault is let go)
        faults.fail_commits = False
    else:
        faults.hold = asyncio.Event()
        sent = time.time()
        answer = asyncio.ensure_future(c.send(AM.format(ref=ref + "S")))
        await eventually(lambda: sw.journal.down_since() is not None)  # stalled for STALL_S
        began_by = time.time() - STALL_S  # (down_since: the commit began at least STALL_S ago)
        if kind.first == "stalls, then fails":
            faults.fail_next_commits = 1
        back = time.time()  # (no commit can succeed before the hold is let go)
        faults.hold.set()
        f = await answer
        assert (f.type, f.code) == (("A", None) if kind.first == "stalls, then commits" else ("N", "E501"))
    if kind.first != "stalls, then commits":
        assert (await c.send(AM.format(ref=ref + "A"))).type == "A"  # the journal commits again
    return sent, began_by, back


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
async def test_a_journal_outage_is_downtime_from_the_first_stalled_or_failed_commit(switch, kind):
    sw, c, faults = switch
    sent, began_by, back = await _outage(sw, c, faults, kind, "K")
    await eventually(lambda: len(runs(sw)) == 2)  # the run split at the outage
    (o,) = outages(sw)
    print(f"\n{kind.name}: outage from {o.start - sent:+.3f} s after the first message was sent, "
          f"{o.seconds:.3f} s long (the ledger's start is the commit's start)")
    assert sent <= o.start <= began_by + 0.01  # (0.01: the monotonic-to-epoch conversion's two reads)
    assert o.end >= back - 0.01 and not o.scheduled
    assert o.end <= time.time()
    # and the switch serves on, its new run heartbeating
    assert (await c.send(AM.format(ref="AFTER"))).type == "A"


async def test_two_outages_are_two_gaps_and_the_time_between_is_up(switch):
    sw, c, faults = switch
    first = await _outage(sw, c, faults, KINDS[0], "1")
    second = await _outage(sw, c, faults, KINDS[1], "2")
    await eventually(lambda: len(runs(sw)) == 3)
    a, b = outages(sw)
    assert first[0] <= a.start <= first[1] + 0.01 and a.end <= second[0]
    assert second[0] <= b.start <= second[1] + 0.01


async def test_a_slow_commit_below_the_stall_bound_is_no_outage(switch, monkeypatch):
    import msc.journal.journal as journal_module

    sw, c, faults = switch
    monkeypatch.setattr(journal_module, "STALL_S", 3600.0)  # however slow this machine is: below it
    faults.hold = asyncio.Event()
    answer = asyncio.ensure_future(c.send(AM.format(ref="SLOW")))
    await eventually(lambda: faults.commits >= 1)
    beats = len(runs(sw))
    faults.hold.set()
    assert (await answer).type == "A"
    assert (await c.send(AM.format(ref="NEXT"))).type == "A"
    rs = runs(sw)
    assert len(rs) == beats == 1 and outages(sw) == []


async def test_a_heartbeat_during_a_stall_claims_no_time_after_the_commit_began(switch):
    """While the commit stalls the run's heartbeat stays at the commit's start: a heartbeat write
    that lands late (a ledger in the same frozen database) cannot stretch the run."""
    sw, c, faults = switch
    faults.hold = asyncio.Event()
    sent = time.time()
    answer = asyncio.ensure_future(c.send(AM.format(ref="HB")))
    await eventually(lambda: sw.journal.down_since() is not None)
    began_by = time.time() - STALL_S
    seen = time.time()
    await eventually(lambda: runs(sw)[-1].heartbeat <= began_by + 0.01 and runs(sw)[-1].heartbeat >= sent)
    # (a beat after ``seen`` wrote it: the run ends where the commit began, not at the beat)
    assert runs(sw)[-1].heartbeat < seen
    faults.hold.set()
    assert (await answer).type == "A"


async def test_a_stop_while_the_journal_is_down_is_unscheduled_until_the_stop_and_scheduled_after(harness, switch):
    """An administrator stops a switch whose journal is down (a full disk, a dead database): the
    time since the first stalled commit was unscheduled downtime, only what follows the stop is
    scheduled — not one scheduled outage from the stop mark hiding the stall."""
    sw, c, faults = switch
    faults.hold = asyncio.Event()
    sent = time.time()
    answer = asyncio.ensure_future(c.send(AM.format(ref="STOP")))
    await eventually(lambda: sw.journal.down_since() is not None)
    began_by = time.time() - STALL_S
    stopping = asyncio.ensure_future(sw.stop())
    await eventually(lambda: runs(sw)[-1].stopped is not None)  # the stop mark, written as the stop began
    faults.hold.set()  # (the stop then closes the journal: the held commit may end)
    await asyncio.wait_for(stopping, 60)
    answer.cancel()
    harness.switch = None
    rs = runs(sw)
    unscheduled, scheduled = between(rs, rs[0].started, time.time(), current=None).outages
    assert sent <= unscheduled.start <= began_by + 0.01 and not unscheduled.scheduled
    assert scheduled.scheduled and scheduled.start == unscheduled.end
