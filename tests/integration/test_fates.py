"""Issue 12 item 5: every accepted request learns its fate, whatever the link or the journal does.

The real Switch (in process) and the upstream simulator over loopback sockets:

* a link lost with requests unanswered → ``MSC.E302`` at once (acknowledged or not), never E303
  after ``timeout_s``; a request that already had its answer gets nothing more;
* a half-dead primary (accepts TCP, never answers) counts as failed, traffic moves to the
  secondary and stays there;
* an answer the journal cannot record → the answer when the upstream sends it again, else
  ``MSC.E501`` once the journal records again (also across a restart);
* an output longer than a station's ``max_frame`` reaches it in parts it can take.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from msc.journal.search import Query, search
from msc.protocol.parts import join_parts
from tests.conftest import PASSWORD, eventually
from tests.faults import FaultyWriter, kill_writer_process
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)

FAST_LINK = "ack_timeout_s = 0.5"


def metric(sw, name: str, **labels: str) -> float:
    """The value of one series of the switch's /metrics exposition (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(sw.metrics.exposition()[0].decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def journal(sw) -> list:
    await sw.journal.flush()
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query()))


async def ctl(stub, command: str) -> str:
    """A command through the stub's control port, as an operator of the simulator types it."""
    r, w = await asyncio.open_connection("127.0.0.1", stub.control_port)
    w.write(f"/{command}\n".encode())
    line = (await r.readline()).decode().strip()
    w.close()
    return line


async def outputs_for(c, headers: set[str], timeout: float = HANG_S) -> dict[str, str]:
    """The next output for each header in ``headers`` (other outputs are an error)."""
    got: dict[str, str] = {}
    while set(got) != headers:
        o = await c.output(timeout=timeout)
        hdr = o.text.split(".", 1)[0]
        assert hdr in headers and hdr not in got, o.text
        got[hdr] = o.text
    return got


# -- (a) a link lost with requests unanswered -------------------------------------------------

LOSSES = [
    # answered before the loss, acknowledged and unanswered, never acknowledged, how the link goes
    pytest.param(0, 1, 0, "closed", id="issue: QW acknowledged, primary dies before answering"),
    pytest.param(0, 0, 1, "closed", id="one not acknowledged"),
    pytest.param(1, 3, 2, "closed", id="several in flight, acked and not, one answered"),
    pytest.param(2, 0, 0, "closed", id="all answered: nothing more"),
    pytest.param(1, 2, 1, "half-dead", id="declared failed by the acknowledgement timeout"),
    pytest.param(0, 4, 0, "reset", id="connection reset by the upstream"),
]


@pytest.mark.parametrize(("answered", "acked", "unacked", "loss"), LOSSES)
async def test_a_lost_link_tells_every_unanswered_request_e302_at_once(harness, answered, acked, unacked, loss):
    stub = await harness.start_stub()
    sw = await harness.start_switch(upstream_extra=FAST_LINK)  # timeout_s stays 30: E303 would be far off
    await harness.wait_upstream()
    link = sw.router.links["clets"]
    c = await harness.operator()
    for i in range(answered):
        assert (await c.send(f"ICS1D{i}.QV.CA0130000.LIC/DONE{i}")).type == "A"
        assert (await c.output()).text.startswith(f"ICS1D{i}.QV.")
    assert await ctl(stub, "hold on") == "OK"
    for i in range(acked):
        assert (await c.send(f"ICS1K{i}.QW.CA0130000.NAM/ACKED, NUMBER{i}.DOB/19800101")).type == "A"
    await eventually(lambda: len(stub.held) == acked and link.in_flight == 0)
    if unacked or loss == "half-dead":
        assert await ctl(stub, "half-dead on") == "OK"
    for i in range(unacked):
        assert (await c.send(f"ICS1U{i}.QV.CA0130000.LIC/UNACK{i}")).type == "A"
    await eventually(lambda: link.in_flight == unacked)
    t0 = time.monotonic()
    if loss == "closed":
        await stub.stop()  # the primary switching centre goes away
    elif loss == "reset":
        next(iter(stub.conns)).transport.abort()
    expected = {f"ICS1K{i}" for i in range(acked)} | {f"ICS1U{i}" for i in range(unacked)}
    got = await outputs_for(c, expected)
    waited = time.monotonic() - t0
    for hdr, text in got.items():
        why = "BEFORE THE ANSWER" if hdr.startswith("ICS1K") else "BEFORE ACKNOWLEDGEMENT"
        assert text == f"{hdr}.MSC.E302 CLETS LINK LOST {why}", text
    # Every request has its fate, each exactly one; the answered ones got no notice.
    assert sw.router.outstanding() == 0
    records = await journal(sw)
    notices = [r for r in records if r.mke == "MSC"]
    assert sorted(r.text.split(".", 1)[0] for r in notices) == sorted(expected)
    assert all(r.code == "E302" and r.txn for r in notices)
    print(f"\n{loss}: {len(expected)} notices {waited * 1000:.0f} ms after the loss (timeout_s 30)")


