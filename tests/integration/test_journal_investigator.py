"""Traffic through the running switch, then the investigator's tools against its journal."""

from __future__ import annotations

import asyncio
import json
import sys
import zipfile

import pytest

from msc.journal.search import Query, search
from tests.conftest import PASSWORD, eventually, journaled

pytestmark = pytest.mark.timeout(120)


async def msc(*args: str, input: str | None = None) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "msc", *args, stdin=asyncio.subprocess.PIPE,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(input.encode() if input else None), 60)
    return p.returncode, out.decode(), err.decode()


async def traffic(harness):
    await harness.start_stub()
    await harness.start_switch()
    await harness.wait_upstream()
    c = await harness.operator("ICS1", "TS0001")
    assert (await c.send("ICS1A1.QW.CA0130000.NAM/ZEBULON, QUINN.DOB/19800101")).type == "A"
    await c.output()
    assert (await c.send("ICS1A2.QH.CA0130000.NAM/ZEBULON, QUINN.DOB/19800101.PUR/C.ATN/DET HOLMES")).type == "A"
    await c.output()
    host = await harness.client()
    assert (await host.send("ECC2X1.*EC0001.#C0A8010A.RQ.CA0130100.LIC/7XYZ999")).type == "A"
    await host.output()
    # The three outputs were acknowledged: wait for their DELIVERED records to commit.
    await eventually(lambda: journaled(harness.switch, "DELIVERED") >= 3)
    return c


async def test_investigator_finds_each_transaction_by_user_mnemonic_ori_key_and_token(harness):
    await traffic(harness)
    cfg = str(harness.tmp / "msc.toml")
    base = ("journal", "search", "--config", cfg, "--as", "IN0001", "--case", "IA-2026-17", "--password-stdin",
            "--format", "jsonl")

    async def q(*filters):
        rc, out, err = await msc(*base, *filters, input=PASSWORD + "\n")
        assert rc == 0, err
        return [json.loads(line) for line in out.splitlines()]

    by_user = await q("--user", "TS0001")
    kinds = [(r["kind"], r["mke"]) for r in by_user if r["txn"] == by_user[0]["txn"] or r["kind"] != "SESSION"]
    assert ("RECEIVED", "QW") in kinds and ("FORWARDED", "QW") in kinds
    seqs = [r["seq"] for r in by_user]
    assert seqs == sorted(seqs)
    # One transaction, linked by its id: request in, forwarded, response in, delivered.
    qw = next(r for r in by_user if r["mke"] == "QW" and r["kind"] == "RECEIVED")
    chain = await q("--txn", qw["txn"])
    assert [r["kind"] for r in chain] == ["RECEIVED", "FORWARDED", "RECEIVED", "DELIVERED"]
    assert chain[1]["text"] == "ICS1A1.*TS0001.#7F000001.QW.CA0130000.NAM/ZEBULON, QUINN.DOB/19800101"
    assert chain[2]["peer"] == "clets" and chain[2]["text"].startswith("ICS1A1.QW.")
    assert chain[3]["user"] == "TS0001" and chain[3]["mnemonic"] == "ICS1"
    # CORI fields are recorded and searchable (PPP §1.7.1 A).
    qh = await q("--mke", "QH", "--kind", "FORWARDED")
    assert qh[0]["purpose"] == "C" and qh[0]["requester"] == "DET HOLMES"
    # The response — the actual criminal-history release — carries them too, and so does its delivery.
    assert [r["seq"] for r in await q("--token", "ATN:det holmes", "--kind", "RECEIVED")] == [
        r["seq"] for r in await q("--mke", "QH", "--kind", "RECEIVED", "--user", "TS0001")]
    release = (await q("--token", "ATN:det holmes", "--kind", "DELIVERED"))[0]
    assert (release["purpose"], release["requester"], release["user"]) == ("C", "DET HOLMES", "TS0001")
    # By mnemonic, ORI, key and token.
    assert {r["mnemonic"] for r in await q("--mnemonic", "ECC2")} == {"ECC2"}
    ori = await q("--ori", "CA0130100")
    assert ori and all(r["ori"] == "CA0130100" for r in ori)
    tok = await q("--token", "NAM:zebulon,  quinn")
    assert {r["mke"] for r in tok} >= {"QW", "QH"} and all("ZEBULON" in r["text"] for r in tok)
    plates = await q("--token", "LIC:7XYZ999")
    assert [r["kind"] for r in plates][:2] == ["RECEIVED", "FORWARDED"] and plates[0]["user"] == "EC0001"
    # Every search was audited with the case, the filters and the values searched for (whom the
    # investigator looked up, issue 13 item 3) — sealed like message text: on disk the value
    # appears nowhere in clear, neither in the AUDIT records nor in the traffic they found.
    sw = harness.switch
    audits = list(search(sw.settings.journal_dir, sw.journal.keyring, Query(kind="AUDIT")))
    assert len(audits) >= 9
    a = json.loads(audits[-1].text)
    assert a["case"] == "IA-2026-17" and a["op"] == "search" and a["filters"]["tokens"] == ["LIC:7XYZ999"]
    assert audits[-1].user == "IN0001"
    assert [json.loads(r.text)["filters"]["tokens"] for r in audits if "tokens" in json.loads(r.text).get("filters", {})
            ][:2] == [["ATN:DET HOLMES"], ["ATN:DET HOLMES"]]
    await sw.journal.flush()
    for f in sw.settings.journal_dir.rglob("*"):
        if f.is_file():
            assert b"7XYZ999" not in f.read_bytes() and b"DET HOLMES" not in f.read_bytes(), f


