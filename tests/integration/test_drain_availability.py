"""A drain is scheduled downtime (issue 16; PPP §1.7.1; OPERATIONS.md "Availability and
reports"): the clean-stop mark is stamped when the switch stops accepting — the drain's start —
not at the stop's end. A switch draining an answer that takes 10 s (on its clock) is reported
down from the drain's start to the next start, as one scheduled outage; before, the mark came
after the drain and the report showed only the restart."""

from __future__ import annotations

import asyncio

import pytest

from msc.config.load import load
from msc.ops import reports
from msc.ops.availability import Ledger
from msc.server.switch import Switch
from msc.storage.backends import Backends
from tests.conftest import eventually

T0 = 1_800_000_000.0


class Clock:
    t = T0

    def __call__(self) -> float:
        return self.t


def stop_mark(settings) -> float | None:
    ledger = Ledger(settings.state_db)
    try:
        return ledger.runs()[-1].stopped
    finally:
        ledger.close()


@pytest.mark.parametrize(("drain_s", "restart_s"), [(10.0, 1.0), (0.5, 0.2), (300.0, 30.0)])
async def test_the_drains_time_is_a_scheduled_outage(harness, drain_s, restart_s):
    clock = Clock()
    stub = await harness.start_stub()
    stub.hold = True  # the upstream acknowledges the request and keeps its answer until told
    sw = await harness.start_switch(clock=clock, switch_extra="drain_timeout_s = 120")  # a bound for a hang
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send("ICS1D1.QV.CA0130000.LIC/DRAIN1")).type == "A"
    await eventually(lambda: stub.stats.received == 1, timeout=30)
    clock.t += 100  # served 100 s
    draining = asyncio.get_running_loop().create_task(sw.drain())
    await eventually(lambda: stop_mark(sw.settings) is not None, timeout=30)
    assert not draining.done()  # the answer is still awaited: the drain goes on …
    clock.t += drain_s  # … for drain_s on the switch's clock
    assert stub.command("hold off") == "OK"
    assert (await c.output()).text.startswith("ICS1D1.")  # the attached session is served to the end
    await asyncio.wait_for(draining, 60)
    assert stop_mark(sw.settings) == T0 + 100  # the drain's start, not its end
    clock.t += restart_s
    harness.switch = Switch(load(harness.tmp / "msc.toml"), clock=clock)
    await harness.switch.start()
    clock.t += 50
    doc = reports.availability(harness.switch.settings, clock.t, running=True, sources=Backends(harness.switch.settings))
    outages = doc["windows"]["30d"]["outages"]
    assert [(o["seconds"], o["scheduled"]) for o in outages] == [(round(drain_s + restart_s, 1), True)]
    assert doc["windows"]["30d"]["down_s"] == round(drain_s + restart_s, 1)