async def test_an_acknowledged_admin_message_needs_no_notice_when_the_link_drops(harness):
    stub = await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send("ICS1R.AM.CA0130000.CA0190000.TXT TO ANOTHER COUNTY")).type == "A"
    await eventually(lambda: sw.router.links["clets"].in_flight == 0 and stub.stats.received == 1)
    assert await ctl(stub, "hold on") == "OK"
    assert (await c.send("ICS1Q.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101")).type == "A"
    await eventually(lambda: len(stub.held) == 1)
    await stub.stop()
    assert (await c.output()).text.startswith("ICS1Q.MSC.E302 ")  # the QW; the AM's A was its answer
    assert sw.router.outstanding() == 0
    assert [r.text.split(".")[0] for r in await journal(sw) if r.mke == "MSC"] == ["ICS1Q"]


# -- (b) a half-dead primary ----------------------------------------------------------------------


async def test_half_dead_primary_from_the_start_traffic_goes_to_the_secondary(harness):
    """The issue's case: 12 of 12 requests failed while msc redialled a primary that never
    answered. Now the primary never passes the handshake and all 12 are answered."""
    primary = await harness.start_stub(half_dead=True)
    secondary = await harness.start_stub()
    t0 = time.monotonic()
    sw = await harness.start_switch(upstream_extra=FAST_LINK)
    await harness.wait_upstream()
    up_after = time.monotonic() - t0
    link = sw.router.links["clets"]
    assert link.endpoint_label() == "secondary"
    c = await harness.operator()
    for i in range(12):
        assert (await c.send(f"ICS1H{i}.QW.CA0130000.NAM/HALF, DEAD{i}.DOB/19800101")).type == "A"
        assert (await c.output()).text.startswith(f"ICS1H{i}.QW.")
    assert primary.stats.received == 0 and secondary.stats.received == 12
    assert metric(sw, "msc_upstream_failures_total", upstream="clets", endpoint="primary", reason="handshake") >= 1
    assert metric(sw, "msc_upstream_up", upstream="clets", endpoint="secondary") == 1
    print(f"\nhalf-dead primary from the start: secondary up {up_after * 1000:.0f} ms after start (ack_timeout_s 0.5)")


async def test_primary_half_dead_after_a_while_fails_over_and_stays_on_the_secondary(harness):
    primary = await harness.start_stub()
    secondary = await harness.start_stub()
    sw = await harness.start_switch(upstream_extra=FAST_LINK)
    await harness.wait_upstream()
    link = sw.router.links["clets"]
    assert link.endpoint_label() == "primary"
    c = await harness.operator()
    assert (await c.send("ICS1P0.QV.CA0130000.LIC/BEFORE")).type == "A"
    assert (await c.output()).text.startswith("ICS1P0.QV.")
    assert await ctl(primary, "half-dead on") == "OK"
    t0 = time.monotonic()
    assert (await c.send("ICS1P1.QV.CA0130000.LIC/SWALLOWED")).type == "A"
    # The swallowed request learns its fate when the primary is declared failed …
    assert (await c.output()).text == "ICS1P1.MSC.E302 CLETS LINK LOST BEFORE ACKNOWLEDGEMENT"
    await eventually(lambda: link.endpoint_label() == "secondary")
    failover = time.monotonic() - t0
    assert metric(sw, "msc_upstream_failures_total", upstream="clets", endpoint="primary", reason="ack_timeout") == 1
    # … and the next ones are answered by the secondary.
    for i in range(2, 6):
        assert (await c.send(f"ICS1P{i}.QV.CA0130000.LIC/AFTER{i}")).type == "A"
        assert (await c.output()).text.startswith(f"ICS1P{i}.QV.")
    # The primary recovers; traffic stays on the secondary, even after the secondary's
    # connection drops: msc dials the endpoint that was carrying traffic first.
    assert await ctl(primary, "half-dead off") == "OK"
    received = primary.stats.received
    old = next(iter(secondary.conns))
    old.transport.abort()
    await eventually(lambda: old not in secondary.conns and secondary.conns and link.up)
    assert link.endpoint_label() == "secondary"
    for i in range(6, 9):
        assert (await c.send(f"ICS1P{i}.QV.CA0130000.LIC/STAYS{i}")).type == "A"
        assert (await c.output()).text.startswith(f"ICS1P{i}.QV.")
    assert primary.stats.received == received
    print(f"\nprimary half dead under traffic: on the secondary {failover * 1000:.0f} ms later (ack_timeout_s 0.5)")


