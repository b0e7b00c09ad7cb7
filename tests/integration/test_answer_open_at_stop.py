"""A stop must not silently lose the rest of a multi-part answer (PROTOCOL.md §4 "Stopping with
an answer open"; issue 12/13 trial item 2). A request answered in part, whose route declares an
answer window that has not ended, is in flight for a drain (bounded by drain_timeout_s); if it is
still open when the switch stops, its operator is told after the restart
``MSC.E302 SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; <n> [OF <m>] PARTS CAME`` — unless
its route declares how many parts a complete answer has (``answer_parts``) and all came: then it
holds no drain and owes no notice (issue 16)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from msc.config.load import load
from msc.server.parts import started
from msc.server.switch import Switch
from tests.conftest import PASSWORD, eventually, make_config

NOTICE = "MSC.E302 SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; "
UNANSWERED = "MSC.E302 SWITCH RESTARTED BEFORE THE ANSWER CAME"
WINDOW = "answer_window_s = 900"  # the first route's (QW, QV, EW …): answered in parts
DRAIN = "drain_timeout_s = 0.2"

SHORT = "timeout_s = 0.5\nanswer_window_s = 1"  # a window that ends before the stop
#: The route declares how many parts a complete answer has (CONFIG.md answer_parts): the state
#: file and NCIC for a QW, one part for a QV.
DECLARED = WINDOW + "\nanswer_parts = { QW = 2, QV = 1 }"
QW = "QW.CA0130000.NAM/PARTS, PAT.DOB/19800101"
HELD = {"latency_ms": 600_000}  # the stub answers nothing before the stop
#: The pass's warnings: one per pass for each kind of notice, with the count (issue 16).
TOLD_LOGS = {NOTICE: "switch.answer_open_at_restart", UNANSWERED: "switch.unanswered_after_restart"}


def told_logs(logs: list[dict]) -> dict[str, tuple]:
    """The recovery pass's warnings: event → (count, codes, txns)."""
    return {e["event"]: (e["count"], e.get("codes"), e["txns"]) for e in logs if e["event"] in TOLD_LOGS.values()}

# (stub's settings, request, parts seen before the stop, the notice after the restart (None:
# none)[, route's settings])
ROWS = [
    pytest.param({"parts": {"QW": (2, 2, 600_000)}}, QW, 1, NOTICE + "1 PART CAME", id="QW 1 of 2"),
    pytest.param({"parts": {"QW": (3, 3, 600_000)}}, QW, 1, NOTICE + "1 PART CAME", id="QW 1 of 3"),
    pytest.param({"parts": {"QV": (2, 2, 600_000)}}, "QV.CA0130000.LIC/7PART01", 1, NOTICE + "1 PART CAME",
                 id="QV 1 of 2"),
    # All parts came, but the window is still open and the route does not say how many a complete
    # answer has: more may come — the operator is told (how many came, so they can compare).
    pytest.param({"parts": {"QW": (2, 2, 10)}}, QW, 2, NOTICE + "2 PARTS CAME", id="QW 2 of 2, window open"),
    # A route with no answer window (QH/QR here): one answer expected, nothing open, no notice.
    pytest.param({}, "QR.CA0130000.CII/A12345678.NAM/DOE, JOHN.PUR/C.ATN/DET SMITH", 1, None, id="QR, no window"),
    pytest.param({}, "RQ.CA0130000.LIC/7ONE001", 1, None, id="RQ, no window"),
    # The window ended before the stop: the request is closed, nothing is said.
    pytest.param({"parts": {"QW": (2, 2, 600_000)}}, QW, 1, None, SHORT, id="QW 1 of 2, window over"),
    # The route declares the parts of a complete answer (issue 16, newcomer6 item 8):
    # answered in full → nothing is owed; a part missing → the notice, with the count.
    pytest.param({"parts": {"QW": (2, 2, 10)}}, QW, 2, None, DECLARED, id="QW 2 of 2 declared"),
    pytest.param({}, "QV.CA0130000.LIC/7PART02", 1, None, DECLARED, id="QV 1 of 1 declared"),
    pytest.param({"parts": {"QW": (2, 2, 600_000)}}, QW, 1, NOTICE + "1 OF 2 PARTS CAME", DECLARED,
                 id="QW 1 of 2 declared (two systems, one answered)"),
    pytest.param({"parts": {"QW": (3, 3, 600_000)}}, QW, 1, NOTICE + "1 OF 3 PARTS CAME",
                 WINDOW + "\nanswer_parts = 3", id="QW 1 of 3 declared"),
    pytest.param(HELD, QW, 0, UNANSWERED, DECLARED, id="QW not answered, declared"),
    pytest.param(HELD, "QV.CA0130000.LIC/7PART03", 0, UNANSWERED, DECLARED, id="QV not answered, declared"),
]


@pytest.mark.parametrize(("stub", "text", "seen", "notice", "route"),
                         [pytest.param(*r.values, *((WINDOW,) if len(r.values) == 4 else ()), id=r.id) for r in ROWS])
