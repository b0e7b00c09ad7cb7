"""Outputs for a pooled mnemonic whose session ended go to the pool's defined destination, never to
the next operator lent the same mnemonic (PROTOCOL.md §4, PPP §1.6.2 B 1 f; newcomer6 finding 3:
after a failover EC0002 was lent ECM1 and got 44 ``MSC.E302`` notices about EC0001's queries).

The real Switch in process, the upstream simulator, the pool ECMDT (ECM1, ECM2; printer ECP1)
over loopback. Each case: EC0001's session asks, the session ends in some way, the request's fate
comes (a notice, a late part, an output waiting in the queue), and EC0002 holds the same mnemonic
by then. The printer gets it, under the request's txn and user; EC0002 gets nothing of it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from tests.conftest import PASSWORD, eventually, make_config
from tests.integration.test_fates import ctl

pytestmark = pytest.mark.timeout(120)

QW = "QW.CA0130100.NAM/DOE, JOHN.DOB/19800101"




async def pool_logon(c, user: str) -> str:
    f = await c.logon("ECMDT", user, PASSWORD)
    assert f.type == "A", f
    return f.text.split(".")[0].split("/")[1]


async def records(sw) -> list:
    await sw.journal.flush()
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query()))


async def restart(harness):
    from msc.server.switch import Switch

    await harness.switch.stop()
    harness.switch = Switch(load(harness.tmp / "msc.toml"))
    await harness.switch.start()
    await harness.wait_upstream()
    return harness.switch


async def printer(harness):
    p = await harness.client()
    assert (await p.send("ECP1.BIND")).type == "A"
    return p


# How the asker's session ends, and what then comes for its request:
#   logoff        — LOGOFF, then the fate comes
#   disconnect    — the connection drops, then the fate comes
#   relogon       — the same connection logs on at the pool again (a new loan of the same mnemonic)
# and the fate: E303 (no answer within timeout_s), E302 (the link is lost), a late part of the answer.
CASES = [
    pytest.param("logoff", "E303", id="logoff then no answer within timeout_s: E303"),
    pytest.param("logoff", "E302", id="logoff then the link is lost: E302"),
    pytest.param("disconnect", "E302", id="disconnect then the link is lost: E302"),
    pytest.param("relogon", "E302", id="relogon then the link is lost: E302"),
    pytest.param("relogon", "E303", id="relogon then no answer: E303"),
    pytest.param("relogon", "part", id="relogon then the answer's second part"),
    pytest.param("disconnect", "part", id="disconnect then the answer's second part"),
]


@pytest.mark.parametrize(("ending", "fate"), CASES)
async def test_the_fate_of_an_ended_pool_session_s_request_goes_to_the_pool_printer(harness, ending, fate):
    stub = await harness.start_stub()
    sw = await harness.start_switch(upstream_extra="ack_timeout_s = 0.5")
    await harness.wait_upstream()
    prn = await printer(harness)
    other = await harness.client()
    other_mne = await pool_logon(other, "EC0002")  # holds the first free mnemonic
    asker = await harness.client()
    mne = await pool_logon(asker, "EC0001")
    header = f"{mne}K1"
    if fate == "part":
        assert (await asker.send(f"{header}.{QW}")).type == "A"
        assert (await asker.output()).text.startswith(f"{header}.QW.")
    else:
        assert await ctl(stub, "hold on") == "OK"
        assert (await asker.send(f"{header}.{QW}")).type == "A"
        await eventually(lambda: len(stub.held) == 1, timeout=30)
    # The asker's session ends; then its mnemonic is lent again (to EC0002, or on a relogon).
    if ending == "logoff":
        assert (await asker.send(f"{mne}.LOGOFF")).type == "A"
    elif ending == "disconnect":
        asker.close()
        await asker.wait_closed()
    if ending == "relogon":
        assert await pool_logon(asker, "EC0001") == mne  # the same mnemonic, a new loan
        holder = asker
    else:
        await eventually(lambda: sw.acp.holder(mne) is None, timeout=30)
        assert (await other.send(f"{other_mne}.LOGOFF")).type == "A"
        assert await pool_logon(other, "EC0002") == mne  # released first, lent first
        holder = other
    # The request's fate comes.
    if fate == "E303":
        sw.router.requests.clock = lambda: time.monotonic() + 3600  # past timeout_s
    elif fate == "E302":
        await stub.stop()
    else:
        assert await stub.push(f"{header}.QW.CA0130100.NCIC WANTED PERSON HIT.NAM/DOE, JOHN") == "A"
    expected = {"E303": f"{header}.MSC.E303 NO RESPONSE FROM CLETS WITHIN 30 S",
                "E302": f"{header}.MSC.E302 CLETS LINK LOST BEFORE THE ANSWER",
                "part": f"{header}.QW.CA0130100.NCIC WANTED PERSON HIT.NAM/DOE, JOHN"}[fate]
    assert (await prn.output(timeout=30)).text == expected
    journal = await records(sw)
    (request,) = [r for r in journal if r.kind == "FORWARDED"]
    (record,) = [r for r in journal if r.kind == "RECEIVED" and r.text == expected]
    assert (record.mnemonic, record.user, record.txn) == ("ECP1", "EC0001", request.txn)
    # Its delivery at the printer (no one logged on there) names the operator whose request it
    # answers, so a search by user finds where it went.
    delivered = await printed(sw, record.osn)
    assert (delivered.user, delivered.txn) == ("EC0001", request.txn)
    assert {(r.kind, r.osn) for r in await by_user(sw, "EC0001") if r.mnemonic == "ECP1"} == \
        {("RECEIVED", record.osn), ("DELIVERED", record.osn)}
    # Nothing of it reached the next holder of the mnemonic, nor waits in its queue.
    assert not [r for r in journal if r.mnemonic == mne and r.kind == "RECEIVED"
                and (r.text == expected or r.peer == "MSC")]
    assert not [o.text for o in drain(holder) if o.text.startswith(f"{header}.")]


async def printed(sw, osn: int):
    """The DELIVERED record of the printer's output ``osn`` (its acknowledgement is written after
    the printer got it: waited for)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not (found := [r for r in await records(sw) if r.kind == "DELIVERED" and r.mnemonic == "ECP1"
                         and r.osn == osn]):
        assert asyncio.get_running_loop().time() < deadline, f"no DELIVERED record for ECP1 OSN {osn}"
        await asyncio.sleep(0.05)
    (record,) = found
    return record


