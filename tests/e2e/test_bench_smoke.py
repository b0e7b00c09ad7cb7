"""A seconds-long smoke run of the benchmark tools (the real benchmark is `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.conftest import start_serve, start_stub

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def loadgen(*args: str) -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), *args], capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_loadgen_against_the_switch_and_the_stub(tmp_path, procs):
    sys.path.insert(0, str(ROOT / "bench"))
    import benchconfig

    up, port, mport = free_port(), free_port(), free_port()
    cfg = benchconfig.write(tmp_path, port=port, metrics_port=mport, upstream_ports=[up], stations=8)
    start_stub(procs, tmp_path, up)
    start_serve(procs, tmp_path, cfg)
    res = loadgen("switch", "--port", str(port), "--terminals", "4", "--duration", "1", "--warmup", "0.5")
    assert res["transactions"] > 0 and res["errors"] == 0
    assert set(res["rejects"]) <= {"E301", "E108"}  # the mix's deliberate rejections only
    res = loadgen("direct", "--port", str(up), "--terminals", "4", "--duration", "1", "--warmup", "0.5")
    assert res["transactions"] > 0 and res["errors"] == 0


def test_profile_summary_attributes_samples_to_areas_and_processes():
    sys.path.insert(0, str(ROOT / "bench"))
    import profile_switch

    folded = [
        'process 10:"python -m msc serve";run (uvloop/__init__.py:80);feed (msc/protocol/framing.py:40) 30',
        'process 10:"python -m msc serve";run (uvloop/__init__.py:80);handle (msc/server/switch.py:9);'
        'dumps (json/__init__.py:231) 10',
        'process 10:"python -m msc serve";process 11:"python -m msc.journal.writerproc 16";'
        '<module> (msc/journal/writerproc.py:1);commit (msc/journal/store.py:5) 50',
        'process 10:"python -m msc serve";process 11:"python -m msc.journal.writerproc 16";'
        'run (threading.py:1);catch_up (msc/journal/indexer.py:107) 10',
        "garbage line without a count",
    ]
    md, total = profile_switch.summarise(folded)
    assert total == 100
    assert "| journal writer process (commit, indexer) | 60.0 % |" in md
    assert "| msc serve (event loop, its threads) | 40.0 % |" in md
    assert "| protocol (parse, format, framing) | 30.0 % |" in md
    assert "| server (connections, switch) | 10.0 % |" in md  # stdlib self time goes to its msc caller
    assert "| journal: writer, seal, index | 60.0 % |" in md


def test_soak_sees_the_time_a_kill_9_costs(tmp_path):
    """15 s of `make soak` with one kill -9 of msc serve: the restart shows as time without a
    successful probe (it did not when availability was answered 1-second probes / probes)."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.25", "--terminals", "2",
                        "--think", "0.05", "--kill-every", "6", "--upstream-every", "1000", "--workdir",
                        str(tmp_path / "work"), "--out", str(tmp_path / "results")],
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(next((tmp_path / "results").glob("soak-*.json")).read_text())
    assert doc["faults"].get("kill -9 msc serve") in (1, 2)
    kill = doc["recoveries"][0]
    assert kill["fault"] == "kill -9 msc serve", kill
    # msc came back: its supervisor restarted it to ready — inside the 15-s window, or on a loaded
    # machine after it (recovered_s None: the window is a measurement, not a deadline; a run under
    # load average 12 saw that). Nothing acknowledged is lost either way (asserted below).
    assert doc["restart_to_ready_s"]["restarts"] >= 1, doc["restart_to_ready_s"]
    print(f"\nkill -9: recovered {kill['recovered_s']} s later, {kill['unserved_s']} s unserved")
    # The restart shows as time without a successful probe. (Not that a probe *failed*: a probe
    # sent into the restart retries and, when msc is back within its probe timeout, is answered
    # late — bench/soak.py's unserved() counts service by answer time for exactly that; CI saw
    # probes_failed 0 with 1.0 s unserved.)
    assert kill["unserved_s"] > 0, kill
    assert doc["unserved_s"] >= kill["unserved_s"]
    assert doc["availability"] == pytest.approx(1 - doc["unserved_s"] / doc["duration_s"], abs=1e-4)  # both rounded to ms
    assert doc["availability"] < 1.0
    assert doc["acknowledged_but_lost"] == 0 and doc["outputs_lost"] == 0 and doc["journal_verify"] == "ok"
    assert "Availability by time" in (next((tmp_path / "results").glob("soak-*.md")).read_text())
