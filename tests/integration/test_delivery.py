"""Delivery that never loses a message (issue: delivery) — store-and-forward, 24 x 7, TAMF, AM,
expiry, bounds, upstream failover and slow readers, over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time

import pytest

from msc.journal.search import Query, search
from tests.conftest import PASSWORD, eventually
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(90)


def journal(harness, **q):
    sw = harness.switch
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(**q)))


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t


async def test_offline_terminal_gets_everything_in_order_after_logon(harness):
    await harness.start_stub(latency_ms=300)
    sw = await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    for i in range(3):
        assert (await c.send(f"ICS1Q{i}.QV.CA0130000.LIC/OFF{i}")).type == "A"
    c.close()  # gone before the answers come back
    await eventually(lambda: sw.delivery.pending() == 3)
    assert await harness.stubs[0].push("ICS1.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W777") == "A"
    assert sw.delivery.pending() == 4
    back = await harness.operator("ICS1", "TS0001")
    outs = [await back.output() for _ in range(4)]
    assert [o.xid for o in outs] == sorted(o.xid for o in outs) == list(range(outs[0].xid, outs[0].xid + 4))
    assert [o.text.split(".")[0] for o in outs] == ["ICS1Q0", "ICS1Q1", "ICS1Q2", "ICS1"]
    await eventually(lambda: sw.delivery.pending() == 0)
    await sw.journal.flush()
    for o in outs:
        kinds = [r.kind for r in journal(harness, mnemonic="ICS1") if r.osn == o.xid]
        assert kinds[0] == "RECEIVED" and "QUEUED" in kinds and kinds[-1] == "DELIVERED", (o.xid, kinds)
        assert kinds.index("QUEUED") < kinds.index("DELIVERED")


async def test_outputs_and_osns_survive_a_restart(harness):
    await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    assert (await c.send("ICS1A.QW.CA0130000.NAM/ONE.DOB/19800101")).type == "A"
    first = await c.output()
    c.close()
    assert await harness.stubs[0].push("ICS1.AM.CA0130000.TXT WAITING 1") == "A"
    assert await harness.stubs[0].push("ICS1.AM.CA0130000.TXT WAITING 2") == "A"
    await sw.stop()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    assert sw.delivery.pending() == 2
    back = await harness.operator("ICS1", "TS0001")
    a, b = await back.output(), await back.output()
    assert (a.xid, b.xid) == (first.xid + 1, first.xid + 2)  # the OSN sequence went on
    assert (a.text, b.text) == ("ICS1.AM.CA0130000.TXT WAITING 1", "ICS1.AM.CA0130000.TXT WAITING 2")


async def test_hit_confirmation_for_a_station_not_staffed_24x7_lands_on_the_duty_station(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    duty = await harness.operator("ICS1", "TS0001")  # ICS1 is the duty station and staffed 24x7
    ics2 = await harness.operator("ICS2", "TS0002")  # ICS2 is not staffed 24x7
    assert await stub.push("ICS2.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W1") == "A"
    assert (await duty.output()).text == "ICS2.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W1"
    # Ordinary administrative traffic for ICS2 still goes to ICS2.
    assert await stub.push("ICS2.AM.CA0130000.TXT FOR ICS2") == "A"
    assert (await ics2.output()).text == "ICS2.AM.CA0130000.TXT FOR ICS2"
    assert duty.outputs.empty()
    # A YQ for a 24x7 station that is connected stays there; to an ORI it goes to the duty station.
    assert await stub.push("CA0130000.YQ.CA0130000.NAM/ROE, RICH") == "A"
    assert (await duty.output()).text.startswith("CA0130000.YQ.")
    assert ics2.outputs.empty()


async def test_hit_confirmation_for_a_24x7_station_that_is_offline_goes_to_the_duty_station(harness):
    stub = await harness.start_stub()
    await harness.start_switch(extra='''
[[station]]
mnemonic = "ICS3"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
addresses = ["127.0.0.1"]
authorizations = ["cjis"]
staffed_24x7 = true
''')
    await harness.wait_upstream()
    duty = await harness.operator("ICS1", "TS0001")
    assert await stub.push("ICS3.YQ.CA0130000.NAM/X") == "A"  # ICS3 is 24x7 but not connected
    assert (await duty.output()).text == "ICS3.YQ.CA0130000.NAM/X"


@pytest.mark.parametrize("local_time,expected", [
    ("2026-11-28 19:00", "ICS1"),   # Saturday evening: inside SAT 18:00 → 07:00
    ("2026-11-29 06:30", "ICS1"),   # Sunday morning: still inside Saturday's window
    ("2026-11-29 12:00", "ICS2"),   # Sunday noon: outside
    ("2026-11-27 19:00", "ICS2"),   # Friday evening: not a listed day
    ("2026-11-30 06:30", "ICS1"),   # Monday early: inside Sunday's window
])
async def test_tamf_redirects_only_inside_its_window(harness, local_time, expected):
    import zoneinfo

    when = dt.datetime.fromisoformat(local_time).replace(tzinfo=zoneinfo.ZoneInfo("America/Los_Angeles"))
    stub = await harness.start_stub()
    await harness.start_switch(clock=Clock(when), extra='''
[[forward]]
from = "ICS2"
to = "ICS1"
days = ["SAT", "SUN"]
start = "18:00"
end = "07:00"
timezone = "America/Los_Angeles"
''')
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")
    ics2 = await harness.operator("ICS2", "TS0002")
    assert await stub.push("ICS2.AM.CA0130000.TXT AFTER HOURS?") == "A"
    got = ics1 if expected == "ICS1" else ics2
    other = ics2 if expected == "ICS1" else ics1
    assert (await got.output()).text == "ICS2.AM.CA0130000.TXT AFTER HOURS?"
    assert other.outputs.empty()


async def test_administrative_messages_to_mnemonics_groups_oris_and_remote(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")
    ics2 = await harness.operator("ICS2", "TS0002")
    printer = await harness.client()
    assert (await printer.send("ECP1.BIND")).type == "A"
    # To a group (APB = ICS1 + ECP1) and a local mnemonic, and to an ORI msc does not host.
    a = await ics2.send("ICS2.AM.CA0130000.APB,ICS2,CA0190000.TXT ATTEMPT TO LOCATE. 2019 TOYOTA.\r\nARMED.")
    assert a.type == "A"
    assert (await ics1.output()).text == "ICS1.AM.CA0130000.ICS2.TXT ATTEMPT TO LOCATE. 2019 TOYOTA.\r\nARMED."
    assert (await printer.output()).text.startswith("ECP1.AM.CA0130000.ICS2.TXT ATTEMPT")
    assert (await ics2.output()).text.startswith("ICS2.AM.CA0130000.ICS2.TXT")
    log = await eventually(harness.stub_log)
    assert log == ["ICS2.*TS0002.#7F000001.AM.CA0130000.CA0190000.TXT ATTEMPT TO LOCATE. 2019 TOYOTA.\\r\\nARMED."]
    # To every station of a local ORI that receives administrative traffic.
    assert (await ics1.send("ICS1.AM.CA0130000.CA0130000.TXT ALL ICSO")).type == "A"
    assert (await ics2.output()).text == "ICS2.AM.CA0130000.ICS1.TXT ALL ICSO"
    assert (await ics1.output()).text == "ICS1.AM.CA0130000.ICS1.TXT ALL ICSO"


async def test_outputs_expire_as_undelivered(harness):
    clock = Clock(dt.datetime.now(dt.UTC))
    stub = await harness.start_stub()
    sw = await harness.start_switch(clock=clock)
    await harness.wait_upstream()
    assert await stub.push("ICS2.AM.CA0130000.TXT NOBODY READS THIS") == "A"
    assert sw.delivery.pending() == 1
    clock.t += 72 * 3600 + 1
    assert sw.delivery.expire() == 1
    await sw.journal.flush()
    und = [r for r in journal(harness, kind="UNDELIVERED")]
    assert len(und) == 1 and "EXPIRED" in und[0].text and und[0].mnemonic == "ICS2"


async def test_a_full_queue_refuses_new_traffic_with_e307(harness):
    stub = await harness.start_stub()
    sw = await harness.start_switch(extra="")
    sw.delivery.queue_max = 2
    await harness.wait_upstream()
    for i in range(2):
        assert await stub.push(f"ICS2.AM.CA0130000.TXT {i}") == "A"
    assert (await stub.push("ICS2.AM.CA0130000.TXT 3")).startswith("N E307")
    ics2 = await harness.client(auto_ack=False)  # a terminal that does not acknowledge
    assert (await ics2.logon("ICS2", "TS0002", PASSWORD)).type == "A"
    await ics2.output()
    await ics2.output()
    assert (await ics2.send("ICS2.QW.CA0130000.NAM/X.DOB/19800101")).code == "E307"  # no new work until it acks


async def test_primary_killed_under_load_no_request_vanishes(harness):
    primary = await harness.start_stub()
    secondary = await harness.start_stub()
    sw = await harness.start_switch(up_heartbeat_s=1, timeout_s=2)
    await harness.wait_upstream()
    assert sw.router.links["clets"].endpoint_label() == "primary"
    clients = [await harness.operator("ICS1", "TS0001"), await harness.operator("ICS2", "TS0002")]
    accepted: dict[str, str] = {}
    ended: dict[str, str] = {}
    stop = asyncio.Event()

    async def drain(c):
        while True:
            o = await c.outputs.get()
            ended[o.text.split(".")[0]] = o.text

    async def load(c, mne):
        i = 0
        while not stop.is_set():
            hdr = f"{mne}{i:06d}"
            f = await c.send(f"{hdr}.QV.CA0130000.LIC/F{i}")
            if f.type == "A":
                accepted[hdr] = f.text
            i += 1
            await asyncio.sleep(0.002)

    drains = [asyncio.create_task(drain(c)) for c in clients]
    loads = [asyncio.create_task(load(c, m)) for c, m in zip(clients, ("ICS1", "ICS2"), strict=True)]
    await eventually(lambda: len(accepted) >= 100)
    t_kill = time.monotonic()
    await primary.stop()  # the primary switching centre goes away
    await eventually(lambda: sw.router.links["clets"].endpoint_label() == "secondary")
    failover_s = time.monotonic() - t_kill  # measured and printed, not asserted (a loaded machine is slow)
    n_before = len(accepted)
    await eventually(lambda: len(accepted) >= n_before + 100)  # traffic continues on the secondary
    stop.set()
    await asyncio.gather(*loads)
    await eventually(lambda: set(accepted) <= set(ended))  # every accepted request ended
    for t in drains:
        t.cancel()
    fates = {"answered": 0, "E302": 0, "E303": 0}
    for hdr in accepted:
        text = ended[hdr]
        key = text.split(".", 2)[1]
        fates["answered" if key == "QV" else text.split(".MSC.")[1][:4]] += 1
    assert sum(fates.values()) == len(accepted)
    assert secondary.stats.received > 0
    print(f"\nfailover: {failover_s * 1000:.0f} ms; accepted {len(accepted)}, fates {fates}, lost 0")


async def test_a_slow_reader_does_not_delay_the_others(harness):
    await harness.start_stub()
    sw = await harness.start_switch(rate_limit=100000)
    await harness.wait_upstream()

    async def p99(c, mne, n=150):
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            assert (await c.send(f"{mne}{i}.QV.CA0130000.LIC/P{i}")).type == "A"
            await c.output()
            lat.append(time.perf_counter() - t0)
        return statistics.quantiles(lat, n=100)[98]

    fast = await harness.operator("ICS1", "TS0001")
    baseline = await p99(fast, "ICS1B")
    # A CAD host that sends and never reads its socket.
    import socket
    import struct

    raw = socket.create_connection(("127.0.0.1", harness.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.sendall(struct.pack(">IBI", 5, ord("A"), 0))  # acknowledge the banner, then never read again
    for i in range(1, 2001):
        # (LIC is at most 10 characters under the message-key edits: the bulk rides in VIN/)
        p = f"ECC2S{i}.*EC0001.#0A000001.QV.CA0130100.LIC/Z{i}.LIS/CA.VIN/{'Z' * 15}{i:05d}".encode()
        raw.sendall(struct.pack(">IBI", len(p) + 5, ord("M"), i) + p)
    # Its outputs wait; and its burst of requests has been forwarded (max_in_flight is a bound
    # of the shared link that a burst of requests fills for a moment: not what is measured here).
    await eventually(lambda: sw.delivery.pending() > 50 and sw.router.links["clets"].in_flight == 0)
    waiting = sw.delivery.pending()
    loaded = await p99(fast, "ICS1L")
    # The slow reader's outputs wait in its own queue; the others are not its hostages: every one
    # of the other terminal's 150 requests was answered and its output delivered while the slow
    # reader's outputs still waited, unread (had they shared a queue, or had a write to the full
    # socket held the loop, the first output would never have come). The latency is printed
    # (a figure, not a threshold: bench/ measures it).
    assert sw.delivery.pending() >= waiting > 50, (waiting, sw.delivery.pending())
    raw.close()
    print(f"\nother terminal p99: {baseline * 1000:.2f} ms alone, {loaded * 1000:.2f} ms beside a slow reader "
          f"({waiting} outputs waiting for it)")


async def test_remote_admin_message_lost_before_upstream_ack_is_reported_e302(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    conn = next(iter(stub.conns))
    conn.data_received = lambda data: None  # the upstream swallows it: no A
    assert (await c.send("ICS1R.AM.CA0130000.CA0190000.TXT TO ANOTHER COUNTY")).type == "A"
    await eventually(lambda: harness.switch.router.links["clets"].in_flight == 1)
    conn.transport.abort()
    assert (await c.output()).text.startswith("ICS1R.MSC.E302 ")


async def test_max_in_flight_holds_under_a_burst_of_accepted_requests(harness):
    """A burst of requests (one read of a CAD host's socket, accepted together before any is
    sent) puts at most max_in_flight unacknowledged on the upstream; the rest are told E307 —
    refused at acceptance, or, when they passed that check together, by the notice
    ``MSC.E307 CLETS AT MAX_IN_FLIGHT`` (PROTOCOL.md §4 "In flight"). Before, every request of a
    burst accepted together was sent (1,430 in flight with a bound of 1,000 was measured). The
    upstream here reads and never acknowledges, so nothing leaves the in-flight count and the
    bound is exact however the burst's commits are batched."""
    stub = await harness.start_stub()
    sw = await harness.start_switch(max_in_flight=5, rate_limit=100000)
    await harness.wait_upstream()
    stub.half_dead = True  # reads every request, acknowledges none
    host = await harness.client()
    texts = [f"ECC2B{i:02d}.*EC0001.#0A000001.QV.CA0130100.LIC/B{i}" for i in range(40)]
    fates = await asyncio.gather(*(host.send(t) for t in texts))
    refused = [f for f in fates if f.type == "N"]
    assert all(f.code == "E307" for f in refused), fates
    accepted = len(fates) - len(refused)
    notices = [await host.output() for _ in range(accepted - 5)]
    assert all(".MSC.E307 CLETS AT MAX_IN_FLIGHT" in n.text for n in notices), notices
    assert sw.router.links["clets"].in_flight == 5
    assert host.outputs.empty()  # the five in flight wait for the upstream: no notice for them