async def test_text_and_csv_reports(harness):
    await traffic(harness)
    cfg = str(harness.tmp / "msc.toml")
    rc, out, _ = await msc("journal", "search", "--config", cfg, "--as", "IN0001", "--case", "C1", "--password-stdin",
                           "--user", "TS0001", "--mke", "QW", input=PASSWORD + "\n")
    assert rc == 0
    assert out.startswith("MSC JOURNAL SEARCH — TEST-MSC\nCase: C1    Investigator: IN0001")
    assert "SEQ " in out and "ZEBULON, QUINN" in out and "=== end of report:" in out
    rc, out, _ = await msc("journal", "search", "--config", cfg, "--as", "IN0001", "--case", "C1", "--password-stdin",
                           "--format", "csv", "--mnemonic", "ECC2", input=PASSWORD + "\n")
    lines = out.splitlines()
    assert lines[0] == "seq,ts,kind,direction,peer,mnemonic,user,taf,ori,mke,txn,code,purpose,requester,recipient,text"
    assert len(lines) >= 3


async def test_refusals_exit_3_print_nothing_and_are_audited(harness):
    await traffic(harness)
    cfg = str(harness.tmp / "msc.toml")
    for who, pw in (("IN0001", "wrong password"), ("TS0001", PASSWORD), ("NOSUCH", PASSWORD)):
        rc, out, err = await msc("journal", "search", "--config", cfg, "--as", who, "--case", "X9", "--password-stdin",
                                 input=pw + "\n")
        assert rc == 3 and out == ""
    sw = harness.switch
    refused = [json.loads(r.text) for r in search(sw.settings.journal_dir, sw.journal.keyring, Query(kind="AUDIT"))]
    assert [r["outcome"] for r in refused if r["case"] == "X9"] == ["refused"] * 3


async def test_export_bundle_verifies_with_the_stdlib_script_and_a_doctored_one_does_not(harness, tmp_path):
    await traffic(harness)
    cfg = str(harness.tmp / "msc.toml")
    out = tmp_path / "bundle.zip"
    rc, stdout, err = await msc("journal", "export", "--config", cfg, "--as", "IN0001", "--case", "C2",
                                "--password-stdin", "--user", "TS0001", "--out", str(out), input=PASSWORD + "\n")
    assert rc == 0, err
    names = set(zipfile.ZipFile(out).namelist())
    assert names == {"records.jsonl", "proofs.jsonl", "checkpoint.json", "public_key.txt", "verify_bundle.py", "MANIFEST.txt"}
    # The verifier runs with the standard library only (-I: isolated, -S: no site-packages).
    z = tmp_path / "unzipped"
    zipfile.ZipFile(out).extractall(z)
    pub = harness.switch.settings.data_dir / "keys" / "signing.pub"  # the agency's key, from outside the bundle
    p = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", str(z / "verify_bundle.py"), "--key", str(pub),
                                             str(out), stdout=asyncio.subprocess.PIPE)
    stdout, _ = await p.communicate()
    assert p.returncode == 0, stdout
    assert stdout.startswith(b"OK: ")
    # Without a pinned key the records check out but their origin is not proven: exit 3, said plainly.
    p = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", str(z / "verify_bundle.py"), str(out),
                                             stdout=asyncio.subprocess.PIPE)
    stdout, _ = await p.communicate()
    assert p.returncode == 3 and stdout.startswith(b"ORIGIN NOT CHECKED")
    # Doctor one record's text (a different name) and re-zip: the verifier refuses it.
    records = (z / "records.jsonl").read_text().replace("ZEBULON", "ZACHARY", 1)
    (z / "records.jsonl").write_text(records)
    p = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", str(z / "verify_bundle.py"), "--key", str(pub),
                                             str(z), stdout=asyncio.subprocess.PIPE)
    stdout, _ = await p.communicate()
    assert p.returncode == 1 and b"differ from what was journaled" in stdout


