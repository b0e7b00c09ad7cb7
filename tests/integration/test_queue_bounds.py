"""Queue bounds under bursts (issue 14 item 4; PROTOCOL.md §5 "Bounds"): the in-process switch
and stub, real sockets on loopback.

Every per-mnemonic queue bound holds however many messages arrive at once (admission reserves
the slots before the commit), the excess is refused to its sender with E307, and queued output
texts wait in the journal, not in memory. Each kind of burst is tried with a table of sizes.
"""

from __future__ import annotations

import asyncio

import pytest

from msc.journal.records import Kind
from msc.routing.delivery import READ_BATCH_BYTES
from tests.conftest import PASSWORD, eventually

pytestmark = pytest.mark.timeout(120)


def records(harness, **kw):
    from msc.journal.search import Query, search

    sw = harness.switch
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(**kw)))


def metric(sw, name: str, **labels) -> float:
    v = sw.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


class DepthWatch:
    """Samples the deepest queue on every event-loop turn while a burst runs."""

    def __init__(self, sw) -> None:
        self.sw = sw
        self.peak = 0
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sw.delivery.depth_max())
            await asyncio.sleep(0)

    async def stop(self) -> int:
        self._stop.set()
        await self.task
        return self.peak


def tally(result: str) -> dict[str, int]:
    """``BURST 120 A=40 E307=80`` → {"A": 40, "E307": 80}."""
    return {k: int(v) for k, v in (kv.split("=") for kv in result.split()[2:])}


# (queue_max, already queued, burst, text bytes, max_frame): the payload splits into parts when it
# is longer than max_frame allows, and every part takes a slot.
BURSTS = [
    (40, 0, 120, 20, 32768),  # the shape: 3 x queue_max to an empty queue
    (40, 17, 120, 20, 32768),  # a queue partly full already
    (40, 39, 10, 20, 32768),  # one slot left
    (30, 0, 90, 9000, 4096),  # three parts a message: 10 fit, the 11th does not
    (1, 0, 5, 20, 32768),  # the smallest queue
]


