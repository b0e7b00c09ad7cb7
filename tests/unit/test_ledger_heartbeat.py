"""The availability ledger's heartbeat (msc.server.background) outlives a ledger that cannot be
read for a while — a PostgreSQL database restarting under the switch: before, the first failed
read of the runs ended the heartbeat task, and the ledger then showed the running switch as down
for the rest of its run."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

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
