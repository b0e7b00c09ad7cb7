"""Issue 12 items 1, 2 and 6 through the real Switch and the upstream stub, over loopback.

Nlets and state message forms are accepted, forwarded as sent after the inserted OIF and TAF,
journaled and indexed; control bytes follow the byte policy of PROTOCOL.md §1 in both
directions; the message-key edits refuse what the upstream cannot answer with one E108 that
names every problem.
"""

from __future__ import annotations

import asyncio

import pytest

from msc.journal.search import Query, search
from msc.journal.tokens import normalize
from msc.protocol.message import wire_text
from tests.conftest import eventually
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)

ALLOWED = {0x09, 0x0A, 0x0C, 0x0D, 0x7F}
EVERY_CONTROL = [*range(0x00, 0x20), 0x7F, 0x80, 0xC3, 0xFF]


def journal(harness, q: Query) -> list:
    sw = harness.switch
    return list(search(sw.settings.journal_dir, sw.journal.keyring, q))


def stub_log(harness) -> list[str]:
    """The stub's --log, one message a line (split on LF only: a FF inside a line is data)."""
    from pathlib import Path

    p = Path(harness.stubs[0].cfg.log_path)
    return p.read_text(encoding="ascii", errors="backslashreplace").split("\n")[:-1] if p.exists() else []


