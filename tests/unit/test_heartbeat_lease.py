"""A pair's node marks its run up in the availability ledger only while it holds the lease
(issue 16: a SIGSTOPped node, continued, stretched its run over its successor's and the outage
vanished from ``msc report availability``)."""

from __future__ import annotations

import asyncio

import pytest

from msc.server import background
from msc.server.background import BackgroundWork
from tests.waiting import HANG_S


class FakeLedger:
    run_id = 1

    def __init__(self, fail_stops: int = 0) -> None:
        self.heartbeats: list[float] = []
        self.stops: list[float] = []
        self.fail_stops = fail_stops  # the database refuses this many stop marks first
        self.closed = False

    def heartbeat(self, now: float) -> None:
        self.heartbeats.append(now)

    def stop(self, now: float) -> None:
        if self.fail_stops:
            self.fail_stops -= 1
            raise OSError("ledger database: connection refused")
        self.stops.append(now)

    def close(self) -> None:
        self.closed = True

    def runs(self) -> list:
        return []


class Node(BackgroundWork):
    def __init__(self, write_check) -> None:
        self.ledger = FakeLedger()
        self.journal = None  # (its outages: tests/unit/test_ledger_heartbeat.py)
        self.write_check = write_check
        self.ticks = 0
        self.refreshes = 0  # once every 12 rounds of the heartbeat loop

    def clock(self) -> float:
        self.ticks += 1
        return float(self.ticks)

    def refresh_availability(self) -> None:
        self.refreshes += 1


def lost() -> None:
    raise RuntimeError("node node-a no longer holds the lease")


@pytest.mark.parametrize("write_check, beats", [(None, True), (lambda: None, True), (lost, False)])
def test_heartbeats_only_while_the_lease_is_held(monkeypatch, write_check, beats):
    monkeypatch.setattr(background, "HEARTBEAT_S", 0)
    node = Node(write_check)

    async def run() -> None:
        task = asyncio.create_task(node._ledger_heartbeat())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_S
        while node.refreshes < 3 and loop.time() < deadline:  # the loop went round 25+ times
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert node.holds_lease() is beats
    assert bool(node.ledger.heartbeats) is beats


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **_: object) -> None:
        self.warnings.append(event)


@pytest.mark.parametrize(("write_check", "fail_stops", "stops", "warnings"), [
    (None, 0, [1.0, 2.0], []),  # a single node: marked at the drain's start (the ledger keeps that one)
    (lambda: None, 0, [1.0, 2.0], []),  # a pair's node holding the lease
    (lost, 0, [], []),  # a node that lost the lease marks nothing: its outage is unscheduled
    (None, 1, [2.0], ["ledger.stop_mark_failed"]),  # the first write refused: retried at the stop's end
    (None, 2, [], ["ledger.stop_mark_failed"] * 2),  # never written: the stop goes on all the same
])
def test_the_stop_mark_at_the_drains_start_and_at_the_stops_end(write_check, fail_stops, stops, warnings):
    """Switch.drain (and stop) call mark_stopped as the listeners close, stop calls close_ledger
    at its end (msc.server.background; OPERATIONS.md "Availability and reports"): the mark is
    written while the lease is held, a refused write never stops the stop, and the ledger is
    closed whatever happened."""
    node = Node(write_check)
    node.ledger = FakeLedger(fail_stops)
    node.log = Log()
    ledger = node.ledger

    async def run() -> None:
        await node.mark_stopped()  # the drain's start (clock: 1.0)
        await node.close_ledger()  # the stop's end (clock: 2.0)

    asyncio.run(run())
    assert ledger.stops == stops and node.log.warnings == warnings and ledger.closed