async def by_user(sw, user: str) -> list:
    """What ``msc journal search --user`` finds."""
    await sw.journal.flush()
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(user=user)))


def drain(c) -> list:
    out = []
    while not c.outputs.empty():
        out.append(c.outputs.get_nowait())
    return out


# The switch stops (a failover, a restart) with EC0001's request unanswered upstream, or with
# its answer delivered and not yet acknowledged: every loan of the last run ended with it.
RESTARTS = [
    pytest.param("unanswered", id="unanswered at the stop: the recovery pass's E302"),
    pytest.param("unacknowledged", id="answer waiting unacknowledged in the pooled queue"),
]


@pytest.mark.parametrize("left", RESTARTS)
async def test_after_a_restart_a_pooled_mnemonic_s_traffic_goes_to_the_pool_printer(harness, left):
    from tests.wire import WireClient

    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    asker = await WireClient.connect(harness.port, auto_ack=False)
    await asker.banner()
    mne = await pool_logon(asker, "EC0001")
    header = f"{mne}R1"
    if left == "unanswered":
        assert await ctl(stub, "hold on") == "OK"
    assert (await asker.send(f"{header}.QV.CA0130100.LIC/1ABC234")).type == "A"
    if left == "unanswered":
        await eventually(lambda: len(stub.held) == 1, timeout=30)
        expected = f"{header}.MSC.E302 SWITCH RESTARTED BEFORE THE ANSWER CAME"
    else:
        expected = (await asker.output(timeout=30)).text  # not acknowledged
        assert expected.startswith(f"{header}.QV.")
    sw = await restart(harness)
    # Whoever this run lends the mnemonics to, before or after the recovery pass ran …
    holders = [await harness.client() for _ in range(2)]
    assert sorted([await pool_logon(c, "EC0002") for c in holders]) == ["ECM1", "ECM2"]
    await sw.recovery
    # … the printer gets it (queued for it until it binds), with the request's txn and user.
    prn = await printer(harness)
    got = [(await prn.output(timeout=30)).text]
    assert got == [expected]
    journal = await records(sw)
    (request,) = [r for r in journal if r.kind == "FORWARDED"]
    on_printer = [r for r in journal if r.kind == "RECEIVED" and r.mnemonic == "ECP1"]
    assert [(r.text, r.txn) for r in on_printer] == [(expected, request.txn)]
    # A redirected output keeps its txn and its user (it kept only the txn: the user was None).
    assert [r.user for r in on_printer] == ["EC0001"]
    # Its delivery names the user too, unless the copy was made before the stop (the switch's stop
    # ended the loan: "unacknowledged") and waited at the printer across the restart: a queue
    # restored at start keeps each output's txn, not its user (PROTOCOL.md §4).
    delivered = await printed(sw, on_printer[0].osn)
    assert delivered.user == ("EC0001" if left == "unanswered" else None)
    for c in holders:
        assert not [o.text for o in drain(c) if o.text.startswith(f"{header}.")]
    if left == "unacknowledged":  # the original's fate is written: no run delivers it again
        (moved,) = [r for r in journal if r.kind == "UNDELIVERED" and r.mnemonic == mne and "REDIRECTED TO ECP1" in r.text]
        assert (moved.user, moved.txn) == ("EC0001", request.txn)