async def test_a_drain_waits_for_an_answer_being_journaled(harness):
    """An answer arrives; until its record is committed it is neither awaited (the request has
    its first part) nor queued for delivery. A drain (SIGTERM) that came in between saw nothing in
    flight and stopped: the answer reached its terminal only at the next logon (seen as a flaky
    tests/e2e/test_operations.py::test_sigterm_drains_in_flight_work on a loaded machine). Traffic
    from the upstream being journaled now counts as in flight, answers and unsolicited alike."""
    from tests.faults import FaultyWriter

    stub = await harness.start_stub()
    stub.hold = True  # the upstream acknowledges the request and keeps its answer until told
    sw = await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send("ICS1D1.QV.CA0130000.LIC/DRAIN1")).type == "A"
    await eventually(lambda: stub.stats.received == 1 and sw.router.links["clets"].in_flight == 0)
    faults = FaultyWriter.install(sw.journal)
    faults.hold = asyncio.Event()  # commits wait: the answer's record is being written
    commits = faults.commits
    assert stub.command("hold off") == "OK"
    await eventually(lambda: faults.commits > commits)  # the answer came and its commit is under way
    draining = asyncio.get_running_loop().create_task(sw.drain())
    try:
        await asyncio.sleep(0)  # the drain has begun, with the answer's commit held
        assert sw.in_flight() >= 1
    finally:
        faults.hold.set()
    assert (await c.output()).text.startswith("ICS1D1.")  # delivered before the stop
    await asyncio.wait_for(draining, HANG_S)
