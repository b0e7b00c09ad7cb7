"""Keys that are themselves a response or one-way await no answer (PROTOCOL.md §4 "Keys that
await no answer"; issue 12/13 trial item 1): a YR (the hit confirmation *response*) — and a DR,
RR, KR, CR … sent back to a state that inquired — is forwarded and journaled, and nothing waits
for an answer to it: no MSC.E303, nothing held by a drain, no E302 after a restart."""

from __future__ import annotations

from msc.config.load import load
from msc.journal.search import Query, search
from msc.server.parts import started
from msc.server.switch import Switch
from tests.conftest import PASSWORD, eventually
from tests.waiting import HANG_S

RESPONSES = 'mke = ["DR", "RR", "KR", "CR"]\nupstream = "clets"\ncategory = "dmv"\n'
EXTRA = f"[[route]]\n{RESPONSES}"

# (header, text) of messages that await no answer: the YR, other YR forms, the Nlets
# responses a local agency sends back to a state's inquiry.
ONE_WAY = [
    ("ICS1YR1", "YR.CA0130000.NV0020000.TXTCON/Y.NAM/DOE, JOHN.NIC/W123456789"),
    ("ICS1YR2", "YR.CA0130000.NIC/W123456789.CON/N"),
    ("ICS1YR3", "YR.CA0130000.AZ,NV.TXTCON/Y.NIC/W000000001"),
    ("ICS1DR1", "DR.CA0130000.NV.TXTOLN/N1234567.NAM/DOE, JOHN"),
    ("ICS1RR1", "RR.CA0130000.AZ.TXTLIC/7ABC123.LIS/CA"),
    ("ICS1KR1", "KR.CA0130000.NV.TXTOLN/N1234567.LIC/7ABC123"),
    ("ICS1CR1", "CR.CA0130000.NV0020000.TXTNAM/DOE, JOHN.SID/CA12345678"),
]


def journal(sw, **q):
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(**q)))


async def test_responses_are_forwarded_journaled_and_await_nothing(harness):
    stub = await harness.start_stub()
    sw = await harness.start_switch(extra=EXTRA)
    await harness.wait_upstream()
    c = await harness.operator()
    for header, text in ONE_WAY:
        f = await c.send(f"{header}.{text}")
        assert f.type == "A", (header, f)
    log = await eventually(lambda: len(harness.stub_log()) == len(ONE_WAY) and harness.stub_log())
    assert log == [f"{h}.*TS0001.#7F000001.{t}" for h, t in ONE_WAY]  # forwarded unchanged
    # Acknowledged by the upstream, and that is all: nothing is in flight (the drain has nothing
    # to wait for), although every route's timeout (30 s) is far off.
    await eventually(lambda: sw.in_flight() == 0)
    await sw.journal.flush()
    forwarded = {r.text.split(".", 1)[0] for r in journal(sw, kind="FORWARDED")}
    assert forwarded == {h for h, _ in ONE_WAY}
    # A key that does await its answer, sent after them: its answer is the next output (no
    # notice about any of the responses before it).
    assert (await c.send("ICS1Q1.QW.CA0130000.NAM/AFTER, ALL.DOB/19800101")).type == "A"
    assert (await c.output()).text.startswith("ICS1Q1.QW.")
    assert stub is harness.stubs[0]


async def test_after_a_restart_a_response_gets_no_e302(harness):
    """The switch stops while a request and a YR are upstream with no answer: after the restart
    the request's operator is told E302, and nothing is said about the YR."""
    stub = await harness.start_stub()
    sw = await harness.start_switch(extra=EXTRA)
    await harness.wait_upstream()
    c = await harness.operator()
    assert await _ctl(stub, "hold on") == "OK"
    assert (await c.send("ICS1Q1.QW.CA0130000.NAM/HELD, HANK.DOB/19800101")).type == "A"
    for header, text in ONE_WAY:
        assert (await c.send(f"{header}.{text}")).type == "A"
    await eventually(lambda: len(harness.stub_log()) == 1 + len(ONE_WAY))
    c.close()
    await sw.stop()
    harness.switch = Switch(load(harness.tmp / "msc.toml"))
    await harness.switch.start()
    # The restart's pass runs beside serving (its notices are queued outputs): waited for, so that
    # what comes next is a fact, not a race with it.
    assert await started(harness.switch.recovery) == 1
    c2 = await harness.client()
    assert (await c2.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    assert (await c2.output()).text == "ICS1Q1.MSC.E302 SWITCH RESTARTED BEFORE THE ANSWER CAME"
    assert await _ctl(stub, "hold off") == "OK"
    assert (await c2.send("ICS1Q2.QV.CA0130000.LIC/7NEXT01")).type == "A"
    nxt = await c2.output()
    assert nxt.text.startswith("ICS1Q2.QV."), nxt.text  # no E302 for any response came before it


async def _ctl(stub, command: str) -> str:
    import asyncio

    r, w = await asyncio.open_connection("127.0.0.1", stub.control_port)
    w.write(f"/{command}\n".encode())
    line = (await asyncio.wait_for(r.readline(), HANG_S)).decode().strip()
    w.close()
    return line