async def test_an_answer_still_open_at_a_stop_is_in_flight_and_noticed_after_the_restart(
        harness, stub, text, seen, notice, route):
    await harness.start_stub(**stub)
    sw = await harness.start_switch(route_extra=route, switch_extra=DRAIN)
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send(f"ICS1Q1.{text}")).type == "A"
    for _ in range(seen):
        assert (await c.output()).text.startswith("ICS1Q1.")
    # What the drain waits for: the open answer, or the answer not come (and nothing once a
    # one-answer request is answered, or an answer has every part its route declares).
    await eventually(lambda: sw.in_flight() == (1 if notice else 0))
    await sw.drain()  # times out (drain_timeout_s) with the window open, then stops
    c.close()
    harness.stubs[0].cfg.latency_ms = 0  # (a held stub answers what comes after the restart at once)
    with capture_logs() as logs:
        harness.switch = Switch(load(harness.tmp / "msc.toml"))
        await harness.switch.start()
        # The restart's pass runs beside serving (its notices are queued outputs): wait for it, so
        # that "no notice" is a fact and not a race with the next answer.
        assert await started(harness.switch.recovery) == (1 if notice else 0)
    told = told_logs(logs)  # the pass's one warning for the notice (none without one)
    if notice:
        [(event, (count, codes, [txn]))] = told.items()
        assert event == TOLD_LOGS[NOTICE if notice.startswith(NOTICE) else UNANSWERED] and count == 1, told
        assert codes == ({"E302": 1} if notice == UNANSWERED else None) and txn, told
    else:
        assert told == {}, told
    c2 = await harness.client()
    assert (await c2.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    if notice:
        assert (await c2.output()).text == f"ICS1Q1.{notice}"
    assert (await c2.send("ICS1Q2.RQ.CA0130000.LIC/7AFTER1")).type == "A"
    first = (await c2.output()).text
    assert first.startswith("ICS1Q2.RQ."), first  # nothing else before the next answer
    # A second restart says nothing more: the notice is journaled with the request's txn.
    await harness.switch.stop()
    with capture_logs() as logs:
        harness.switch = Switch(load(harness.tmp / "msc.toml"))
        await harness.switch.start()
        assert await started(harness.switch.recovery) == 0
    assert told_logs(logs) == {}
    c3 = await harness.client()
    assert (await c3.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    assert (await c3.send("ICS1Q3.RQ.CA0130000.LIC/7AFTER2")).type == "A"
    assert (await c3.output()).text.startswith("ICS1Q3.RQ.")


#: The III route of the test config (QH, QR), given an answer window and, optionally, the field
#: that ends an answer (CONFIG.md answer_ends_on): the FBI's NO RECORD — then no state answers.
III_WINDOW = 'category = "cori"\nanswer_window_s = 900'
III_ENDS = III_WINDOW + '\nanswer_ends_on = ["NO RECORD"]'
NO_RECORD_QR = "QR.CA0130000.FBI/123456780.NAM/DOE, JOHN.PUR/C.ATN/DET SMITH"  # the stub (seed 1): no record
RECORD_QR = "QR.CA0130000.CII/A12345678.NAM/DOE, JOHN.PUR/C.ATN/DET SMITH"  # the stub: FBI, then a state


@pytest.mark.parametrize(("route", "text", "notice"), [
    pytest.param(III_ENDS, NO_RECORD_QR, None, id="QR NO RECORD, the route names the end field"),
    pytest.param(III_ENDS, RECORD_QR, NOTICE + "1 PART CAME", id="QR with a record, 1 part of an unknown count"),
    # Without answer_ends_on the count of a QR is not known: a NO RECORD is told too (kept noisy).
    pytest.param(III_WINDOW, NO_RECORD_QR, NOTICE + "1 PART CAME", id="QR NO RECORD, no end field declared"),
])
async def test_a_part_that_ends_its_answer_holds_no_drain_and_owes_no_notice(harness, route, text, notice):
    stub = await harness.start_stub(parts={"QR": (2, 2, 600_000)})
    path = make_config(harness.tmp, upstream_ports=[stub.port], switch_extra=DRAIN)
    path.write_text(path.read_text().replace('category = "cori"', route, 1))
    sw = harness.switch = Switch(load(path))
    await sw.start()
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send(f"ICS1Q1.{text}")).type == "A"
    first = (await c.output()).text
    assert first.startswith("ICS1Q1.QR.CA0130000.") and ("NO RECORD" in first) == (text == NO_RECORD_QR), first
    await eventually(lambda: sw.in_flight() == (1 if notice else 0))
    await sw.drain()
    c.close()
    harness.switch = Switch(load(path))
    await harness.switch.start()
    assert await started(harness.switch.recovery) == (1 if notice else 0)
    c2 = await harness.operator()
    if notice:
        assert (await c2.output()).text == f"ICS1Q1.{notice}"
    assert (await c2.send("ICS1Q2.RQ.CA0130000.LIC/7AFTER3")).type == "A"
    first = (await c2.output()).text
    assert first.startswith("ICS1Q2.RQ."), first  # nothing else before the next answer