# A pool with no defined destination: msc's notice for an ended session is journaled and recorded
# undelivered (E306), never queued for the next holder.
async def test_a_notice_for_an_ended_session_of_a_pool_without_printer_is_recorded_undelivered(harness):
    from msc.server.switch import Switch

    stub = await harness.start_stub()
    path = make_config(harness.tmp, upstream_ports=[stub.port], upstream_extra="ack_timeout_s = 0.5")
    path.write_text(path.read_text().replace('unsolicited_to = "ECP1"\n', ""))
    sw = harness.switch = Switch(load(path))
    await sw.start()
    await harness.wait_upstream()
    asker = await harness.client()
    mne = await pool_logon(asker, "EC0001")
    assert await ctl(stub, "hold on") == "OK"
    assert (await asker.send(f"{mne}K7.{QW}")).type == "A"
    await eventually(lambda: len(stub.held) == 1, timeout=30)
    assert (await asker.send(f"{mne}.LOGOFF")).type == "A"
    holder = await harness.client()
    assert await pool_logon(holder, "EC0002") != mne
    await stub.stop()

    async def fate():
        journal = await records(sw)
        return [r for r in journal if r.kind == "UNDELIVERED" and r.mnemonic == mne and r.code == "E306"]

    deadline = asyncio.get_running_loop().time() + 30
    while not (undelivered := await fate()):
        assert asyncio.get_running_loop().time() < deadline, "no E306 record"
        await asyncio.sleep(0.05)
    journal = await records(sw)
    (notice,) = [r for r in journal if r.kind == "RECEIVED" and r.peer == "MSC"]
    assert notice.text == f"{mne}K7.MSC.E302 CLETS LINK LOST BEFORE THE ANSWER"
    assert (notice.user, notice.mnemonic) == ("EC0001", mne)
    assert undelivered[0].text == f"OSN {notice.osn} POOLED SESSION ENDED, NO DEFINED DESTINATION (E306)"
    assert (undelivered[0].user, undelivered[0].txn) == ("EC0001", notice.txn)  # found by --user, as the notice
    # The next loan of that mnemonic starts with nothing of it.
    again = await harness.client()
    assert await pool_logon(again, "EC0002") == mne
    assert not [o.text for o in drain(holder) + drain(again) if o.text.startswith(f"{mne}K7.")]


# An answer printed at the pooled terminal and not acknowledged when its loan ends waits in the
# mnemonic's queue; the end of the loan moves it to the printer (Services.release_pooled, or the
# new loan's Services.bound). The move, the copy and its delivery keep the asker's user.
LEFT_WAITING = [
    pytest.param("disconnect", id="the connection drops"),
    pytest.param("logoff", id="LOGOFF"),
    pytest.param("relogon", id="a relogon of the same connection: a new loan"),
    pytest.param("idle-printer", id="the printer binds only after the move"),
]


@pytest.mark.parametrize("ending", LEFT_WAITING)
async def test_an_output_moved_from_a_pooled_queue_keeps_the_user_it_answered(harness, ending):
    from tests.wire import WireClient

    await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    prn = await printer(harness) if ending != "idle-printer" else None
    other = await harness.client()
    await pool_logon(other, "EC0002")  # holds the other mnemonic: a relogon gets the same one again
    asker = await WireClient.connect(harness.port, auto_ack=False)
    await asker.banner()
    mne = await pool_logon(asker, "EC0001")
    header = f"{mne}W1"
    assert (await asker.send(f"{header}.QV.CA0130100.LIC/1ABC234")).type == "A"
    expected = (await asker.output(timeout=30)).text  # printed, not acknowledged: it waits
    if ending == "logoff":
        assert (await asker.send(f"{mne}.LOGOFF")).type == "A"
    elif ending == "relogon":
        assert await pool_logon(asker, "EC0001") == mne
    else:
        asker.close()
        await asker.wait_closed()
    if prn is None:
        await eventually(lambda: sw.acp.holder(mne) is None, timeout=30)
        prn = await printer(harness)
    assert (await prn.output(timeout=30)).text == expected
    journal = await records(sw)
    (request,) = [r for r in journal if r.kind == "FORWARDED"]
    (original,) = [r for r in journal if r.kind == "RECEIVED" and r.mnemonic == mne and r.text == expected]
    (moved,) = [r for r in journal if r.kind == "UNDELIVERED" and r.mnemonic == mne]
    (copy,) = [r for r in journal if r.kind == "RECEIVED" and r.mnemonic == "ECP1"]
    assert moved.text == f"OSN {original.osn} POOLED SESSION ENDED, REDIRECTED TO ECP1 AS OSN {copy.osn}"
    delivered = await printed(sw, copy.osn)
    for r in (original, moved, copy, delivered):
        assert (r.user, r.txn) == ("EC0001", request.txn), r
    found = {(r.kind, r.mnemonic, r.osn) for r in await by_user(sw, "EC0001")}
    assert {("UNDELIVERED", mne, original.osn), ("RECEIVED", "ECP1", copy.osn),
            ("DELIVERED", "ECP1", copy.osn)} <= found
    assert not [o.text for o in drain(asker) + drain(other) if o.text == expected]  # only the printer got it
