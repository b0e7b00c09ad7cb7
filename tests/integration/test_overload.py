"""Overload (PROTOCOL.md §5 "Overload", issue 16): the in-process switch and stub on loopback,
overloaded deterministically — its journal frozen by the test (tests.faults.FaultyWriter's hold)
while records wait, so that the journal's queue delay passes ``shed_wait_s`` however fast or
slow the machine is. New work is refused ``E307 SWITCH BUSY, TRY AGAIN`` and journaled like
every refusal; work in progress (an answer, unsolicited traffic, a LOGOFF) is not; a shed
request does not count towards ``max_refused_per_minute``; the setting is reloadable, and 0
turns shedding off.
"""

from __future__ import annotations

import asyncio

import pytest

from msc.journal.search import Query, search
from tests.conftest import eventually
from tests.faults import FaultyWriter
from tests.integration.test_fates import ctl, metric
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)

SHED = "E307 SWITCH BUSY, TRY AGAIN"

#: New work sent while the journal is frozen: (connection, text, its metric category).
NEW_WORK = [
    ("terminal", "ICS1N1.QW.CA0130000.NAM/SHED, ONE.DOB/19800101", "cjis"),
    ("terminal", "ICS1N2.DQ.CA0130000.OLN/N1234567", "dmv"),
    ("terminal", "ICS1N3.QH.CA0130000.NAM/SHED, TWO.DOB/19800101.PUR/C.ATN/DET", "cori"),
    ("terminal", "ICS1N4.AM.CA0130000.ICS2.TXT AN ADMINISTRATIVE MESSAGE", "admin"),
    ("terminal", "ICS1N5.ZZ.CA0130000.NAM/NO, ROUTE", "unknown"),
    ("host", "ECC2N6.*EC0001.#C0A8010A.QW.CA0130100.NAM/DOE, JOHN.DOB/19700101", "cjis"),
    ("host", "ECC3N7.*EC0002.#C0A8010B.DQ.CA0130100.OLN/D1234567", "dmv"),
]


async def journal(sw) -> list:
    await sw.journal.flush()
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query()))


async def reload_with(harness, sw, shed_wait_s: float) -> None:
    """Change ``[switch] shed_wait_s`` in msc.toml and reload (SIGHUP's path)."""
    path = harness.tmp / "msc.toml"
    text = path.read_text()
    assert "shed_wait_s = 0\n" in text
    path.write_text(text.replace("shed_wait_s = 0\n", f"shed_wait_s = {shed_wait_s}\n"))
    assert await sw.reload()


async def frozen_with_work_in_progress(harness, shed_wait_s: float):
    """A switch whose journal is frozen — a commit held in progress, records queued behind it
    longer than ``shed_wait_s`` — with an answer and an unsolicited message waiting in it.

    Shedding is off until everything that must be accepted is (the logons, the request whose
    answer will come during the freeze), then ``shed_wait_s`` is set by a reload: nothing before
    the freeze depends on how fast the machine commits. Returns the stub's pending push too."""
    stub = await harness.start_stub()
    sw = await harness.start_switch(shed_wait_s=0, switch_extra="shed_interval_s = 0",
                                    listener_extra="max_refused_per_minute = 2")
    await harness.wait_upstream()
    terminal = await harness.operator()
    host = await harness.client()
    assert (await host.send("ECC1.BIND")).type == "A"
    assert await ctl(stub, "hold on") == "OK"
    assert (await terminal.send("ICS1W1.QW.CA0130000.NAM/IN, PROGRESS.DOB/19800101")).type == "A"
    await eventually(lambda: len(stub.held) == 1)
    await reload_with(harness, sw, shed_wait_s)
    faults = FaultyWriter.install(sw.journal)
    faults.hold = asyncio.Event()
    assert await ctl(stub, "hold off") == "OK"  # the answer comes; its commit (or an earlier one) is held
    await eventually(lambda: faults.commits >= 1)
    # Behind the held commit, the next records queue: the journal's delay grows from here.
    pushed = asyncio.ensure_future(stub.push("ICS1.AM.CA0130000.TXT UNSOLICITED DURING THE OVERLOAD", timeout=HANG_S))
    await eventually(lambda: sw.journal.oldest_wait_s() > max(shed_wait_s, 0.05))
    return stub, sw, faults, {"terminal": terminal, "host": host}, pushed


