"""Issue 12 items 1, 2 and 6 as a user meets them: `msc serve`, `msc stub`, `msc terminal`,
`msc config check` — real processes on loopback.
"""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import Proc, run, start_serve, wait_port

pytestmark = pytest.mark.timeout(120)


def test_nlets_query_passes_and_a_meaningless_one_is_refused_with_every_problem(tmp_path, procs):
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    stub_log = tmp_path / "stub.log"
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--log", str(stub_log),
                      log=tmp_path / "stub.err"))
    wait_port(up)
    start_serve(procs, tmp_path, cfg)
    r = run("terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001",
            "--password-stdin",
            "--send", "ICS1A1.DQ.CA0130000.AZ,NV.TXTNAM/DOE, JOHN.DOB/19800101.SEX/M",
            "--send", "ICS1A2.QH.CA0130000.NAM/DOE, JOHN.DOB/19801345.PUR/Z",
            "--expect", "1", "--timeout", "20", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("M ") and " ICS1A1.DQ.CA0130000." in ln for ln in lines), lines
    refusal = next(ln for ln in lines if ln.startswith("N ") and " E108 " in ln)
    for phrase in ("ATN/ REQUIRED", "DOB/19801345 IS NOT A DATE CCYYMMDD", "PUR/Z IS NOT A PERMITTED PURPOSE CODE"):
        assert phrase in refusal, refusal
    logged = stub_log.read_text().splitlines()
    assert logged == ["ICS1A1.*TS0001.#7F000001.DQ.CA0130000.AZ,NV.TXTNAM/DOE, JOHN.DOB/19800101.SEX/M"]


def test_config_check_names_a_bad_edit_table_with_file_and_line(tmp_path):
    cfg = make_config(tmp_path)
    text = cfg.read_text().replace('mke = ["QV"]                           # vehicle\none_of = [["LIC"], ["VIN"], ["NIC"]]',
                                   'mke = ["QV"]\none_of = [["LIC"], []]\nformats = { LIC = "plates" }', 1)
    assert text != cfg.read_text()
    cfg.write_text(text)
    r = run("config", "check", "--config", str(cfg))
    assert r.returncode == 2, (r.stdout, r.stderr)
    out = r.stdout + r.stderr
    lines = text.splitlines()
    one_of = next(i for i, ln in enumerate(lines) if ln.startswith("one_of = [[\"LIC\"], []]")) + 1
    formats = one_of + 1
    assert f"msc.toml:{one_of}: edit[1].one_of[1]: an identifier set needs at least one tag" in out, out
    assert f"msc.toml:{formats}: edit[1].formats.LIC: unknown format 'plates'" in out, out
