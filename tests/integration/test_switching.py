"""The switching path end to end over real sockets (issue: foundation).

A terminal and a CAD host talk to an in-process Switch on 127.0.0.1, which talks to an
in-process upstream stub. The client is tests/wire.py, written from PROTOCOL.md alone.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import PASSWORD, eventually
from tests.faults import FaultyWriter
from tests.waiting import HANG_S
from tests.wire import frame

pytestmark = pytest.mark.timeout(60)


async def test_terminal_logs_on_and_gets_a_qw_answer(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.client()
    a = await c.logon("ICS1", "TS0001", PASSWORD)
    assert a.type == "A"
    assert a.text == "MNE/ICS1.USR/TS0001"
    ack = await c.send("ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")
    assert ack.type == "A"
    out = await c.output()
    assert out.text.startswith("ICS1A1.QW.CA0130000.")
    assert out.xid == 1  # the first output to ICS1: OSN 1
    # The stub saw the message with both extended headers inserted by msc (PPP §1.6.6 C).
    log = await eventually(harness.stub_log)
    assert log == ["ICS1A1.*TS0001.#7F000001.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101"]


async def test_cad_host_sends_oif_taf_for_two_operators(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.client()
    a1 = await c.send("ECC2X1.*EC0001.#C0A8010A.QW.CA0130100.NAM/DOE, JOHN.DOB/19700101")
    a2 = await c.send("ECC3X2.*EC0002.#C0A8010B.DQ.CA0130100.OLN/D1234567")
    assert (a1.type, a2.type) == ("A", "A")
    outs = sorted([(await c.output()).text, (await c.output()).text])
    assert outs[0].startswith("ECC2X1.QW.CA0130100.")
    assert outs[1].startswith("ECC3X2.DQ.CA0130100.")
    log = await eventually(lambda: len(harness.stub_log()) == 2 and harness.stub_log())
    assert "ECC2X1.*EC0001.#C0A8010A.QW.CA0130100.NAM/DOE, JOHN.DOB/19700101" in log
    assert "ECC3X2.*EC0002.#C0A8010B.DQ.CA0130100.OLN/D1234567" in log
    # Every line the stub received has HEADER.*OIF.#TAF.TEXT.
    assert all(line.split(".")[1].startswith("*") and line.split(".")[2].startswith("#") for line in log)


async def test_host_rules(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.client()
    assert (await c.send("ECC2.*EC0001.QW.CA0130100.NAM/X.DOB/19800101")).code == "E105"  # TAF missing
    assert (await c.send("ECC2.#C0A8010A.QW.CA0130100.NAM/X.DOB/19800101")).code == "E104"  # OIF missing
    assert (await c.send("ECC2.*TS0001.#C0A8010A.QW.CA0130100.NAM/X.DOB/19800101")).code == "E104"  # not a served agency
    assert (await c.send("ECC2.*NOSUCH.#C0A8010A.QW.CA0130100.NAM/X.DOB/19800101")).code == "E104"  # not a user
    assert (await c.send("ICS1.*EC0001.#C0A8010A.QW.CA0130100.NAM/X.DOB/19800101")).code == "E210"  # not this host's
    assert (await c.send("ECC2.*EC0001.#C0A8010A.QH.CA0130100.NAM/X.DOB/19800101.PUR/C.ATN/X")).code == "E204"  # no cori
    assert harness.stub_log() == []


async def test_bad_password_gets_e202_and_unknown_user_the_same(harness):
    await harness.start_stub()
    await harness.start_switch()
    c = await harness.client()
    assert (await c.logon("ICS1", "TS0001", "wrong password")).code == "E202"
    assert (await c.logon("ICS1", "NOSUCH", PASSWORD)).code == "E202"
    assert (await c.send("ICS1.QW.CA0130000.NAM/X.DOB/19800101")).code == "E201"


async def test_message_before_logon_gets_e201(harness):
    await harness.start_stub()
    await harness.start_switch()
    c = await harness.client()
    assert (await c.send("ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")).code == "E201"
    assert harness.stub_log() == []


async def test_logon_before_banner_ack_gets_e201(harness):
    await harness.start_stub()
    await harness.start_switch()
    c = await harness.client(ack_banner=False)
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).code == "E201"
    c.ack(0)
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"


async def test_wrong_mnemonic_gets_e210(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1")
    assert (await c.send("ICS2.QW.CA0130000.NAM/X.DOB/19800101")).code == "E210"
    # A station whose addresses do not admit this peer cannot be claimed.
    c2 = await harness.client()
    assert (await c2.logon("ICS9", "TS0002", PASSWORD)).code == "E210"
    # A mnemonic nobody configured.
    assert (await c2.logon("ZZZ9", "TS0002", PASSWORD)).code == "E210"


async def test_oif_taf_spoofing_on_a_terminal(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1")
    assert (await c.send("ICS1.*TS0002.QW.CA0130000.NAM/X.DOB/19800101")).code == "E104"
    assert (await c.send("ICS1.#0A000001.QW.CA0130000.NAM/X.DOB/19800101")).code == "E105"
    assert (await c.send("ICS1.*TS0001.#7F000001.QW.CA0130000.NAM/X.DOB/19800101")).type == "A"


async def test_unknown_key_gets_e301(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send("ICS1.ZZ.CA0130000.NAM/X")).code == "E301"


async def test_upstream_down_gives_e302(harness):
    await harness.start_switch()  # no stub listening at the configured endpoint
    c = await harness.operator()
    assert (await c.send("ICS1.QW.CA0130000.NAM/X.DOB/19800101")).code == "E302"


async def test_upstream_lost_before_ack_gives_msc_e302(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator()
    # Make the stub swallow the next request (no A), then drop the link.
    conn = next(iter(stub.conns))
    conn.data_received = lambda data: None
    assert (await c.send("ICS1A7.QW.CA0130000.NAM/X.DOB/19800101")).type == "A"
    await eventually(lambda: harness.switch.router.links["clets"].in_flight == 1)
    conn.transport.abort()
    out = await c.output()
    assert out.text.startswith("ICS1A7.MSC.E302 ")


async def test_upstream_nak_and_timeout_reach_the_operator(harness):
    await harness.start_stub(fail_rate=1.0)
    # The route's default timeout_s (30): the NAK is what is tested (E303 is the next test's); a
    # 0.5-s timeout let a loaded machine's late NAK turn into an E303.
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send("ICS1A1.QW.CA0130000.NAM/X.DOB/19800101")).type == "A"
    out = await c.output()
    assert out.text.startswith("ICS1A1.MSC.E302 ")  # the stub's N, passed on with its code


async def test_upstream_timeout_gives_msc_e303(harness):
    await harness.start_stub(latency_ms=5000)
    await harness.start_switch(timeout_s=0.3)
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send("ICS1B2.QW.CA0130000.NAM/X.DOB/19800101")).type == "A"
    out = await c.output()
    assert out.text.startswith("ICS1B2.MSC.E303 ")


async def test_journal_that_cannot_commit_gives_e501_and_nothing_reaches_the_stub(harness, monkeypatch):
    await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator()

    faults = FaultyWriter.install(sw.journal)
    faults.fail_commits, faults.error = True, "injected: disk failure"
    f = await c.send("ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")
    assert f.code == "E501"
    await asyncio.sleep(0.2)
    assert harness.stub_log() == []
    assert not sw.journal.healthy
    faults.fail_commits = False
    # Service resumes when the journal recovers.
    assert (await c.send("ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")).type == "A"
    assert sw.journal.healthy


async def test_every_message_is_acked_or_naked_and_outputs_acked_both_ways(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator()
    for i in range(20):
        f = await c.send(f"ICS1R{i}.QV.CA0130000.LIC/ABC{i}")
        assert f.type == "A"
    texts = [(await c.output()).text for _ in range(20)]
    assert sorted(t.split(".")[0] for t in texts) == sorted(f"ICS1R{i}" for i in range(20))
    # Each output was acknowledged by the client (auto_ack): nothing left to deliver.
    await eventually(lambda: harness.switch.delivery.pending() == 0)
    # msc acknowledged each of the stub's response frames.
    conn = next(iter(stub.conns))
    assert not conn.waiting


async def test_heartbeat_is_answered(harness):
    await harness.start_switch()
    c = await harness.client()
    c.send_raw(frame("H", 77))
    await eventually(lambda: any(f.type == "H" and f.xid == 77 for f in c.received))


async def test_framing_error_gets_e101_and_close(harness):
    await harness.start_switch()
    c = await harness.client()
    c.send_raw(b"\xff\xff\xff\xffM\x00\x00\x00\x01")  # length beyond max_frame
    await c.wait_closed()
    assert any(f.type == "N" and f.code == "E101" for f in c.received)
    c2 = await harness.client()
    c2.send_raw(b"\x00\x00\x00\x05Z\x00\x00\x00\x01")  # unknown type
    await c2.wait_closed()
    assert any(f.type == "N" and f.code == "E101" for f in c2.received)


async def test_printer_binds_and_only_receives(harness):
    await harness.start_switch()
    c = await harness.client()
    a = await c.send("ECP1.BIND")
    assert a.type == "A" and a.text == "MNE/ECP1"
    assert (await c.send("ECP1.QW.CA0130100.NAM/X.DOB/19800101")).code == "E204"


async def test_roles_and_accounts_at_logon(harness):
    await harness.start_switch()
    c = await harness.client()
    assert (await c.logon("ICS1", "DS0001", PASSWORD)).code == "E202"  # disabled: the answer of any refusal
    # Role, agency and certification are refused alike: the reason is journaled, never shown.
    assert (await c.logon("ICS1", "PR0001", PASSWORD)).code == "E202"  # practitioner
    assert (await c.logon("ICS1", "IN0001", PASSWORD)).code == "E202"  # investigator
    assert (await c.logon("ICS1", "EC0001", PASSWORD)).code == "E202"  # other agency
    assert (await c.logon("ICS1", "EX0001", PASSWORD)).code == "E202"  # certification expired


async def test_stub_control_pushes_unsolicited_traffic_to_a_terminal(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1")
    r, w = await asyncio.open_connection("127.0.0.1", stub.control_port)
    w.write(b"ICS1.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W123456789\n")
    assert (await asyncio.wait_for(r.readline(), HANG_S)).strip() == b"A"
    out = await c.output()
    assert out.text == "ICS1.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W123456789"
    w.write(b"ZZZZ.AM.CA0130000.TXT NOBODY\n")  # a destination msc does not host
    assert (await asyncio.wait_for(r.readline(), HANG_S)).startswith(b"N E304")
    w.close()
