"""Operations as ops see them: /metrics checked by promtool, health, availability, reports, drain."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import run, start_serve, start_stub
from tests.waiting import HANG_S, START_S

pytestmark = pytest.mark.timeout(120)
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def start(tmp_path, procs, **overrides):
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport, **overrides)
    start_stub(procs, tmp_path, up, "--seed", "3")
    serve = start_serve(procs, tmp_path, cfg)
    return cfg, port, mport, serve


def get(mport: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}{path}", timeout=HANG_S) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name} {labels}")


def terminal(port, *sends, expect=0, user="TS0001", header="ICS1"):
    return run("terminal", "--connect", f"127.0.0.1:{port}", "--header", header, "--user", user, "--password-stdin",
               *[a for s in sends for a in ("--send", s)], "--expect", str(expect), "--timeout", "20",
               input=PASSWORD + "\n")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make test installs Debian's prometheus)")
def test_metrics_after_traffic_pass_promtool_and_match_the_traffic(tmp_path, procs):
    cfg, port, mport, _ = start(tmp_path, procs)
    r = terminal(port, *[f"ICS1Q{i}.QW.CA0130000.NAM/SMITH, JOHN{i}.DOB/19800101" for i in range(7)], "QV.CA0130000.LIC/ABC1",
                 "ZZ.CA0130000.NAM/X", "QH.CA0130000.NAM/X", expect=8)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001", "--password-stdin",
            input="wrong\n")
    assert r.returncode == 3
    deadline = time.monotonic() + HANG_S
    while True:
        status, text = get(mport, "/metrics")
        try:
            if metric(text, "msc_transaction_seconds_count", category="cjis") == 8:
                break
        except KeyError:
            pass
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert status == 200
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert metric(text, "msc_messages_total", category="cjis", outcome="accepted") == 8
    assert metric(text, "msc_messages_total", category="cori", outcome="rejected") == 1
    assert metric(text, "msc_rejects_total", code="E301") == 1
    assert metric(text, "msc_rejects_total", code="E108") == 1
    assert metric(text, "msc_rejects_total", code="E202") == 1
    assert metric(text, "msc_logon_failures_total", path="terminal") == 1
    assert metric(text, "msc_upstream_up", upstream="clets", endpoint="primary") == 1
    assert metric(text, "msc_journal_records_total", kind="DELIVERED") == 8
    assert metric(text, "msc_frames_received_total", peer="upstream") >= 8
    assert metric(text, "msc_build_info", version="0.1.0") == 1
    assert metric(text, "msc_delivery_queued") == 0
    # msc serve froze what it started with out of the garbage collector's sight, and counts pauses.
    assert metric(text, "msc_gc_frozen_objects") > 1000
    assert metric(text, "msc_gc_pause_seconds_count", generation="0") >= 0
    for name in ("msc_journal_append_seconds_count", "msc_journal_tree_size", "msc_config_reload_total",
                 "msc_availability_ratio", "msc_sessions", "msc_pool_free_mnemonics", "msc_upstream_in_flight",
                 "msc_lockouts_total", "msc_self_inquiry_total", "msc_journal_errors_total",
                 "msc_journal_verify_failures_total", "msc_frames_sent_total"):
        assert name in text, name
    # No label per user or mnemonic (bounded cardinality).
    assert "TS0001" not in text and "ICS1" not in text
    assert get(mport, "/healthz")[0] == 200
    status, body = get(mport, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


def test_availability_report_after_a_crash_and_a_clean_restart(tmp_path, procs):
    started = time.time()  # the ledger's clock is the wall clock
    cfg, port, mport, serve = start(tmp_path, procs)
    time.sleep(0.5)  # (the run's length, not a wait)
    serve.p.send_signal(signal.SIGKILL)  # a crash: no clean-stop mark
    serve.p.wait()
    time.sleep(1.0)  # (the outage's least length)
    serve = start_serve(procs, tmp_path, cfg, "serve2.err")
    restarted = time.time()
    assert serve.stop() == 0  # SIGTERM: drain and a clean stop (scheduled)
    time.sleep(0.5)
    r = run("report", "availability", "--config", str(cfg), "--format", "json")
    doc = json.loads(r.stdout)
    outages = doc["windows"]["30d"]["outages"]
    assert [o["scheduled"] for o in outages] == [False, True]
    # From the last heartbeat (or the start) to the restart: at least the second slept between the
    # kill and the restart, at most the whole time from before the first start to after the second
    # (bounds by this test's own clock, not a speed: a loaded machine starts msc slowly).
    assert 0.9 <= outages[0]["seconds"] <= restarted - started, (outages, restarted - started)
    assert doc["windows"]["30d"]["ratio"] < 1
    text = run("report", "availability", "--config", str(cfg)).stdout
    assert "UNSCHEDULED" in text and "scheduled" in text


def test_sigterm_drains_in_flight_work(tmp_path, procs):
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport)
    stub_log = tmp_path / "stub.log"
    start_stub(procs, tmp_path, up, "--latency-ms", "1500", "--log", str(stub_log))
    serve = start_serve(procs, tmp_path, cfg)
    t = subprocess.Popen([*__import__("tests.e2e.conftest", fromlist=["MSC"]).MSC, "terminal", "--connect",
                          f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001", "--password-stdin", "--send",
                          "ICS1D.QW.CA0130000.NAM/DRAIN, ME.DOB/19800101", "--expect", "1", "--timeout", "20"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.stdin.write(PASSWORD + "\n")
    t.stdin.close()
    # SIGTERM once the request is upstream (the stub has it and answers 1.5 s later): a condition,
    # not a fixed sleep, which a loaded machine outran.
    deadline = time.monotonic() + HANG_S
    while not (stub_log.exists() and "DRAIN, ME" in stub_log.read_text()):
        assert time.monotonic() < deadline and t.poll() is None, "the request never reached the stub"
        time.sleep(0.02)
    serve.p.send_signal(signal.SIGTERM)
    out = t.stdout.read()
    assert t.wait(timeout=START_S) == 0, out
    assert "ICS1D.QW.CA0130000." in out  # answered before the switch went away
    assert serve.p.wait(timeout=START_S) == 0
    log = (tmp_path / "serve.err").read_text()
    assert '"event": "switch.draining"' in log and '"event": "switch.stopped"' in log


def stub_command(cport: int, command: str) -> str:
    """A /command on a stub's control port (``msc stub --control``): its one-line answer."""
    import socket

    with socket.create_connection(("127.0.0.1", cport), timeout=30) as sk:
        sk.sendall(f"/{command}\n".encode())
        return sk.makefile().readline().strip()