async def test_an_idle_half_dead_primary_is_found_by_its_heartbeat(harness):
    """No traffic: the heartbeat sent after heartbeat_s of silence goes unanswered."""
    primary = await harness.start_stub()
    secondary = await harness.start_stub()
    sw = await harness.start_switch(up_heartbeat_s=0.5, upstream_extra=FAST_LINK)
    await harness.wait_upstream()
    link = sw.router.links["clets"]
    assert link.endpoint_label() == "primary"
    assert await ctl(primary, "half-dead on") == "OK"
    t0 = time.monotonic()
    await eventually(lambda: link.endpoint_label() == "secondary")
    found = time.monotonic() - t0
    assert metric(sw, "msc_upstream_failures_total", upstream="clets", endpoint="primary",
                  reason="heartbeat_timeout") == 1
    assert secondary.stats.received == 0
    print(f"\nidle half-dead primary: on the secondary {found * 1000:.0f} ms later "
          f"(heartbeat_s 0.5, ack_timeout_s 0.5, bound 3 x heartbeat_s = 1.5 s)")


async def test_both_half_dead_requests_are_refused_until_one_answers(harness):
    primary = await harness.start_stub(half_dead=True)
    secondary = await harness.start_stub(half_dead=True)
    sw = await harness.start_switch(upstream_extra=FAST_LINK)
    link = sw.router.links["clets"]
    c = await harness.operator()
    await eventually(lambda: metric(sw, "msc_upstream_failures_total", upstream="clets", endpoint="secondary",
                                    reason="handshake") >= 1)
    for i in range(3):  # no endpoint ever answered: refused at once, nothing accepted into the void
        assert (await c.send(f"ICS1B{i}.QW.CA0130000.NAM/BOTH, DEAD.DOB/19800101")).code == "E302"
    assert await ctl(secondary, "half-dead off") == "OK"
    await eventually(lambda: link.up)
    assert link.endpoint_label() == "secondary"
    assert (await c.send("ICS1B9.QW.CA0130000.NAM/BACK, AGAIN.DOB/19800101")).type == "A"
    assert (await c.output()).text.startswith("ICS1B9.QW.")
    assert primary.stats.received == 0


async def _fake_upstream(behaviour: str):
    """A misbehaving upstream: 'heartbeats-only' answers H but never A/N; 'close' accepts and
    closes at once."""
    import struct

    async def handle(reader, writer):
        buf = b""
        try:
            if behaviour == "close":
                writer.close()
                return
            while data := await reader.read(65536):
                buf += data
                while len(buf) >= 9:
                    length, t, xid = struct.unpack_from(">IBI", buf)
                    if len(buf) < 4 + length:
                        break
                    buf = buf[4 + length:]
                    if t == ord("H"):
                        writer.write(struct.pack(">IBI", 5, ord("H"), xid))
        except ConnectionError:
            pass

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("behaviour", ["heartbeats-only", "close"])
async def test_other_half_dead_primaries_fail_over_too(harness, behaviour):
    server = await _fake_upstream(behaviour)
    try:
        secondary = await harness.start_stub()
        sw = await harness.start_switch(upstream_ports=[server.sockets[0].getsockname()[1], secondary.port],
                                        upstream_extra=FAST_LINK)
        c = await harness.operator()
        link = sw.router.links["clets"]
        ok = 0
        for i in range(12):
            await eventually(lambda: link.up)
            f = await c.send(f"ICS1F{i}.QV.CA0130000.LIC/F{i}")
            assert f.type == "A"
            text = (await c.output()).text
            ok += text.startswith(f"ICS1F{i}.QV.")
            if not text.startswith(f"ICS1F{i}.QV."):
                assert text.startswith(f"ICS1F{i}.MSC.E302 "), text  # sent before the failure was found
        assert link.endpoint_label() == "secondary"
        assert ok >= 11  # at most the one request that exposed the primary
    finally:
        server.close()