def logged(text: str) -> str:
    """How the stub's --log writes a received message (CR and LF escaped)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


# Item 1: one further form per row — keys, destination lists (state codes and ORIs mixed),
# control fields present or not, values with spaces and commas, layout between fields.
# (text the terminal sends, a token the journal must find)
NLETS_TRAFFIC = [
    ("DQ.CA0130000.NV.TXTOLN/N1234567", ("OLN", "N1234567")),
    ("DQ.CA0130000.AZ,NV.TXTNAM/DOE, JOHN.DOB/19800101.SEX/M", ("NAM", "DOE, JOHN")),
    ("RQ.CA0130000.AZ,NV0000000.*RQ7.TXT\r\nLIC/7ABC123.LIY/2025.LIT/PC", ("LIC", "7ABC123")),
    ("RQ.CA0130000.OR.TXT VIN/1HGCM82633A004352", ("VIN", "1HGCM82633A004352")),
    ("QW.CA0130000.NL.TXT\r\nNAM/ROE, RICHARD.\r\nDOB/19751231.\r\n", ("DOB", "19751231")),
    ("QH.CA0130000.TX.TXTNAM/DOE, JANE.DOB/19820202.PUR/C.ATN/DET HOLMES", ("ATN", "DET HOLMES")),
    ("YQ.CA0130000.AZ0000000.TXT\r\nRTY/SS.PRI/R.OCA/10000000000.NIC/V111110000.\r\nREM/PLS CONFIRM STILL STOLEN.",
     ("NIC", "V111110000")),
    ("YR.CA0130000.CA0340000.*HC1.TXTRTY/SS.CON/Y.NIC/W123456789.REM/CONFIRMED", ("NIC", "W123456789")),
]


async def test_nlets_forms_pass_through_journaled_and_indexed(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    for i, (text, _token) in enumerate(NLETS_TRAFFIC):
        ack = await c.send(f"ICS1N{i}.{text}")
        assert ack.type == "A", (text, ack.text)
    log = await eventually(lambda: len(stub_log(harness)) == len(NLETS_TRAFFIC) and stub_log(harness))
    for i, (text, _token) in enumerate(NLETS_TRAFFIC):
        # forwarded unchanged after the inserted *OIF.#TAF (PPP §1.6.6 C)
        assert logged(f"ICS1N{i}.*TS0001.#7F000001.{text}") in log
    await eventually(lambda: len(journal(harness, Query(kind="FORWARDED", mnemonic="ICS1"))) >= len(NLETS_TRAFFIC))
    for i, (text, (tag, value)) in enumerate(NLETS_TRAFFIC):
        found = journal(harness, Query(kind="RECEIVED", mnemonic="ICS1", tokens=[(tag, normalize(value))]))
        assert any(r.text == f"ICS1N{i}.*TS0001.#7F000001.{text}" or r.text == f"ICS1N{i}.{text}" for r in found), text


async def test_input_control_bytes_every_one(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    # the input: a vehicle query ended by CR LF
    assert (await c.send(b"ICS1I.QV.CA0130000.LIC/7ABC123.LIS/CA\r\n")).type == "A"
    sent = 1
    for byte in EVERY_CONTROL:
        # the byte inside free text (MIS/): HT is data there, DEL ignored, CR LF FF end the field
        payload = b"ICS1X%02X.QV.CA0130000.LIC/7ABC123.MIS/CA" % byte + bytes([byte]) + b"VIN/1HGCM82633A004352"
        reply = await c.send(payload)
        if byte in ALLOWED:
            assert reply.type == "A", (hex(byte), reply.text)
            sent += 1
        else:
            assert reply.code == "E102", (hex(byte), reply.text)
        # a control byte in a routing field is refused whatever it is
        assert (await c.send(b"ICS1R.QV.CA01" + bytes([byte]) + b"30000.LIC/7ABC123")).code == "E102"
    log = await eventually(lambda: len(stub_log(harness)) == sent and stub_log(harness))
    assert logged("ICS1I.*TS0001.#7F000001.QV.CA0130000.LIC/7ABC123.LIS/CA\r\n") in log
    for byte in ALLOWED:
        raw = (b"ICS1X%02X.*TS0001.#7F000001.QV.CA0130000.LIC/7ABC123.MIS/CA" % byte + bytes([byte])
               + b"VIN/1HGCM82633A004352")
        assert logged(raw.decode("ascii")) in log  # the upstream gets the text exactly as sent
    refused = journal(harness, Query(kind="REJECTED", mnemonic="ICS1"))
    assert sum(1 for r in refused if r.code == "E102") == 2 * len(EVERY_CONTROL) - len(ALLOWED)


async def test_upstream_answer_with_any_byte_is_delivered_never_no_response(harness):
    # The stub's own answers come a minute late: the answers below, pushed through its control
    # port, are the ones the switch matches to the requests.
    stub = await harness.start_stub(latency_ms=60_000)
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    # the output: a TAB and a form feed in a QV answer, pushed as a control-port line
    assert (await c.send("ICS1T.QV.CA0130000.LIC/7TAB001")).type == "A"
    r, w = await asyncio.open_connection("127.0.0.1", stub.control_port)
    w.write(b"ICS1T.QV.CA0130000.NO NCIC WANT\\tLIC/7TAB001\\f\n")
    assert (await asyncio.wait_for(r.readline(), HANG_S)) == b"A\n"
    w.close()
    out = await c.output()
    assert out.payload == b"ICS1T.QV.CA0130000.NO NCIC WANT\tLIC/7TAB001\f"
    # every C0 byte, DEL and bytes of the high half
    expected = {}
    for byte in EVERY_CONTROL:
        header = f"ICS1B{byte:02X}"
        assert (await c.send(f"{header}.QV.CA0130000.LIC/7TAB{byte:03d}")).type == "A"
        answer = f"{header}.QV.CA0130000.NO NCIC WANT{chr(byte)}LIC/7TAB{byte:03d}"
        assert await stub.push(answer) == "A", hex(byte)  # never N E102 to the upstream
        out = await c.output()
        shown = chr(byte).encode("latin-1") if byte in ALLOWED else f"<{byte:02X}>".encode()
        assert out.payload == f"{header}.QV.CA0130000.NO NCIC WANT".encode() + shown + f"LIC/7TAB{byte:03d}".encode()
        expected[header] = answer
    # journaled as received, every byte; and no request ended in a notice
    received = {r.text.split(".", 1)[0]: r.text for r in journal(harness, Query(kind="RECEIVED", mke="QV"))
                if r.peer == "clets"}
    for header, answer in expected.items():
        assert received[header] == answer
        assert wire_text(answer.encode("latin-1")) == answer
    assert not [r for r in journal(harness, Query(mnemonic="ICS1")) if r.mke == "MSC"]
    assert not [r for r in journal(harness, Query(kind="REJECTED")) if r.peer == "clets"]


# Item 6: (text, what the one E108 must name) — each refused before anything leaves.
EDIT_REFUSALS = [
    ("QW.CA0130000", ["IDENTIFIERS MISSING: NEEDS NAM/+DOB/ OR NAM/+SEX/+RAC/"]),
    ("QW.CA0130000.NAM/SMITH, JOHN.DOB/19801345", ["DOB/19801345 IS NOT A DATE CCYYMMDD"]),
    ("QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101.NAM/DOE, JANE", ["NAM/ REPEATED 2 TIMES"]),
    ("QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/Z.ATN/DET HOLMES", ["PUR/Z IS NOT A PERMITTED PURPOSE CODE"]),
    ("QH.CA0130000.NAM/SMITH, JOHN", ["PUR/ REQUIRED", "ATN/ REQUIRED", "IDENTIFIERS MISSING"]),
    ("QV.CA0130000.LIS/CAL.LIC/7-ABC", ["LIS/CAL IS NOT", "LIC/7-ABC IS NOT"]),
    ("QV.CA0130000.LIS/CA", ["IDENTIFIERS MISSING: NEEDS LIC/ OR VIN/ OR NIC/"]),
    ("DQ.CA0130000.AZ,NV,TX,NM,OR,UT.TXTNAM/DOE, JOHN.SEX/M", ["6 DESTINATIONS, AT MOST 5", "IDENTIFIERS MISSING"]),
    ("RQ.CA0130000.AZ.TXT\r\nLIY/2025", ["IDENTIFIERS MISSING: NEEDS LIC/ OR VIN/"]),
]


async def test_edits_refuse_with_every_problem_and_forward_nothing(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    for text, named in EDIT_REFUSALS:
        reply = await c.send(f"ICS1E.{text}")
        assert reply.code == "E108", (text, reply.text)
        reason = reply.text.split(" ", 1)[1]
        assert len(reason.split("; ")) == len(named), reason
        for phrase in named:
            assert phrase in reason, (phrase, reason)
    # a prohibited purpose code is E209 (PPP §1.6.1 D), not an edit problem
    assert (await c.send("ICS1P.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/E.ATN/HR")).code == "E209"
    # and a good one after all that passes
    assert (await c.send("ICS1G.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/C.ATN/DET HOLMES")).type == "A"
    log = await eventually(lambda: stub_log(harness))
    assert log == ["ICS1G.*TS0001.#7F000001.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/C.ATN/DET HOLMES"]
    refused = journal(harness, Query(kind="REJECTED", mnemonic="ICS1"))
    assert sorted(r.code for r in refused) == ["E108"] * len(EDIT_REFUSALS) + ["E209"]
