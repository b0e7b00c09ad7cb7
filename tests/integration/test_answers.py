"""Issue 12 items 3 and 4 through the real switch and the stub: one request with several answers,
and unsolicited notifications that must reach a 24 x 7 station."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from msc.journal.search import Query, search
from tests.conftest import PASSWORD, eventually
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)

QR = "ICS1A1.QR.CA0130000.CII/A12345678.NAM/DOE, JOHN.PUR/C.ATN/DET SMITH.REL/DA OFFICE"


async def msc(*args: str, input: str | None = None) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "msc", *args, stdin=asyncio.subprocess.PIPE,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(input.encode() if input else None), 60)
    return p.returncode, out.decode(), err.decode()


def records(harness, **q):
    sw = harness.switch
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(**q)))


async def pooled(harness, user="EC0001"):
    """A pooled MDT session: (client, the mnemonic the ACP lent it)."""
    c = await harness.client()
    f = await c.logon("ECMDT", user, PASSWORD)
    assert f.type == "A", f
    return c, f.text.split(".")[0].split("/")[1]


def metric(harness, name: str, **labels) -> float:
    text, _ = harness.switch.metrics.exposition()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


async def committed(harness):
    await harness.switch.journal.flush()


# -- item 3: several answers ----------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3])
async def test_every_part_of_a_qr_reaches_the_operator_with_the_request_txn_user_and_cori(harness, n):
    await harness.start_stub(parts={"QR": (n, n, 50)})
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    assert (await c.send(QR)).type == "A"
    texts = [(await c.output()).text for _ in range(n)]
    assert texts[0].startswith("ICS1A1.QR.CA0130000.CRIMINAL HISTORY")
    assert all(t.startswith("ICS1A1.CR.CA0130000.") for t in texts[1:])  # state responses over Nlets
    await committed(harness)
    (request,) = records(harness, kind="FORWARDED", mke="QR")
    answers = [r for r in records(harness, txn=request.txn, kind="RECEIVED") if r.peer == "clets"]
    assert len(answers) == n
    for r in answers:
        assert (r.txn, r.user, r.mnemonic, r.purpose, r.requester, r.recipient) == (
            request.txn, "TS0001", "ICS1", "C", "DET SMITH", "DA OFFICE")
    assert metric(harness, "msc_answer_parts_total", part="first") == 1
    assert metric(harness, "msc_answer_parts_total", part="further") == n - 1
    # Latency is one observation per request, not one per part.
    await eventually(lambda: metric(harness, "msc_transaction_seconds_count", category="cori") == 1)
    assert not any("MSC.E303" in r.text for r in records(harness, txn=request.txn))
    # The investigator's `msc journal search --txn` shows the request and every part.
    cfg = str(harness.tmp / "msc.toml")
    rc, out, err = await msc("journal", "search", "--config", cfg, "--as", "IN0001", "--case", "IA-12-3",
                             "--password-stdin", "--format", "jsonl", "--txn", request.txn, input=PASSWORD + "\n")
    assert rc == 0, err
    chain = [json.loads(line) for line in out.splitlines()]
    kinds = [r["kind"] for r in chain]
    assert kinds[:2] == ["RECEIVED", "FORWARDED"]
    assert kinds.count("RECEIVED") == 1 + n
    parts = [r for r in chain if r["kind"] == "RECEIVED" and r["peer"] == "clets"]
    assert [p["text"] for p in parts] == texts
    assert all(p["user"] == "TS0001" and p["purpose"] == "C" for p in parts)


async def test_pooled_mdt_gets_the_ncic_hit_not_the_printer(harness):
    """A pooled MDT's QW answered by the state file and then by NCIC: both reach the officer."""
    await harness.start_stub(parts={"QW": (2, 2, 100)})
    await harness.start_switch()
    await harness.wait_upstream()
    printer = await harness.client()
    assert (await printer.send("ECP1.BIND")).type == "A"
    mdt, mne = await pooled(harness)
    assert (await mdt.send(f"{mne}K9.QW.CA0130100.NAM/DOE, JOHN.DOB/19800101")).type == "A"
    first, second = (await mdt.output()).text, (await mdt.output()).text
    assert ".QW.CA0130100.NO CALIFORNIA WANT." in first
    assert ".QW.CA0130100." in second and "CALIFORNIA" not in second
    await committed(harness)
    (request,) = records(harness, kind="FORWARDED", mke="QW")
    answers = [r for r in records(harness, txn=request.txn, kind="RECEIVED") if r.peer == "clets"]
    assert [(r.user, r.mnemonic) for r in answers] == [("EC0001", mne)] * 2
    assert printer.outputs.empty()