@pytest.mark.parametrize("queue_max,prefill,burst,size,max_frame", BURSTS)
async def test_an_upstream_burst_never_passes_queue_max_and_the_excess_is_refused_e307(
        harness, queue_max, prefill, burst, size, max_frame):
    stub = await harness.start_stub()
    sw = await harness.start_switch(switch_extra=f"queue_max = {queue_max}", max_frame=max_frame)
    await harness.wait_upstream()
    for i in range(prefill):
        assert await stub.push(f"ICS2.AM.CA0130000.TXT BEFORE {i}") == "A"
    parts = len(sw.router._split(f"ICS2.AM.CA0130000.TXT {'B' * size}".encode())[1])
    fits = (queue_max - prefill) // parts
    watch = DepthWatch(sw)
    result = tally(await stub.burst(burst, f"ICS2.AM.CA0130000.TXT {'B' * size}"))
    peak = await watch.stop()
    assert result == ({"A": fits, "E307": burst - fits} if fits < burst else {"A": burst})
    assert peak <= queue_max
    assert sw.delivery.depth("ICS2") == prefill + fits * parts <= queue_max
    assert sw.delivery.reserved("ICS2") == 0
    await sw.journal.flush()
    refused = [r for r in records(harness, kind=Kind.REJECTED) if r.code == "E307"]
    assert len(refused) == burst - fits and all(r.peer == "clets" for r in refused)
    assert metric(sw, "msc_delivery_refused_total", path="unsolicited") == burst - fits
    assert metric(sw, "msc_delivery_queue_limit") == queue_max
    # The queued texts wait in the journal: none is kept in memory for a logged-off terminal.
    assert metric(sw, "msc_delivery_held_bytes") == 0
    # The terminal logs on and gets every admitted output, in OSN order, read back from the journal.
    ics2 = await harness.operator("ICS2", "TS0002")
    got = [await ics2.output() for _ in range(prefill + fits * parts)]
    osns = [o.xid for o in got]  # an output's xid is its OSN
    assert osns == sorted(osns) and len(set(osns)) == len(osns)
    assert sum(1 for o in got if "BURST" in o.text or "B" * min(size, 50) in o.text) >= fits
    await eventually(lambda: sw.delivery.pending() == 0)
    assert metric(sw, "msc_delivery_read_back_total") >= prefill + fits * parts
    assert metric(sw, "msc_delivery_held_bytes") == 0
    # Room again: the same burst is admitted up to the bound once more.
    ics2.close()
    await eventually(lambda: not sw.delivery.attached("ICS2"))
    again = tally(await stub.burst(burst, f"ICS2.AM.CA0130000.TXT {'C' * size}"))
    assert again.get("A", 0) == min(burst, queue_max // parts)


async def test_a_request_keeps_its_answer_slot_while_a_burst_fills_the_askers_queue(harness):
    """The first part of an answer always has room: the request reserved it when accepted."""
    stub = await harness.start_stub()
    sw = await harness.start_switch(switch_extra="queue_max = 10")
    await harness.wait_upstream()
    stub.hold = True  # the answer waits in the stub
    ics1 = await harness.operator("ICS1", "TS0001")
    assert (await ics1.send("ICS1Q.QV.CA0130000.LIC/SLOT1")).type == "A"
    await eventually(lambda: stub.held)
    ics1.close()
    await eventually(lambda: not sw.delivery.attached("ICS1"))
    # 9 slots left of 10: the burst gets 9, the 10th is the request's.
    assert tally(await stub.burst(30, "ICS1.AM.CA0130000.TXT FILLER")) == {"A": 9, "E307": 21}
    assert sw.delivery.depth("ICS1") == 10
    stub.command("hold off")
    await eventually(lambda: sw.delivery.pending() == 10)
    assert sw.delivery.depth("ICS1") == 10 and sw.delivery.reserved("ICS1") == 0
    ics1 = await harness.operator("ICS1", "TS0001")
    texts = [(await ics1.output()).text for _ in range(10)]
    assert sum(t.startswith("ICS1Q.") for t in texts) == 1


# Local destinations of one administrative message: admitted to all of them or to none.
ADMIN_DESTINATIONS = ["ICS2", "ICS2,ICS3", "ICS3,ICS2", "CA0130000"]  # CA0130000: every admin station of the ORI


@pytest.mark.parametrize("dest", ADMIN_DESTINATIONS)
async def test_an_administrative_message_is_admitted_to_every_destination_or_to_none(harness, dest):
    stub = await harness.start_stub()
    sw = await harness.start_switch(switch_extra="queue_max = 3")
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")
    assert await stub.push("ICS2.AM.CA0130000.TXT ONE") == "A"
    assert await stub.push("ICS2.AM.CA0130000.TXT TWO") == "A"
    assert (await ics1.send(f"ICS1A1.AM.CA0130000.{dest}.TXT FIRST")).type == "A"  # ICS2's last slot
    before = {m: sw.delivery.depth(m) for m in ("ICS1", "ICS2", "ICS3")}
    assert before["ICS2"] == 3
    # ICS2 is full now: a message to any set of destinations including it reaches nobody.
    f = await ics1.send(f"ICS1A2.AM.CA0130000.{dest}.TXT SECOND")
    assert f.code == "E307" and "FULL" in f.text
    assert {m: sw.delivery.depth(m) for m in ("ICS1", "ICS2", "ICS3")} == before
    assert sum(sw.delivery.reserved(m) for m in ("ICS1", "ICS2", "ICS3")) == 0
    await sw.journal.flush()
    second = [r for r in records(harness) if "SECOND" in (r.text or "")]
    assert [(r.kind, r.code) for r in second] == [(Kind.REJECTED, "E307")]  # the refusal, no output
    assert metric(sw, "msc_delivery_refused_total", path="admin") == 1


async def test_texts_of_queued_administrative_messages_wait_in_the_journal(harness):
    """The issue's shape, small: 30 kB messages queued for a logged-off terminal cost no text in
    memory, whether the sender stays or leaves; they are read back in bounded batches."""
    await harness.start_stub()
    sw = await harness.start_switch(max_frame=65536, rate_limit=10000)
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")
    n, size = 40, 30000
    for i in range(n):
        f = await ics1.send(f"ICS1B{i}.AM.CA0130000.ICS2.TXT {i:04d} {'T' * size}")
        assert f.type == "A", f
    ics1.close()
    await eventually(lambda: sw.delivery.pending() == n)
    assert metric(sw, "msc_delivery_held_bytes") == 0
    ics2 = await harness.client(auto_ack=False)  # takes outputs, acknowledges none yet
    assert (await ics2.logon("ICS2", "TS0002", PASSWORD)).type == "A"
    first = [await ics2.output() for _ in range(3)]
    # At most one read-back batch per endpoint in memory, never the whole queue.
    assert metric(sw, "msc_delivery_held_bytes") <= READ_BATCH_BYTES + 2 * size
    ics2.close()
    ics2 = await harness.client()
    assert (await ics2.logon("ICS2", "TS0002", PASSWORD)).type == "A"
    got = {}
    while len(got) < n:
        o = await ics2.output()
        key = o.text.split(" TXT ", 1)[-1][:4] if " TXT " in o.text else o.text.split("TXT ", 1)[-1][:4]
        got[key] = o.text
    assert sorted(got) == [f"{i:04d}" for i in range(n)]
    assert all(t.endswith("T" * size) for t in got.values())
    assert first[0].text.split("TXT ", 1)[-1][:4] == "0000"
    await eventually(lambda: sw.delivery.pending() == 0)
    assert metric(sw, "msc_delivery_held_bytes") == 0
    assert metric(sw, "msc_delivery_read_back_bytes_total") >= n * size


# (max_inbound, burst): msc never has more than max_inbound upstream messages waiting for their
# commit; beyond it it stops reading the link, and everything is still answered.
INBOUND = [(2, 60), (4, 200), (16, 100)]


@pytest.mark.parametrize("max_inbound,burst", INBOUND)
async def test_an_upstream_burst_waits_in_the_upstream_not_in_msc(harness, max_inbound, burst):
    stub = await harness.start_stub()
    sw = await harness.start_switch(upstream_extra=f"max_inbound = {max_inbound}")
    await harness.wait_upstream()
    link = sw.router.links["clets"]
    peak = 0

    async def watch(done: asyncio.Event):
        nonlocal peak
        while not done.is_set():
            peak = max(peak, link.inbound)
            await asyncio.sleep(0)

    done = asyncio.Event()
    w = asyncio.create_task(watch(done))
    result = tally(await stub.burst(burst, "ICS2.AM.CA0130000.TXT INBOUND"))
    done.set()
    await w
    assert result == {"A": burst}
    assert peak <= max_inbound
    if burst > max_inbound:
        assert metric(sw, "msc_upstream_paused_total", upstream="clets") >= 1
    assert sw.delivery.pending() == burst
    # The link still works both ways afterwards.
    ics1 = await harness.operator("ICS1", "TS0001")
    assert (await ics1.send("ICS1P.QV.CA0130000.LIC/AFTER")).type == "A"
    assert (await ics1.output()).text.startswith("ICS1P.")


async def test_the_journal_writer_process_memory_is_a_metric(harness):
    """probe14 case 7: the writer process's resident size is watched (its own process metrics,
    beside msc serve's process_resident_memory_bytes)."""
    stub = await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    assert metric(sw, "msc_journal_writer_process_resident_memory_bytes") > 0
    assert metric(sw, "msc_journal_writer_process_start_time_seconds") > 0
    assert tally(await stub.burst(5, "ICS1.AM.CA0130000.TXT HELLO")) == {"A": 5}