def availability(cfg) -> dict:
    r = run("report", "availability", "--config", str(cfg), "--format", "json")
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: below 98 % (a short life): a finding
    return json.loads(r.stdout)["windows"]["30d"]


def test_a_drain_is_reported_as_scheduled_downtime_from_its_start(tmp_path, procs):
    """SIGTERM with a terminal attached and its answer held upstream: while the switch drains (and
    still serves that terminal) ``msc report availability`` already shows a scheduled outage under
    way; after the restart the outage runs from before the answer came to the new start
    (OPERATIONS.md "Availability and reports": a drain is downtime, PPP §1.7.1)."""
    up, cport, port, mport = free_port(), free_port(), free_port(), free_port()
    # Bounds for a hang, not speeds: the answer ends the drain, the request never times out (E303).
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport, timeout_s=300,
                      switch_extra="drain_timeout_s = 300")
    stub_log = tmp_path / "stub.log"
    start_stub(procs, tmp_path, up, "--control", f"127.0.0.1:{cport}", "--log", str(stub_log))
    assert stub_command(cport, "hold on").startswith("OK")  # requests acknowledged, answers kept
    serve = start_serve(procs, tmp_path, cfg)
    t = subprocess.Popen([*__import__("tests.e2e.conftest", fromlist=["MSC"]).MSC, "terminal", "--connect",
                          f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001", "--password-stdin", "--send",
                          "ICS1D.QV.CA0130000.LIC/7DRAIN1", "--expect", "1", "--timeout", "120"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        t.stdin.write(PASSWORD + "\n")
        t.stdin.close()
        deadline = time.monotonic() + 60
        while not (stub_log.exists() and "7DRAIN1" in stub_log.read_text()):
            assert time.monotonic() < deadline and t.poll() is None, "the request never reached the stub"
            time.sleep(0.05)
        assert availability(cfg)["outages"] == []  # serving
        serve.p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not (during := availability(cfg)["outages"]):  # the drain's mark, while the answer is held
            assert time.monotonic() < deadline and serve.p.poll() is None, "no outage reported while draining"
            time.sleep(0.1)
        marked_by = time.time()  # the mark was in the ledger by now: before the answer was released
        assert [o["scheduled"] for o in during] == [True]
        assert serve.p.poll() is None and t.poll() is None  # still draining, the terminal still attached
        assert stub_command(cport, "hold off").startswith("OK")
        out = t.stdout.read()
        assert t.wait(timeout=60) == 0, out
        assert "ICS1D.QV.CA0130000." in out  # the attached terminal was served during the drain
    finally:
        if t.poll() is None:
            t.kill()
    assert serve.p.wait(timeout=60) == 0
    assert '"event": "switch.drain_timeout"' not in (tmp_path / "serve.err").read_text()  # the answer ended it
    restarted_at = time.time()
    serve = start_serve(procs, tmp_path, cfg, "serve2.err")
    assert serve.stop() == 0  # nothing in flight: its drain lasts no time
    first, last = availability(cfg)["outages"]  # the drain and restart; down now since the second stop
    assert first["scheduled"] and last["scheduled"]
    assert first["seconds"] + 0.1 >= restarted_at - marked_by  # from before the answer came to the new start


def test_reports_mnemonics_users_misuse(tmp_path, procs):
    cfg, port, mport, serve = start(tmp_path, procs)
    r = terminal(port, "QW.CA0130000.NAM/TEST, TERRY.DOB/19700101", "QH.CA0130000.NAM/X.DOB/19800101.PUR/E.ATN/A",
                 "QW.CA0130000.NAM/OTHER, ONE.DOB/19800101")
    assert r.returncode == 0
    run("terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS2", "--user", "TS0002", "--password-stdin",
        input="nope\n")
    serve.stop()
    c = str(cfg)
    assert run("report", "misuse", "--config", c, "--format", "json").returncode == 2  # it reads the journal: --as
    admin = ("--as", "AD0001", "--password-stdin")
    doc = json.loads(run("report", "misuse", "--config", c, "--format", "json", *admin, input=PASSWORD + "\n\n").stdout)
    assert doc["self_inquiries"] == [{"user": "TS0001", "count": 1}]
    assert doc["refused_cori_purposes"] == [{"user": "TS0001", "count": 1}]
    assert doc["logon_failures"] == [{"user": "TS0002", "count": 1}]
    assert "after_hours" in doc
    # Age the state: nothing used for 200 days, logons 100 days ago; certifications as configured.
    from msc.config.load import load
    from msc.mnemonics.state import StateStore

    s = load(cfg)
    st = StateStore(s.state_db)
    old = time.time() - 200 * 86400
    st._exec("UPDATE station_state SET last_use = ?", (old,))
    st._exec("UPDATE user_state SET last_logon = ?, last_use = ?", (time.time() - 100 * 86400,) * 2)
    st.close()
    import sqlite3

    sqlite3.connect(s.state_db).execute("UPDATE runs SET started = ?", (old,)).connection.commit()
    doc = json.loads(run("report", "mnemonics", "--config", c, "--format", "json").stdout)
    ics1 = next(r for r in doc["mnemonics"] if r["mnemonic"] == "ICS1")
    assert ics1["inactive_days"] >= 199 and ics1["state_deletion"]
    doc = json.loads(run("report", "users", "--config", c, "--format", "json").stdout)
    assert "TS0001" in {r["id"] for r in doc["inactive"]}
    assert "EX0001" in {r["id"] for r in doc["certification_expiring"]}  # expired yesterday
    assert run("report", "users", "--config", c, "--apply").returncode == 2  # administration: --as
    r = run("report", "users", "--config", c, "--apply", *admin, input=PASSWORD + "\n\n")
    assert r.returncode == 0 and "Disabled now (--apply): " in r.stdout
    assert 'status = "disabled"' in (tmp_path / "users.toml").read_text()
    from msc.journal.search import Query, search
    from msc.keyring import KeyRing

    disabled = [(x.user, x.text) for x in search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file),
                                                 Query(kind="ADMIN")) if x.text.startswith("USER DISABLE")]
    assert disabled and all(u == "AD0001" for u, _ in disabled)
    audit = [x for x in search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file), Query(kind="AUDIT"))]
    assert [(x.user, json.loads(x.text)["op"]) for x in audit] == [("AD0001", "report misuse")]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_alert_rules_pass_promtool():
    r = subprocess.run(["promtool", "check", "rules", str(ROOT / "config" / "prometheus" / "alerts.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_packaging_files_are_present_and_sane():
    unit = (ROOT / "config" / "systemd" / "msc.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "User=msc" in unit and "Restart=always" in unit
    # SIGTERM to the switch only; it stops its journal writer itself (issue 13 item 5).
    assert re.search(r"^KillMode=mixed$", unit, re.M)
    # A node of a pair restarts for as long as its database fails over: no start limit (issue 16).
    assert re.search(r"^StartLimitIntervalSec=0$", unit.split("[Service]")[0], re.M)
    docker = (ROOT / "Dockerfile").read_text()
    assert "USER msc" in docker and "HEALTHCHECK" in docker and "VOLUME" in docker
    dash = json.loads((ROOT / "config" / "grafana" / "msc-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for name in ("msc_messages_total", "msc_transaction_seconds_bucket", "msc_upstream_up", "msc_availability_ratio"):
        assert name in exprs