# -- (c) the journal cannot record an answer -----------------------------------------------------


class JournalFault:
    """Commits fail (as on EIO/ENOSPC) while ``on``; the writer keeps the truth on disk."""

    def __init__(self, sw, monkeypatch) -> None:
        self.writer = FaultyWriter.install(sw.journal)
        self.writer.error = "injected: fsync failed (EIO)"

    @property
    def on(self) -> bool:
        return self.writer.fail_commits

    @on.setter
    def on(self, value: bool) -> None:
        self.writer.fail_commits = value


JOURNAL_CASES = [
    # answers, upstream resends?, when the journal recovers
    pytest.param(1, True, "before the resend", id="one answer; resent after the journal recovered"),
    pytest.param(1, True, "after a refused resend", id="one answer; first resend refused too"),
    pytest.param(1, False, "at once", id="one answer; never resent -> E501"),
    pytest.param(8, True, "before the resend", id="burst of 8; all resent"),
    pytest.param(8, False, "at once", id="burst of 8; none resent -> 8 x E501"),
    pytest.param(2, True, "after the upstream gave up", id="resends exhausted before recovery -> E501"),
]


@pytest.mark.parametrize(("n", "resends", "recovery"), JOURNAL_CASES)
async def test_an_answer_the_journal_cannot_record_ends_in_the_answer_or_e501(harness, monkeypatch, n, resends,
                                                                              recovery):
    stub = await harness.start_stub(resend_s=0.3 if resends else 0, resend_max=1 if "gave up" in recovery else 5)
    sw = await harness.start_switch(upstream_extra=f"{FAST_LINK}\nresend_wait_s = 1.5")
    await harness.wait_upstream()
    fault = JournalFault(sw, monkeypatch)
    c = await harness.operator()
    assert await ctl(stub, "hold on") == "OK"
    headers = {f"ICS1J{i}" for i in range(n)}
    for h in sorted(headers):
        assert (await c.send(f"{h}.QW.CA0130000.NAM/JOURNAL, FAULT{h[-1]}.DOB/19800101")).type == "A"
    await eventually(lambda: len(stub.held) == n)
    fault.on = True
    assert await ctl(stub, "hold off") == "OK"  # the answers arrive while the journal fails
    await eventually(lambda: stub.stats.refused >= n)
    if recovery == "after a refused resend":
        await eventually(lambda: stub.stats.refused >= n + 1)
    elif recovery == "after the upstream gave up":
        await eventually(lambda: stub.stats.refused >= 2 * n)
    fault.on = False
    got = await outputs_for(c, headers)
    answered = {h for h, t in got.items() if t.startswith(f"{h}.QW.")}
    if resends and "gave up" not in recovery:
        assert answered == headers, got
    else:
        assert answered == set(), got
        for h, t in got.items():
            assert t == (f"{h}.MSC.E501 ANSWER FROM CLETS COULD NOT BE RECORDED AND WAS NOT SENT AGAIN; "
                         "REPEAT THE REQUEST"), t
    assert sw.router.outstanding() == 0
    assert metric(sw, "msc_answers_unrecorded_total") >= n
    # The journal holds, per request, the refusal (REJECTED E501) and exactly one outcome.
    records = await journal(sw)
    txns = {r.txn for r in records if r.kind == "FORWARDED"}
    assert len(txns) == n
    for txn in txns:
        mine = [r for r in records if r.txn == txn]
        assert any(r.kind == "REJECTED" and r.code == "E501" for r in mine)
        outcomes = [r for r in mine if r.kind == "RECEIVED" and r.direction == "in" and r.peer != "ICS1"]
        assert len(outcomes) == 1, outcomes
        assert outcomes[0].peer == ("clets" if resends and "gave up" not in recovery else "MSC")
    # Nothing else arrives: every output was one of the expected ones (checked above) and the
    # delivery queue is empty once acknowledged.
    await eventually(lambda: sw.delivery.pending() == 0)


