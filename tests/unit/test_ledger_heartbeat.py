"""The availability ledger's heartbeat (msc.server.background) outlives a ledger that cannot be
read for a while — a PostgreSQL database restarting under the switch: before, the first failed
read of the runs ended the heartbeat task, and the ledger then showed the running switch as down
for the rest of its run."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
import structlog

from msc.server import background
from msc.server.background import BackgroundWork
from tests.conftest import eventually


class FlakyLedger:
    """Heartbeats always land; the first reads of the runs fail (``fail_reads`` of them)."""

    run_id = 1

    def __init__(self, fail_reads: int) -> None:
        self.fail_reads = fail_reads
        self.beats = 0
        self.reads = 0

    def heartbeat(self, now: float) -> None:
        self.beats += 1

    def runs(self) -> list:
        self.reads += 1
        if self.reads <= self.fail_reads:
            raise OSError("the database is restarting")
        return []


class Gauges:
    def __init__(self) -> None:
        self.set_to: dict[str, float] = {}

    def labels(self, window: str):
        return SimpleNamespace(set=lambda v: self.set_to.__setitem__(window, v))


class Node(BackgroundWork):
    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.journal = None
        self.log = structlog.get_logger("msc.switch")
        self.clock = time.time
        self.write_check = None  # a single node (a pair's node: tests/unit/test_heartbeat_lease.py)
        self.availability = Gauges()
        self.metrics = SimpleNamespace(availability=self.availability)


async def test_the_heartbeat_goes_on_after_the_ledger_could_not_be_read(monkeypatch):
    monkeypatch.setattr(background, "HEARTBEAT_S", 0.001)
    for fail_reads in (1, 2, 3):  # the outage lasts one, two, three availability refreshes
        ledger = FlakyLedger(fail_reads)
        node = Node(ledger)
        task = asyncio.create_task(node._ledger_heartbeat())
        try:
            await eventually(lambda ledger=ledger, n=fail_reads: ledger.reads > n and ledger.beats > 12 * (n + 1))
            assert not task.done()
            assert node.availability.set_to  # refreshed once the ledger answered again
        finally:
            task.cancel()


# -- the journal's outages split the run (OPERATIONS.md "Availability and reports") ---------------

class Marks:
    """A ledger that records its marks: ("beat", t) and ("start", t), epoch seconds."""

    run_id = 1

    def __init__(self, fail: int = 0) -> None:
        self.marks: list[tuple[str, float]] = []
        self.fail = fail  # this many next writes raise (the ledger's database away)

    def _write(self, what: str, t: float) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("ledger database: connection refused")
        self.marks.append((what, t))

    def heartbeat(self, now: float) -> None:
        self._write("beat", now)

    def start(self, now: float) -> int:
        self._write("start", now)
        self.run_id += 1
        return self.run_id


class Journal:
    """What the beat reads of the journal: its ended outages and how far it serves (monotonic)."""

    def __init__(self, outages, serving_until) -> None:
        import collections

        self.outages = collections.deque(outages)
        self._until = serving_until

    def serving_until(self, now: float) -> float:
        return now if self._until is None else self._until


T = 1_800_000_000.0  # the switch's clock at the beat


#: (name, the journal's ended outages and serving_until — in seconds before the beat —, the marks)
BEATS = [
    ("serving", [], None, [("beat", 0.0)]),
    ("a commit outstanding for 3 s (a frozen database)", [], 3.0, [("beat", -3.0)]),
    ("an outage 10 s to 4 s ago", [(10.0, 4.0)], None, [("beat", -10.0), ("start", -4.0), ("beat", 0.0)]),
    ("two outages", [(30.0, 20.0), (10.0, 4.0)], None,
     [("beat", -30.0), ("start", -20.0), ("beat", -10.0), ("start", -4.0), ("beat", 0.0)]),
    ("an outage ended, another going on", [(30.0, 20.0)], 6.0, [("beat", -30.0), ("start", -20.0), ("beat", -6.0)]),
]


@pytest.mark.parametrize(("name", "ended", "until", "marks"), BEATS, ids=[b[0] for b in BEATS])
async def test_a_beat_ends_the_run_where_the_journal_stopped_and_starts_one_where_it_went_on(name, ended, until, marks):
    mono = time.monotonic()
    node = Node(Marks())
    node.clock = lambda: T
    node.journal = Journal([(mono - a, mono - b) for a, b in ended], None if until is None else mono - until)
    await node._ledger_beat()
    got = [(what, round(t - T, 1)) for what, t in node.ledger.marks]
    assert got == marks and not node.journal.outages


async def test_an_outage_is_kept_until_its_marks_are_written():
    mono = time.monotonic()
    node = Node(Marks(fail=1))
    node.clock = lambda: T
    node.journal = Journal([(mono - 10.0, mono - 4.0)], None)
    with pytest.raises(OSError):
        await node._ledger_beat()  # the ledger's database away: nothing lost
    assert len(node.journal.outages) == 1
    await node._ledger_beat()
    assert [(w, round(t - T, 1)) for w, t in node.ledger.marks] == [("beat", -10.0), ("start", -4.0), ("beat", 0.0)]


async def test_two_beats_at_once_write_each_outage_once():
    """The heartbeat's beat and a stop's (mark_stopped) at the same moment, after a database outage:
    each outage's marks are written once and no beat fails (two at once wrote the outage twice and
    the second popped an empty deque: ``ledger.stop_mark_failed … pop from an empty deque``)."""
    mono = time.monotonic()
    node = Node(Marks())
    node.clock = lambda: T
    node.journal = Journal([(mono - 10.0, mono - 4.0)], None)
    await asyncio.gather(node._ledger_beat(), node._ledger_beat())
    marks = [(w, round(t - T, 1)) for w, t in node.ledger.marks]
    assert marks == [("beat", -10.0), ("start", -4.0), ("beat", 0.0), ("beat", 0.0)], marks