async def test_verify_through_the_cli_and_its_audit(harness):
    """verify is for an administrator or an investigator (issue 13: it ran with no --as, or with
    --as NOBODY, and was recorded as that)."""
    await traffic(harness)
    cfg = str(harness.tmp / "msc.toml")
    for who in ("AD0001", "IN0001"):
        rc, out, err = await msc("journal", "verify", "--config", cfg, "--as", who, "--password-stdin",
                                 input=PASSWORD + "\n\n")
        assert rc == 0, out + err
        assert out.startswith("OK: ")
    rc, out, err = await msc("journal", "verify", "--config", cfg)
    assert rc == 2 and "--as" in err and out == ""
    for who, pw in (("NOBODY", PASSWORD), ("TS0001", PASSWORD), ("AD0001", "not it")):
        rc, out, err = await msc("journal", "verify", "--config", cfg, "--as", who, "--password-stdin", input=pw + "\n")
        assert rc == 3 and out == "" and "authentication refused" in err
    sw = harness.switch
    await sw.journal.flush()
    verifies = [(r.user, json.loads(r.text)) for r in search(sw.settings.journal_dir, sw.journal.keyring,
                                                             Query(kind="AUDIT")) if '"verify"' in r.text]
    assert [(u, a["by"], a["outcome"]) for u, a in verifies if a.get("outcome") == "ok"] == [
        ("AD0001", "AD0001", "ok"), ("IN0001", "IN0001", "ok")]
    assert [u for u, a in verifies if a["outcome"] == "refused"] == ["NOBODY", "TS0001", "AD0001"]


@pytest.mark.parametrize("case", ["", " ", "A" * 33, " LEADING", "TRAILING ", "TAB\tIN", "NEW\nLINE", "BEL\x07",
                                  "CAF\u00c9", "\x1b[31mRED", "\u200bZWSP"])
async def test_a_case_reference_is_required_and_well_formed(tmp_path, case):
    """--case "" was accepted (issue 13 item 3): 1-32 printable characters, no control characters.
    Refused before anything is read or anyone is asked for a password."""
    rc, out, err = await msc("journal", "search", "--config", str(tmp_path / "msc.toml"), "--as", "IN0001",
                             "--case", case, "--password-stdin", input=PASSWORD + "\n")
    assert rc == 2 and out == "" and "case reference" in err
    rc, out, err = await msc("journal", "search", "--config", str(tmp_path / "msc.toml"), "--as", "IN0001",
                             "--password-stdin", input=PASSWORD + "\n")
    assert rc == 2 and "--case" in err


async def test_well_formed_case_references_are_accepted(tmp_path):
    from tests.conftest import make_config

    cfg = str(make_config(tmp_path))
    for case in ("C", "IA-2026-17", "2026/CR 00123", "#42:A.B", "A" * 32):
        rc, out, err = await msc("journal", "search", "--config", cfg, "--as", "IN0001", "--case", case,
                                 "--password-stdin", "--format", "jsonl", input=PASSWORD + "\n")
        assert rc == 0, err


async def test_no_message_text_or_field_value_in_plaintext_anywhere_on_disk(harness):
    await traffic(harness)
    await harness.switch.journal.checkpoint()
    data_dir = harness.switch.settings.data_dir
    secrets = [b"ZEBULON", b"QUINN", b"7XYZ999", b"DET HOLMES", b"NAM/", b"LIC/", PASSWORD.encode()]
    scanned = 0
    for path in data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            for s in secrets:
                assert s not in data, f"{s!r} in plaintext in {path}"
    assert scanned >= 5
    # ... and the metadata that is searchable in plain columns is exactly JOURNAL.md's list.
    import sqlite3

    from msc.journal.schema import list_partitions, partition_path

    period = list_partitions(harness.switch.settings.journal_dir)[0]
    cols = [r[1] for r in sqlite3.connect(partition_path(harness.switch.settings.journal_dir, period))
            .execute("PRAGMA table_info(records)")]
    assert cols == ["seq", "ts", "kind", "direction", "peer", "mnemonic", "user", "taf", "ori", "mke", "txn",
                    "code", "purpose", "osn", "blob", "leaf", "tokens"]
