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

    def __init__(self) -> None:
        self.heartbeats: list[float] = []

    def heartbeat(self, now: float) -> None:
        self.heartbeats.append(now)

    def runs(self) -> list:
        return []


class Node(BackgroundWork):
    def __init__(self, write_check) -> None:
        self.ledger = FakeLedger()
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