async def test_pooled_mdt_logged_off_second_part_goes_to_the_pool_printer_with_the_txn(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    printer = await harness.client()
    assert (await printer.send("ECP1.BIND")).type == "A"
    mdt, mne = await pooled(harness)
    header = f"{mne}K1"
    assert (await mdt.send(f"{header}.QW.CA0130100.NAM/DOE, JOHN.DOB/19800101")).type == "A"
    await mdt.output()
    assert (await mdt.send(f"{mne}.LOGOFF")).type == "A"
    # The NCIC part arrives after the allocation ended: its mnemonic may be lent to someone else.
    assert await stub.push(f"{header}.QW.CA0130100.NCIC WANTED PERSON HIT.NAM/DOE, JOHN") == "A"
    out = await printer.output()
    assert out.text == f"{header}.QW.CA0130100.NCIC WANTED PERSON HIT.NAM/DOE, JOHN"
    await committed(harness)
    (request,) = records(harness, kind="FORWARDED", mke="QW")
    answers = [r for r in records(harness, txn=request.txn, kind="RECEIVED") if r.peer == "clets"]
    assert [(r.user, r.mnemonic) for r in answers] == [("EC0001", mne), ("EC0001", "ECP1")]


async def test_logged_off_terminal_gets_later_parts_in_its_queue(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    assert (await c.send(QR)).type == "A"
    await c.output()
    assert (await c.send("ICS1.LOGOFF")).type == "A"
    c.close()
    assert await stub.push("ICS1A1.CR.CA0130000.AZ STATE RESPONSE TO III.SID/AZ1") == "A"
    again = await harness.operator("ICS1", "TS0002")
    assert (await again.output()).text == "ICS1A1.CR.CA0130000.AZ STATE RESPONSE TO III.SID/AZ1"
    await committed(harness)
    (request,) = records(harness, kind="FORWARDED", mke="QR")
    part = [r for r in records(harness, txn=request.txn, kind="RECEIVED") if r.peer == "clets"][-1]
    assert (part.user, part.purpose, part.requester) == ("TS0001", "C", "DET SMITH")


async def test_no_e303_when_a_first_part_came_and_parts_after_the_timeout_are_linked(harness):
    # timeout 1 s, answer window 6 s: the second part comes after the timeout, inside the window.
    await harness.start_stub(parts={"QW": (2, 2, 2500)})
    await harness.start_switch(timeout_s=1, route_extra="answer_window_s = 6")
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    assert (await c.send("ICS1A7.QW.CA0130000.NAM/DOE, JANE.DOB/19810101")).type == "A"
    texts = [(await c.output()).text for _ in range(2)]
    assert all(t.startswith("ICS1A7.QW.") for t in texts)
    assert not any(".MSC.E303" in t for t in texts)
    await committed(harness)
    assert metric(harness, "msc_rejects_total", code="E303") == 0
    assert metric(harness, "msc_answer_parts_total", part="further") == 1


async def test_part_after_the_window_is_late_but_linked_and_e303_only_without_answer(harness):
    # Window = timeout = 1 s: the second part (2.5 s) is after the window.
    await harness.start_stub(parts={"QW": (2, 2, 2500)})
    await harness.start_switch(timeout_s=1)
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    assert (await c.send("ICS1A8.QW.CA0130000.NAM/DOE, JANE.DOB/19810101")).type == "A"
    first, second = (await c.output()).text, (await c.output()).text
    assert first.startswith("ICS1A8.QW.") and second.startswith("ICS1A8.QW.")
    await committed(harness)
    assert metric(harness, "msc_answer_parts_total", part="late") == 1
    assert metric(harness, "msc_rejects_total", code="E303") == 0
    (request,) = records(harness, kind="FORWARDED", mke="QW")
    assert len([r for r in records(harness, txn=request.txn, kind="RECEIVED") if r.peer == "clets"]) == 2


async def test_late_part_after_late_answer_s_or_ambiguous_is_unsolicited(harness):
    stub = await harness.start_stub(latency_ms=5000)  # the stub's own answers come too late
    await harness.start_switch(timeout_s=0.3, switch_extra="late_answer_s = 0")
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    assert (await c.send("ICS1A9.QW.CA0130000.NAM/DOE, JANE.DOB/19810101")).type == "A"
    assert (await c.output()).text.startswith("ICS1A9.MSC.E303 ")
    assert await stub.push("ICS1A9.QW.CA0130000.LATE ANSWER") == "A"
    assert (await c.output()).text == "ICS1A9.QW.CA0130000.LATE ANSWER"
    await committed(harness)
    (late,) = [r for r in records(harness, kind="RECEIVED", mnemonic="ICS1") if r.text.endswith("LATE ANSWER")]
    (request,) = records(harness, kind="FORWARDED", mke="QW")
    assert late.txn != request.txn and late.user is None  # not linked: forgotten (late_answer_s = 0)
    assert metric(harness, "msc_unsolicited_total", **{"class": "unknown"}) == 1


# -- item 4: unsolicited notifications -------------------------------------------------------

# (NOTIFY kind, destination, ORI) → (mnemonic(s) it lands on, class counted)
NOTIFICATIONS = [
    ("$.L.", "ICS2", "CA0130000", {"ICS1"}, "locate"),          # the case: ICS2 is not 24x7
    ("$.H.", "ICS2", "CA0130000", {"ICS1"}, "hit-notification"),
    ("YQ", "ICS2", "CA0130000", {"ICS1"}, "hit-confirmation"),
    ("LW", "ICS2", "CA0130000", {"ICS1"}, "locate"),
    ("LV", "ICS2", "CA0130000", {"ICS1"}, "locate"),
    ("LM", "ICS2", "CA0130000", {"ICS1"}, "locate"),
    ("AA", "ICS2", "CA0130000", {"ICS1"}, "amber-alert"),
    ("$.8.", "ICS2", "CA0130000", {"ICS2"}, "ncic-notice"),
    ("$.K.", "ICS2", "CA0130000", {"ICS2"}, "ncic-notice"),
    ("$.M.", "ICS2", "CA0130000", {"ICS2"}, "ncic-notice"),
    ("AM", "ICS2", "CA0130000", {"ICS2"}, "administrative"),
    ("LQ", "ICS2", "CA0130000", {"ICS2"}, "nlets-generic"),     # not a locate, although it starts with L
    ("$.Z.", "ICS2", "CA0130000", {"ICS2"}, "unknown"),
    ("ZQ", "ICS2", "CA0130000", {"ICS2"}, "unknown"),
    ("$.L.", "ICS1", "CA0130000", {"ICS1"}, "locate"),          # already a 24x7 station
    ("$.L.", "CA0130000", "CA0130000", {"ICS1"}, "locate"),     # to the ORI: its duty station
    ("$.8.", "CA0130000", "CA0130000", {"ICS1", "ICS2"}, "ncic-notice"),  # every admin receiver
    ("$.L.", "ECC2", "CA0130100", {"ECP1"}, "locate"),          # a CAD workstation: host not 24x7
    ("$.8.", "ECC2", "CA0130100", {"ECC2"}, "ncic-notice"),
    ("$.H.", "ECM1", "CA0130100", {"ECP1"}, "hit-notification"),  # a pooled mnemonic: the printer
]


async def control(stub, *lines: str) -> list[str]:
    """Send lines to the stub's control port (as an operator of the stub would); its replies."""
    r, w = await asyncio.open_connection("127.0.0.1", stub.control_port)
    out = []
    for line in lines:
        w.write((line + "\n").encode())
        await w.drain()
        out.append((await asyncio.wait_for(r.readline(), HANG_S)).decode().strip())
    w.close()
    return out


async def test_every_notification_kind_lands_where_the_table_says(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")
    ics2 = await harness.operator("ICS2", "TS0002")
    host = await harness.client()
    assert (await host.send("ECC1.BIND")).type == "A"
    printer = await harness.client()
    assert (await printer.send("ECP1.BIND")).type == "A"
    clients = {"ICS1": ics1, "ICS2": ics2, "ECP1": printer, "ECC2": host}
    counted: dict[str, int] = {}
    for kind, dest, ori, where, cls in NOTIFICATIONS:
        assert await control(stub, f"NOTIFY {kind} {dest} {ori}") == ["A"], (kind, dest)
        got = set()
        for name in sorted(where):
            client = clients[name]
            out = await client.output()
            assert out.text.startswith(f"{dest}."), (kind, dest, out.text)
            if kind.startswith("$."):
                assert out.text[len(dest) + 1:].startswith(kind)
            got.add(name)
        assert got == where, (kind, dest)
        counted[cls] = counted.get(cls, 0) + 1
        for name, c in clients.items():
            assert c.outputs.empty(), (kind, dest, name)
    for cls, n in counted.items():
        assert metric(harness, "msc_unsolicited_total", **{"class": cls}) == n, cls
    # Each is journaled once per destination with its kind as the key, and no user.
    await committed(harness)
    locates = records(harness, kind="RECEIVED", mke="$.L.")
    assert [r.mnemonic for r in locates] == ["ICS1", "ICS1", "ICS1", "ECP1"]
    assert all(r.user is None and r.peer == "clets" for r in locates)


async def test_a_24x7_notice_for_an_offline_station_waits_in_the_duty_station_queue(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    assert await control(stub, "NOTIFY $.L. ICS2 CA0130000", "NOTIFY $.8. ICS2 CA0130000") == ["A", "A"]
    duty = await harness.operator("ICS1", "TS0001")
    assert (await duty.output()).text.startswith("ICS2.$.L.CA0130000.LOCATE")
    ics2 = await harness.operator("ICS2", "TS0002")
    assert (await ics2.output()).text.startswith("ICS2.$.8.CA0130000.")
    assert duty.outputs.empty()


async def test_a_configured_rule_changes_where_a_kind_goes(harness):
    stub = await harness.start_stub()
    await harness.start_switch(extra='''
[[unsolicited]]
name = "state-bulletin"
kinds = ["ZQ", "$.Z."]
deliver = "24x7"
''')
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")
    assert await control(stub, "NOTIFY ZQ ICS2 CA0130000", "NOTIFY $.Z. ICS2 CA0130000") == ["A", "A"]
    assert (await ics1.output()).text.startswith("ICS2.ZQ.")
    assert (await ics1.output()).text.startswith("ICS2.$.Z.")
    assert metric(harness, "msc_unsolicited_total", **{"class": "state-bulletin"}) == 2
    assert metric(harness, "msc_unsolicited_total", **{"class": "unknown"}) == 0


async def test_stub_control_refuses_a_notify_it_cannot_make(harness):
    stub = await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    assert await control(stub, "NOTIFY $.L. ICS2", "NOTIFY $.L.") == ["ERR ICS2 IS NOT AN ORI",
                                                                      "ERR NOTIFY KIND DEST [ORI]"]


async def test_late_part_two_remembered_requests_share_is_not_linked_but_delivered_and_counted(harness):
    stub = await harness.start_stub()
    await harness.start_switch(timeout_s=0.5)
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    for name in ("ONE, A", "TWO, B"):  # no ref: both requests have the header ICS1
        assert (await c.send(f"ICS1.QW.CA0130000.NAM/{name}.DOB/19800101")).type == "A"
        assert (await c.output()).text.startswith("ICS1.QW.")
    await eventually(lambda: harness.switch.router.requests.open_requests() == 0)
    before = metric(harness, "msc_answer_ambiguous_total")
    assert await stub.push("ICS1.QW.CA0130000.WHOSE PART IS THIS") == "A"
    assert (await c.output()).text == "ICS1.QW.CA0130000.WHOSE PART IS THIS"
    assert metric(harness, "msc_answer_ambiguous_total") == before + 1
    await committed(harness)
    (part,) = [r for r in records(harness, kind="RECEIVED") if r.text.endswith("WHOSE PART IS THIS")]
    requests = {r.txn for r in records(harness, kind="FORWARDED", mke="QW")}
    assert part.txn not in requests and part.user is None