async def test_an_answer_written_although_its_commit_failed_is_never_delivered_and_is_closed(harness, monkeypatch):
    """fsync fails after SQLite wrote the WAL: the answer's record is in the file though the
    upstream was told E501. That output is recorded UNDELIVERED (so no restart delivers it), and
    the answer the upstream sends again is delivered, once."""
    stub = await harness.start_stub(resend_s=0.2)
    sw = await harness.start_switch(upstream_extra=FAST_LINK)
    await harness.wait_upstream()
    c = await harness.operator()
    faults = FaultyWriter.install(sw.journal)
    assert await ctl(stub, "hold on") == "OK"
    assert (await c.send("ICS1L1.QW.CA0130000.NAM/LANDED, LARRY.DOB/19700101")).type == "A"
    await eventually(lambda: len(stub.held) == 1)
    await sw.journal.flush()
    faults.fail_after_write = 1
    assert await ctl(stub, "hold off") == "OK"
    out = await c.output()
    assert out.text.startswith("ICS1L1.QW.")
    await eventually(lambda: sw.delivery.pending() == 0)
    records = await journal(sw)
    answers = [r for r in records if r.kind == "RECEIVED" and r.peer == "clets"]
    assert len(answers) == 2  # the landed one and the one sent again
    fates = {r.osn: r.kind for r in records if r.kind in ("DELIVERED", "UNDELIVERED")}
    assert fates.get(answers[0].osn) == "UNDELIVERED" and fates.get(answers[1].osn) == "DELIVERED", fates
    assert out.xid == answers[1].osn
    assert any(r.kind == "ADMIN" and "WRITTEN WHILE COMMITS REPORTED I/O ERRORS" in r.text for r in records)


async def test_killed_journal_writer_loses_no_answer(harness):
    """The journal writer process is killed while answers are on their way: the commit in flight
    fails (the upstream is told E501 and sends again), the writer is replaced, every request
    gets its answer exactly once."""
    stub = await harness.start_stub(resend_s=0.2)
    sw = await harness.start_switch(upstream_extra=FAST_LINK)
    await harness.wait_upstream()
    c = await harness.operator()
    assert await ctl(stub, "hold on") == "OK"
    headers = {f"ICS1W{i}" for i in range(5)}
    for h in sorted(headers):
        assert (await c.send(f"{h}.QV.CA0130000.LIC/WRITER{h[-1]}")).type == "A"
    await eventually(lambda: len(stub.held) == 5)
    await sw.journal.flush()
    kill_writer_process(sw.journal)  # the writer process dies
    assert await ctl(stub, "hold off") == "OK"
    got = await outputs_for(c, headers)
    assert all(t.startswith(f"{h}.QV.") for h, t in got.items()), got
    assert stub.stats.refused >= 1 and stub.stats.resent >= 1
    assert sw.journal.healthy
    records = await journal(sw)
    for h in headers:
        assert len([r for r in records if r.kind == "RECEIVED" and r.peer == "clets" and r.text.startswith(h + ".")]) == 1


