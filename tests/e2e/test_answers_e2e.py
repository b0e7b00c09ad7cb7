"""Issue 12 items 3 and 4 as a user runs them: `msc serve`, `msc stub --parts … --control …`,
`msc terminal`, and the investigator's `msc journal search --txn`."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import Proc, run, start_serve, wait_port
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)


def search(cfg, *filters: str) -> list[dict]:
    r = run("journal", "search", "--config", str(cfg), "--as", "IN0001", "--case", "IA-12-34", "--password-stdin",
            "--format", "jsonl", *filters, input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def control(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def test_multi_part_answer_and_notification_through_the_real_processes(tmp_path, procs):
    up, ctl, port = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--control", f"127.0.0.1:{ctl}",
                      "--seed", "7", "--parts", "QR=3@100", log=tmp_path / "stub.err"))
    wait_port(up)
    wait_port(ctl)
    start_serve(procs, tmp_path, cfg)
    # Item 3: one QR, three answers (the FBI, then two states) — all to the operator who asked.
    r = run("terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001",
            "--password-stdin", "--send", "ICS1A1.QR.CA0130000.CII/A12345678.PUR/C.ATN/DET SMITH",
            "--expect", "3", "--timeout", "20", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    outputs = [ln for ln in r.stdout.splitlines() if ln.startswith("M ")]
    assert len(outputs) == 3, r.stdout
    assert " ICS1A1.QR.CA0130000.CRIMINAL HISTORY" in outputs[0]
    assert all(" ICS1A1.CR.CA0130000." in o for o in outputs[1:])
    (forwarded,) = search(cfg, "--kind", "FORWARDED", "--mke", "QR")
    chain = search(cfg, "--txn", forwarded["txn"])
    answers = [c for c in chain if c["kind"] == "RECEIVED" and c["peer"] == "clets"]
    assert len(answers) == 3
    assert {(a["user"], a["purpose"], a["requester"]) for a in answers} == {("TS0001", "C", "DET SMITH")}
    assert sum(1 for c in chain if c["kind"] == "DELIVERED") == 3
    # Item 4: a locate notice for ICS2 (not staffed 24 x 7) lands on the duty station ICS1.
    assert control(ctl, "NOTIFY $.L. ICS2 CA0130000") == "A"
    (locate,) = search(cfg, "--kind", "RECEIVED", "--mke", "$.L.")
    assert locate["mnemonic"] == "ICS1" and locate["text"].startswith("ICS2.$.L.CA0130000.LOCATE")
