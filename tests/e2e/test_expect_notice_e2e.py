"""`msc terminal --send … --expect N` met by msc's notice exits 5, through the real command
(issue 16, newcomer finding N3).

The finding: a script's QW cut by a failover after answer part 1 exited 0 — the switch's
``MSC.E302 … 1 OF 2 PARTS CAME`` counted as its second output — and a wrapper checking only the
exit status took the answer as complete. Here the same, with a ``kill -9`` and a restart (the
client reconnects by itself), and the notices an upstream's refusal gives (``MSC.E301`` from an
NCIC stub asked a key it does not answer), beside a plain answer.
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import run, start_serve, start_stub
from tests.e2e.test_terminal_fates_e2e import Script
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(240)

QW = "QW.CA0130000.NAM/PARTS, PAT.DOB/19800101"
DQ = "DQ.CA0130000.OLN/D1234567"  # an NCIC stub does not answer DQ: its N E301, msc's MSC.E301 notice
QV = "QV.CA0130000.LIC/7NOTE1"


def scripted(port: int, *sends: str, expect: int, timeout: float = HANG_S):
    return run("terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001",
               "--password-stdin", *[a for s in sends for a in ("--send", s)], "--expect", str(expect),
               "--timeout", str(timeout), input=PASSWORD + "\n", timeout=HANG_S + 60)


def test_the_finding_a_qw_cut_after_part_1_by_a_restart_exits_5_naming_the_e302(tmp_path, procs):
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port(),
                      route_extra="answer_window_s = 900\nanswer_parts = { QW = 2 }")
    start_stub(procs, tmp_path, up, "--parts", "QW=2@60000")  # part 2 a minute later: after the restart
    serve = start_serve(procs, tmp_path, cfg)
    addr = f"127.0.0.1:{port}"
    s = Script("--connect", f"{addr},{addr}", "--header", "ICS1", "--user", "TS0001", "--password-stdin",
               "--send", QW, "--expect", "2", "--timeout", str(HANG_S))
    try:
        part1 = s.wait_line(s.out, r"^M \d+ (ICS1\w+)\.QW\.")
        serve.stop(signal.SIGKILL)  # the node dies with the answer open
        start_serve(procs, tmp_path, cfg, log="serve2.err")  # … and a node serves again: the client logs on there
        rc = s.wait(HANG_S + 60)
    finally:
        s.kill()
    header = part1.group(1)
    notice = f"{header}.MSC.E302 SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; 1 OF 2 PARTS CAME"
    assert re.search(rf"^M \d+ {re.escape(notice)}$", s.stdout, re.M), s.stdout
    assert rc == 5, (s.stdout, s.stderr)
    said = [line for line in s.err if "outputs came" in line]
    assert said == [f"2 of 2 outputs came, but not all are answers: msc's notice {notice}. "
                    "Exit 5: an answer is missing or incomplete."], s.stderr


@pytest.fixture
def ncic(tmp_path, procs) -> int:
    """msc on an NCIC stub: it answers QV, and refuses DQ (N E301: msc tells the operator MSC.E301)."""
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    start_stub(procs, tmp_path, up, "--role", "ncic")
    start_serve(procs, tmp_path, cfg)
    return port


CASES = [
    # id, what is sent, --expect, --timeout, exit status, notices named on stderr
    ("answer", [QV], 1, HANG_S, 0, 0),
    ("notice", [DQ], 1, HANG_S, 5, 1),
    ("answer-and-notice", [QV, DQ], 2, HANG_S, 5, 1),
    ("timed-out-with-a-notice", [DQ], 2, 3, 1, 1),  # 1 as before; the line names the notice
]


@pytest.mark.parametrize("name,sends,expect,timeout,status,named", CASES, ids=[c[0] for c in CASES])
def test_a_notice_among_the_expected_outputs_is_exit_5(ncic, name, sends, expect, timeout, status, named):
    r = scripted(ncic, *sends, expect=expect, timeout=timeout)
    assert r.returncode == status, (r.stdout, r.stderr)
    notices = re.findall(r"^M \d+ (ICS1\w+\.MSC\.E301 NCIC DOES NOT ANSWER DQ)$", r.stdout, re.M)
    assert len(notices) == named, r.stdout
    if status == 5:
        assert f"but not all are answers: msc's notice {notices[0]}. Exit 5: " in r.stderr, r.stderr
    elif status == 1:
        assert f"timed out: 1 of 2 outputs; among them msc's notice {notices[0]}" in r.stderr, r.stderr
    else:
        assert "MSC.E" not in r.stderr and "outputs" not in r.stderr, r.stderr


def test_expect_without_send_counts_a_notice_as_before(ncic):
    """``--expect`` without ``--send`` (any output counts: a watch, a printer) keeps its 0."""
    first = scripted(ncic, DQ, expect=0)  # sent, and gone before its notice: it waits for the station
    assert first.returncode == 0, first.stderr
    r = run("terminal", "--connect", f"127.0.0.1:{ncic}", "--header", "ICS1", "--user", "TS0001",
            "--password-stdin", "--expect", "1", "--timeout", str(HANG_S), input=PASSWORD + "\n", timeout=HANG_S + 60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert re.search(r"^M \d+ ICS1\w+\.MSC\.E301 NCIC DOES NOT ANSWER DQ$", r.stdout, re.M), r.stdout