async def test_unrecorded_answer_across_a_restart_becomes_e501_at_the_next_logon(harness, monkeypatch):
    from msc.config.load import load
    from msc.server.parts import started
    from msc.server.switch import Switch

    stub = await harness.start_stub(resend_s=0)
    sw = await harness.start_switch(upstream_extra=f"{FAST_LINK}\nresend_wait_s = 60")
    await harness.wait_upstream()
    fault = JournalFault(sw, monkeypatch)
    c = await harness.operator()
    assert await ctl(stub, "hold on") == "OK"
    assert (await c.send("ICS1X1.QW.CA0130000.NAM/RESTART, RITA.DOB/19800101")).type == "A"
    await eventually(lambda: len(stub.held) == 1)
    fault.on = True
    assert await ctl(stub, "hold off") == "OK"
    await eventually(lambda: stub.stats.refused == 1)
    fault.on = False  # the journal records again; the refusal is journaled, the request waits
    await eventually(lambda: metric(sw, "msc_journal_records_total", kind="REJECTED") >= 1)
    c.close()
    await sw.stop()  # before resend_wait_s ran out
    harness.switch = Switch(load(harness.tmp / "msc.toml"))
    await harness.switch.start()
    # The restart's pass runs beside serving (its notices are queued outputs): waited for, so that
    # what comes next is a fact, not a race with it.
    assert await started(harness.switch.recovery) == 1
    c2 = await harness.client()
    assert (await c2.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    out = await c2.output()
    assert out.text == "ICS1X1.MSC.E501 ANSWER FROM CLETS COULD NOT BE RECORDED; SWITCH RESTARTED; REPEAT THE REQUEST"


# -- (d) outputs longer than a station's max_frame ------------------------------------------------


def part_of(text: str) -> tuple[int, int]:
    """(i, n) of a part ``HEADER.MSC.PART i/n.CHUNK``; (1, 1) for a whole output."""
    if ".MSC.PART " not in text:
        return 1, 1
    i, n = text.split(".MSC.PART ", 1)[1].split(".", 1)[0].split("/")
    return int(i), int(n)


async def all_parts(c) -> list:
    first = await c.output()
    _i, n = part_of(first.text)
    return [first] + [await c.output() for _ in range(n - 1)]


def _frames_fit(c, max_frame: int) -> None:
    for f in c.received:
        assert len(f.payload) + 5 <= max_frame, (f.type, len(f.payload))


@pytest.mark.parametrize("max_frame", [256, 4096, 32768])
@pytest.mark.parametrize("times", [1, 2, 30])
async def test_an_answer_longer_than_max_frame_arrives_in_parts_the_station_takes(harness, max_frame, times):
    stub = await harness.start_stub()
    sw = await harness.start_switch(max_frame=max_frame)
    await harness.wait_upstream()
    assert await ctl(stub, f"answer-size {times * max_frame}") == "OK"
    c = await harness.operator()
    assert (await c.send("ICS1QR1.QR.CA0130000.NAM/LONG, RAP.DOB/19700101.SEX/M.CII/A12345678.PUR/C"
                         ".ATN/DET SMITH")).type == "A"
    parts = await all_parts(c)
    n = len(parts)
    whole = join_parts([p.payload for p in parts])
    _frames_fit(c, max_frame)
    assert whole.startswith(b"ICS1QR1.QR.CA0130000.CRIMINAL HISTORY")
    assert len(whole) >= times * max_frame
    assert n > 1
    assert [part_of(p.text) for p in parts] == [(i, n) for i in range(1, n + 1)]
    assert [p.xid for p in parts] == list(range(parts[0].xid, parts[0].xid + n))  # one OSN each
    await eventually(lambda: sw.delivery.pending() == 0)
    records = await journal(sw)
    # The journal keeps the whole answer once, as received, and each part with its OSN; each
    # part's delivery is recorded by OSN, with the requester's CORI fields.
    received = [r for r in records if r.kind == "RECEIVED" and r.peer == "clets"]
    assert [r.text.encode() for r in received] == [whole] and received[0].osn is None
    part_records = [r for r in records if r.kind == "RECEIVED" and r.peer == "MSC"]
    assert [r.osn for r in part_records] == [p.xid for p in parts]
    assert all(r.txn == received[0].txn and r.purpose == "C" and r.requester == "DET SMITH" for r in part_records)
    delivered = sorted(r.osn for r in records if r.kind == "DELIVERED")
    assert set(p.xid for p in parts) <= set(delivered)


async def test_an_answer_that_fits_is_not_split(harness):
    stub = await harness.start_stub()
    await harness.start_switch(max_frame=4096)
    await harness.wait_upstream()
    c = await harness.operator()
    # Just under the frame: one output, whole.
    assert await ctl(stub, "answer-size 3900") == "OK"
    assert (await c.send("ICS1F1.QV.CA0130000.LIC/FITS")).type == "A"
    out = await c.output()
    assert ".MSC.PART " not in out.text and len(out.payload) >= 3900
    _frames_fit(c, 4096)


async def test_the_smallest_listener_decides_and_unsolicited_and_admin_traffic_split_too(harness):
    extra = '''
[[listener]]
name = "narrow"
bind = "127.0.0.1:0"
max_frame = 512
'''
    stub = await harness.start_stub()
    sw = await harness.start_switch(max_frame=65536, extra=extra)
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")  # on the wide listener
    ics2 = await harness.operator("ICS2", "TS0002")
    # An APB to a group from upstream, 5 KiB: each member gets parts of <= 512 bytes.
    text = "APB.AM.CA0190000.TXT " + " ".join(f"LINE {i:03d} ATTEMPT TO LOCATE SUBJECT" for i in range(150))
    assert (await stub.push(text)).startswith("A")
    parts = await all_parts(ics1)
    assert len(parts) > 1
    assert join_parts([p.payload for p in parts]) == text.encode()
    _frames_fit(ics1, 512)
    # An AM from one terminal to another, longer than the narrow listener's frame.
    body = "X" * 900
    assert (await ics2.send(f"ICS2A.AM.CA0130000.ICS1.TXT {body}")).type == "A"
    parts = await all_parts(ics1)
    assert len(parts) > 1
    assert join_parts([p.payload for p in parts]) == f"ICS1.AM.CA0130000.ICS2.TXT {body}".encode()
    _frames_fit(ics1, 512)
    # The APB's other member, a printer, binds later and gets its own parts from its queue.
    ecp1 = await harness.client()
    assert (await ecp1.send("ECP1.BIND")).type == "A"
    parts = await all_parts(ecp1)
    assert len(parts) > 1 and join_parts([p.payload for p in parts]) == text.encode()
    _frames_fit(ecp1, 512)
    await eventually(lambda: sw.delivery.pending() == 0)


async def test_a_queued_output_longer_than_a_shrunken_max_frame_is_sent_again_in_parts(harness):
    """The listener's max_frame shrinks (SIGHUP reload) while a long output waits: the station
    still gets only frames it takes; the old OSN is recorded UNDELIVERED, the parts delivered."""
    stub = await harness.start_stub()
    sw = await harness.start_switch(max_frame=32768)
    await harness.wait_upstream()
    text = "ICS2.AM.CA0190000.TXT " + "LONG ADMINISTRATIVE MESSAGE " * 200  # ~5.6 KiB, fits 32 KiB
    assert (await stub.push(text)).startswith("A")  # ICS2 is not connected: it waits
    await eventually(lambda: sw.delivery.pending() == 1)
    cfg = harness.tmp / "msc.toml"
    cfg.write_text(cfg.read_text().replace("max_frame = 32768", "max_frame = 1024"))
    assert await sw.reload()
    ics2 = await harness.operator("ICS2", "TS0002")
    parts = await all_parts(ics2)
    assert len(parts) > 1 and join_parts([p.payload for p in parts]) == text.encode()
    _frames_fit(ics2, 1024)
    await eventually(lambda: sw.delivery.pending() == 0)
    records = await journal(sw)
    undelivered = [r for r in records if r.kind == "UNDELIVERED"]
    assert len(undelivered) == 1 and "SENT AGAIN AS OSN" in undelivered[0].text
    assert {r.osn for r in records if r.kind == "DELIVERED"} >= {p.xid for p in parts}


async def test_a_landed_unsent_answer_and_a_restart_still_end_in_e501(harness, monkeypatch):
    """As above, but the upstream never sends the answer again and the switch restarts within
    resend_wait_s: the landed record does not count as an answer; the operator hears E501."""
    from msc.config.load import load
    from msc.server.parts import started
    from msc.server.switch import Switch

    stub = await harness.start_stub(resend_s=0)
    sw = await harness.start_switch(upstream_extra=f"{FAST_LINK}\nresend_wait_s = 60")
    await harness.wait_upstream()
    c = await harness.operator()
    faults = FaultyWriter.install(sw.journal)
    assert await ctl(stub, "hold on") == "OK"
    assert (await c.send("ICS1L2.QW.CA0130000.NAM/LANDED, LUCY.DOB/19700101")).type == "A"
    await eventually(lambda: len(stub.held) == 1)
    await sw.journal.flush()
    faults.fail_after_write = 1
    assert await ctl(stub, "hold off") == "OK"
    await eventually(lambda: metric(sw, "msc_journal_records_total", kind="REJECTED") >= 1
                     and metric(sw, "msc_journal_records_total", kind="UNDELIVERED") >= 1)
    c.close()
    await sw.stop()
    harness.switch = Switch(load(harness.tmp / "msc.toml"))
    await harness.switch.start()
    # The restart's pass runs beside serving (its notices are queued outputs): waited for, so that
    # what comes next is a fact, not a race with it.
    assert await started(harness.switch.recovery) == 1
    c2 = await harness.client()
    assert (await c2.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    out = await c2.output()
    assert out.text.startswith("ICS1L2.MSC.E501 ANSWER FROM CLETS COULD NOT BE RECORDED; SWITCH RESTARTED"), out.text