@pytest.mark.parametrize("shed_wait_s", [0.05, 0.0], ids=["shedding", "shedding off"])
async def test_new_work_is_shed_while_the_journal_waits_and_work_in_progress_goes_on(harness, shed_wait_s):
    stub, sw, faults, conns, pushed = await frozen_with_work_in_progress(harness, shed_wait_s)
    before = metric(sw, "msc_frames_received_total", peer="client")
    sent = [asyncio.ensure_future(conns[who].send(text)) for who, text, _ in NEW_WORK]
    # Every one of them read and decided (counted after its message is handled) while frozen.
    await eventually(lambda: metric(sw, "msc_frames_received_total", peer="client") >= before + len(NEW_WORK))
    faults.hold.set()  # the journal commits again
    answers = await asyncio.gather(*sent)
    assert await pushed == "A"  # traffic from the upstream is never shed
    outputs: list[str] = []
    while not (any(o.startswith("ICS1W1.QW.") for o in outputs)  # the answer of the request in progress
               and any("UNSOLICITED DURING THE OVERLOAD" in o for o in outputs)):
        assert len(outputs) < 10, outputs
        outputs.append((await conns["terminal"].output()).text)
    if shed_wait_s:
        assert [(a.type, a.text) for a in answers] == [("N", SHED)] * len(NEW_WORK)
        for category in {c for _, _, c in NEW_WORK}:
            assert metric(sw, "msc_requests_shed_total", category=category, reason="journal") == sum(
                1 for _, _, c in NEW_WORK if c == category)
        # Journaled like every refusal (within the refusal budgets: here in full, or compact).
        refused = [r for r in await journal(sw) if r.kind == "REJECTED" and r.code == "E307"]
        assert len(refused) == len(NEW_WORK)
        assert metric(sw, "msc_rejects_total", code="E307") == len(NEW_WORK)
    else:
        assert [a.code for a in answers] == [None, None, None, None, "E301", None, None], answers
        assert metric(sw, "msc_requests_shed_total", category="cjis") == 0
    # Shed refusals are the switch's condition, not the sender's: more of them than
    # max_refused_per_minute (2) closed neither connection, and new work is taken again.
    for who, header in (("terminal", "ICS1"), ("host", "ECC2")):
        c = conns[who]
        assert not c.closed.done()
        text = (f"{header}T9.QW.CA0130000.NAM/AGAIN, LATER.DOB/19800101" if who == "terminal"
                else f"{header}T9.*EC0001.#C0A8010A.QW.CA0130100.NAM/AGAIN, LATER.DOB/19700101")
        assert (await try_again(sw, c, text)).type == "A"


async def try_again(sw, c, text: str, tries: int = 20):
    """What a client does with E307: send again once the switch is less busy (bounded)."""
    for _ in range(tries):
        f = await c.send(text)
        if f.type == "A" or f.text != SHED:
            return f
        await eventually(lambda: sw.journal.oldest_wait_s() == 0.0)
    raise AssertionError(f"still shed after {tries} tries")


@pytest.mark.parametrize("control", ["ICS1.LOGOFF", "ICS1.PWD.{old}.{new}"], ids=["LOGOFF", "PWD"])
async def test_a_session_s_own_control_is_never_shed(harness, control):
    from tests.conftest import PASSWORD

    _stub, sw, faults, conns, pushed = await frozen_with_work_in_progress(harness, 0.05)
    shed_before = metric(sw, "msc_requests_shed_total", category="cjis")
    answer = asyncio.ensure_future(conns["terminal"].send(control.format(old=PASSWORD, new="Shed-" + PASSWORD)))
    faults.hold.set()
    f = await answer
    assert f.code != "E307", f.text
    assert await pushed == "A"
    assert metric(sw, "msc_requests_shed_total", category="cjis") == shed_before


@pytest.mark.skipif(__import__("shutil").which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_the_overload_alert_rule_fires_on_shed_requests_and_clears():
    """config/prometheus/alerts.yml's MscSheddingLoad against tests/promtool/overload_alerts.test.yml."""
    import subprocess
    from pathlib import Path

    rules = Path(__file__).resolve().parents[1] / "promtool" / "overload_alerts.test.yml"
    r = subprocess.run(["promtool", "test", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


#: (max_inbound, unsolicited messages pushed while the journal is frozen): the link is held once
#: max_inbound of them wait for their commit.
HELD = [(2, 2), (2, 5), (4, 4)]


@pytest.mark.parametrize(("max_inbound", "pushed"), HELD)
async def test_a_request_for_an_upstream_whose_answers_are_held_is_shed(harness, max_inbound, pushed):
    """The second signal: msc stopped reading the link (``max_inbound`` of its messages wait for
    the journal). shed_wait_s is set far above anything the test waits, so the journal's own
    delay cannot be what sheds: a request for that upstream is shed (reason "upstream"), an AM to
    a local station — no upstream — is not."""
    stub = await harness.start_stub()
    sw = await harness.start_switch(shed_wait_s=0, upstream_extra=f"max_inbound = {max_inbound}")
    await harness.wait_upstream()
    c = await harness.operator()
    (harness.tmp / "msc.toml").write_text((harness.tmp / "msc.toml").read_text().replace(
        "shed_wait_s = 0\n", "shed_wait_s = 60\n"))
    assert await sw.reload()
    faults = FaultyWriter.install(sw.journal)
    faults.hold = asyncio.Event()
    pushes = [asyncio.ensure_future(stub.push(f"ICS1.AM.CA0130000.TXT HELD {i}", timeout=HANG_S)) for i in range(pushed)]
    link = sw.router.links["clets"]
    await eventually(lambda: link.holding)
    shed = asyncio.ensure_future(c.send("ICS1H1.QW.CA0130000.NAM/HELD, BACK.DOB/19800101"))
    local = asyncio.ensure_future(c.send("ICS1H2.AM.CA0130000.ICS2.TXT NOT FOR AN UPSTREAM"))
    await eventually(lambda: metric(sw, "msc_requests_shed_total", category="cjis", reason="upstream") == 1)
    faults.hold.set()
    assert ((await shed).type, (await shed).text) == ("N", SHED)
    assert (await local).type == "A"
    assert [await p for p in pushes] == ["A"] * pushed  # the upstream's traffic: all taken, none shed
    assert metric(sw, "msc_requests_shed_total", category="admin", reason="journal") == 0
