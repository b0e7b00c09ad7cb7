"""`msc terminal --connect A,B` finds the node that serves (issue 16 item 3): the first address
refused or not answering, or the connection lost, and the client goes to the next one — as
terminals and CAD systems configured for two switching centres do.

Two real `msc serve` nodes (each its own journal: the shared PostgreSQL journal comes later) on
one upstream stub; the addresses that do not serve are real sockets: a closed port, a listener
that accepts and closes at once (a node that refuses), one that accepts and says nothing (hung).
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from msc.cli.status import proc_address
from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import MSC, Proc, run, start_serve, wait_port
from tests.e2e.test_answers_e2e import control, search
from tests.e2e.test_terminal_client import Tty, logon
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(180)

QUERY = "QW.CA0130000.NAM/FAILOVER, FRED.DOB/19800101"


class Nodes:
    """Two msc serve nodes A and B on one stub; A can be killed and started again."""

    def __init__(self, tmp_path) -> None:
        self.procs: list[Proc] = []
        self.tmp = tmp_path
        up, self.control = free_port(), free_port()
        self.procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--control",
                               f"127.0.0.1:{self.control}", log=tmp_path / "stub.err"))
        wait_port(up)
        wait_port(self.control)
        self.ports = {n: free_port() for n in "AB"}
        self.cfg = {n: make_config(tmp_path / n, upstream_ports=[up], port=self.ports[n], metrics_port=free_port())
                    for n in "AB"}
        self.serve = {n: self.start(n) for n in "AB"}

    def start(self, n: str) -> Proc:
        return start_serve(self.procs, self.tmp / n, self.cfg[n])

    def addr(self, *names: str) -> str:
        return ",".join(f"127.0.0.1:{self.ports[n]}" if n in self.ports else n for n in names)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    n = Nodes(tmp_path_factory.mktemp("two-nodes"))
    yield n
    n.stop()


class Listener:
    """A TCP listener on 127.0.0.1 that does not serve: ``close`` (accept, close at once) or
    ``silent`` (accept, never send a byte)."""

    def __init__(self, how: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.how, self.held = how, []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.how == "close":
                c.close()
            else:
                self.held.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens: connection refused


def scripted(connect: str, *sends: str, expect: int = 0, timeout: float = HANG_S) -> subprocess.CompletedProcess:
    return run("terminal", "--connect", connect, "--header", "ICS1", "--user", "TS0001", "--password-stdin",
               *[a for s in sends for a in ("--send", s)], "--expect", str(expect), "--timeout", str(timeout),
               input=PASSWORD + "\n", timeout=timeout + 30)


# -- the first address does not serve -----------------------------------------------------------

FIRST = [
    # id, what the first address is, what the client says about it
    ("refused", lambda: (closed_port(), None), "connection refused"),
    ("closes-at-once", lambda: (lambda ln: (f"127.0.0.1:{ln.port}", ln))(Listener("close")),
     "(connection closed before the banner|connection reset)"),
    ("silent", lambda: (lambda ln: (f"127.0.0.1:{ln.port}", ln))(Listener("silent")), "no answer"),
]


@pytest.mark.parametrize("name,make,said", FIRST, ids=[f[0] for f in FIRST])
def test_the_client_goes_on_to_the_next_address_when_the_first_does_not_serve(nodes, name, make, said):
    first, listener = make()
    try:
        # --timeout 10: 5 s an address (its share, at most 5 s) — the silent first one uses its 5 s,
        # and the next gets as long for its banner (2 s each, with --timeout 4, was a speed).
        r = scripted(nodes.addr(first, "B"), QUERY, expect=1, timeout=10)
    finally:
        if listener:
            listener.close()
    assert r.returncode == 0, r.stderr
    assert re.search(rf"msc at {re.escape(first)}: {said}; trying 127\.0\.0\.1:{nodes.ports['B']}", r.stderr), r.stderr
    assert f"Connected to msc at 127.0.0.1:{nodes.ports['B']}." in r.stderr
    assert re.search(r"^A 2\b", r.stdout, re.M) and re.search(r"^M \d+ ICS1\w+\.", r.stdout, re.M), r.stdout


def test_with_every_address_down_a_script_gives_up_after_reconnect_for_and_names_them():
    """(--reconnect-for bounds the search for a node; it was --timeout, which now bounds only the
    waits for answers.) Each address's reason is said once, not at every try."""
    a, b = closed_port(), closed_port()
    t0 = time.monotonic()
    r = run("terminal", "--connect", f"{a},{b}", "--header", "ICS1", "--user", "TS0001", "--password-stdin",
            "--send", QUERY, "--expect", "1", "--reconnect-for", "2", input=PASSWORD + "\n", timeout=60)
    assert r.returncode == 1, r.stderr
    print(f"\ngave up {time.monotonic() - t0:.1f} s after it started (--reconnect-for 2)")
    assert f"msc unreachable at {a}, {b} within 2 s" in r.stderr
    assert r.stderr.count(f"msc at {a}: connection refused; trying {b}") == 1, r.stderr
    assert r.stderr.count(f"msc at {b}: connection refused; trying {a}") == 1, r.stderr


STILL_TRYING = r"still trying: no msc node has answered for \d+ s \((127\.0\.0\.1:\d+: connection refused(; )?){2}\)"


def test_an_operators_terminal_keeps_trying_past_its_timeout_until_a_node_answers(nodes):
    """Newcomer6 finding 4: the terminal quit after 30 s without a node (exit 4) while a Patroni
    failover takes longer and msc recovers by itself. An interactive terminal keeps trying —
    well past its --timeout — saying so now and then, and connects when a node serves again."""
    gone = closed_port()
    t = Tty("--connect", nodes.addr("A", gone), "--header", "ICS1", "--timeout", "2")
    try:
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['A']}.")
        logon(t)
        nodes.serve["A"].stop(signal.SIGKILL)
        t.expect(r"Connecting to the next msc address\.")
        t.expect(STILL_TRYING + "; Ctrl-C to stop", timeout=60)  # >= 10 s without a node: 5 x its --timeout
        nodes.serve["A"] = nodes.start("A")
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['A']}.", timeout=60)
        logon(t)
        t.type(QUERY)
        t.expect(r"\nA \d+")
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
    a = f"127.0.0.1:{nodes.ports['A']}"
    assert t.text.count(f"msc at {a}: connection refused; trying {gone}") == 1, t.text  # said once, not each try
    assert "msc unreachable" not in t.text


def test_ctrl_c_stops_an_operators_terminal_that_is_still_trying():
    a, b = closed_port(), closed_port()
    t = Tty("--connect", f"{a},{b}", "--header", "ICS1")
    try:
        t.expect(STILL_TRYING + "; Ctrl-C to stop", timeout=60)
        t.p.send_signal(signal.SIGINT)  # Ctrl-C
        t.expect(r"Stopped: no msc node answered\.")
        assert t.wait() == 1, t.text  # at the start: msc unreachable
        assert "Traceback" not in t.text
    finally:
        t.close()


def test_a_script_keeps_trying_for_reconnect_for_not_its_timeout(nodes):
    """A script's search for a node is bounded by --reconnect-for (default 120 s: longer than the
    example Patroni failover), not by --timeout: started while no node serves, it connects when
    one does, well after its --timeout."""
    gone = closed_port()
    nodes.serve["A"].stop(signal.SIGTERM)
    p = subprocess.Popen([*MSC, "terminal", "--connect", nodes.addr("A", gone), "--header", "ICS1", "--user",
                          "TS0001", "--password-stdin", "--send", QUERY, "--expect", "1", "--timeout", "3"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write(PASSWORD + "\n")
        p.stdin.close()
        p.stdin = None  # (communicate below: nothing more to write)
        err = ""
        while not re.search(STILL_TRYING + "; giving up 120 s after the first try", err):
            line = p.stderr.readline()
            assert line, err
            err += line
        nodes.serve["A"] = nodes.start("A")
        out, rest = p.communicate(timeout=90)
        assert p.returncode == 0, err + rest
        assert f"Connected to msc at 127.0.0.1:{nodes.ports['A']}." in rest
        assert re.search(r"^M \d+ ICS1\w+\.QW\.", out, re.M), out
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        if nodes.serve["A"].p.poll() is not None:
            nodes.serve["A"] = nodes.start("A")


def test_a_bad_address_list_is_refused_before_connecting():
    r = run("terminal", "--connect", "127.0.0.1:7400,,127.0.0.1:7401", "--header", "ICS1", "--user", "TS0001")
    assert r.returncode == 2 and "an empty address in the list" in r.stderr, r.stderr


# -- the connection is lost ---------------------------------------------------------------------

def waiting_script(connect: str, expect: int) -> subprocess.Popen:
    """A script logged on and waiting for ``expect`` outputs (no --send: any output counts)."""
    p = subprocess.Popen([*MSC, "terminal", "--connect", connect, "--header", "ICS1", "--user", "TS0001",
                          "--password-stdin", "--expect", str(expect), "--timeout", "40"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write(PASSWORD + "\n")
    p.stdin.close()
    line = ""
    while not line.startswith("A 1"):  # the logon was accepted: the script now waits
        line = p.stdout.readline()
        assert line, p.stderr.read()
    return p


def test_a_waiting_script_fails_over_logs_on_again_and_gets_the_output_queued_at_the_next_node(nodes):
    """kill -9 of A while a script waits: it says so, connects to B, logs on there with the same
    credentials and keeps waiting; a locate notice B receives for the station reaches it."""
    p = waiting_script(nodes.addr("A", "B"), 1)
    try:
        nodes.serve["A"].stop(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while control(nodes.control, "NOTIFY $.L. ICS1 CA0130000") != "A":  # until B has the stub's link alone
            assert time.monotonic() < deadline, "the stub never delivered to B"
            time.sleep(0.1)
        p.wait(timeout=60)
        out, err = p.stdout.read(), p.stderr.read()
        assert p.returncode == 0, err
        assert re.search(r"Session ended: CONNECTION (RESET|LOST)\. Connecting to the next msc "
                         r"address\.", err), err
        assert f"Connected to msc at 127.0.0.1:{nodes.ports['B']}." in err
        assert re.search(r"^A \d+ MNE/ICS1\.USR/TS0001$", out, re.M), out  # logged on again, at B
        assert re.search(r"^M \d+ ICS1\.\$\.L\.CA0130000", out, re.M), out
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        nodes.serve["A"] = nodes.start("A")


@pytest.mark.parametrize("ender", ["replaced"])
def test_a_station_ended_elsewhere_does_not_fail_over(nodes, ender):
    """REPLACED (the same station logged on again) ends the client as with one address: another
    node would say the same."""
    p = waiting_script(nodes.addr("A", "B"), 5)
    try:
        r = scripted(nodes.addr("A"), QUERY, expect=1, timeout=10)  # the station again, at A
        assert r.returncode == 0, r.stderr
        assert p.wait(timeout=30) == 4
        err = p.stderr.read()
        assert "Session ended: REPLACED. Disconnected from msc." in err, err
        assert "Connecting to the next msc address" not in err
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "shutdown"])
def test_an_operator_whose_node_dies_is_taken_to_the_next_and_logs_on_again(nodes, how):
    t = Tty("--connect", nodes.addr("A", "B"), "--header", "ICS1")
    try:
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['A']}.")
        logon(t)
        t.type(QUERY)
        t.expect(r"A \d+")
        t.expect(r"M \d+ ICS1\w+\.")
        nodes.serve["A"].stop(how)
        t.expect(r"Session ended: (CONNECTION (CLOSED BY MSC|RESET|LOST)|SHUTDOWN)\. "
                 r"Connecting to the next msc address\.")
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['B']}.")
        logon(t)  # the banner again, acknowledged, and a new logon: a session does not move between nodes
        t.type(QUERY)
        t.expect(r"A \d+")
        t.expect(r"M \d+ ICS1\w+\.")
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
        nodes.serve["A"] = nodes.start("A")


@pytest.mark.parametrize("how,said", [(signal.SIGKILL, r"CONNECTION (LOST|RESET)"), (signal.SIGTERM, "SHUTDOWN")],
                         ids=["kill-9", "shutdown"])
def test_a_node_lost_after_msc_ended_the_session_is_said_as_lost_not_with_the_old_reason(nodes, how, said):
    """newcomer8: the user disabled on the active node (SYS LOGOFF.USER DISABLED), the terminal
    back at User ID:, then the node killed — the client said "Session ended: USER DISABLED.
    Connecting to the next msc address.", the reason of the session before."""
    from tests.e2e.test_terminal_client import set_user

    users = nodes.cfg["A"].parent / "users.toml"
    kept = users.read_bytes()
    t = Tty("--connect", nodes.addr("A", "B"), "--header", "ICS1")
    try:
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['A']}.")
        logon(t)
        set_user(nodes.cfg["A"], "TS0001")  # (TS0001: the module's other tests look for no TS0002 on A)
        nodes.serve["A"].p.send_signal(signal.SIGHUP)
        t.expect(r"Session ended by msc: USER DISABLED\. Log on again, or Ctrl-D to exit\.")
        t.expect("User ID: ")
        nodes.serve["A"].stop(how)
        # (at User ID: no one is logged on: the connection ended, not a session)
        t.expect(rf"Connection to msc ended \(no one was logged on\): {said}\. Connecting to the next msc address\.")
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['B']}.")
        t.expect("Press Enter to acknowledge")
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
        users.write_bytes(kept)
        nodes.serve["A"].stop(signal.SIGTERM)
        nodes.serve["A"] = nodes.start("A")
    assert len(re.findall(r"USER DISABLED", t.text)) == 2, t.text  # the SYS line and its one "Session ended"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "shutdown"])
def test_a_piped_dialog_does_not_go_on_to_the_next_node(nodes, how):
    """Interactive mode with its dialog piped in (no terminal): after a failover the next node's
    banner and logon prompts took the script's next lines — its messages — as Enter, User ID and
    password. It ends instead (exit 4) and says why: scripts log on with --user/--password-stdin."""
    from tests.e2e.test_terminal_client import LOGON_LINES, finish, piped, until_logged_on, write

    p = piped(nodes.addr("A", "B"))
    try:
        write(p, LOGON_LINES)
        until_logged_on(p)
        nodes.serve["A"].stop(how)
        status, _out, err = finish(p)  # its next line not written yet: a client at B's banner waits for it
    finally:
        if p.poll() is None:
            p.kill()
        nodes.serve["A"] = nodes.start("A")
    assert status == 4, err
    assert re.search(r"Session ended: (CONNECTION (CLOSED BY MSC|RESET|LOST)|SHUTDOWN)\. Not connecting again: the "
                     r"input is not a terminal: its next lines were written for the session that ended, and are not "
                     r"taken as another logon's answers \(a script logs on with --user ID --password-stdin", err), err
    assert f"Connected to msc at 127.0.0.1:{nodes.ports['B']}" not in err


# -- messages left without an A/N (newcomer6 finding 8) -------------------------------------------

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def unread(port: int) -> int:
    """Bytes that clients sent to the server side of connections on 127.0.0.1:``port`` and the
    server has not read (its receive queues, /proc/net/tcp). The address too, not the port alone
    (as ``msc status`` matches its node's: newcomer9 F2)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        address, _, hexport = local.rpartition(":")
        if state == "01" and int(hexport, 16) == port and proc_address(address) == LOOPBACK:
            total += int(queues.split(":")[1], 16)
    return total


def wait_unread(port: int, done) -> None:
    """Wait until ``done(unread(port))``."""
    deadline = time.monotonic() + 30
    while not done(unread(port)):
        assert time.monotonic() < deadline, f"unread bytes at {port}: {unread(port)}"
        time.sleep(0.02)


def test_an_operator_is_told_which_messages_got_no_acknowledgement_when_the_connection_went(nodes):
    """The docs say the client names a message whose A/N had not arrived when the connection was
    lost; the interactive terminal said nothing (the finding: a query typed at a paused node just
    vanished). Table: a message still waiting, and one whose wait timed out ("no answer from
    msc") before the connection went; an answered one is not named."""
    t = Tty("--connect", nodes.addr("A", "B"), "--header", "ICS1", "--timeout", "3")
    port = nodes.ports["A"]
    try:
        t.expect(f"Connected to msc at 127.0.0.1:{port}.")
        logon(t)
        t.type(QUERY)  # answered: never named
        t.expect(r"\nA \d+")
        t.expect(r"M \d+ ICS1\w+\.")
        wait_unread(port, lambda n: n == 0)  # A has read everything the client sent (its acknowledgements too)
        nodes.serve["A"].p.send_signal(signal.SIGSTOP)  # a paused node: reads nothing, answers nothing
        t.type("QV.CA0130000.LIC/PAUSED1")
        t.expect("no answer from msc", timeout=60)  # its --timeout: the client goes on
        t.type("QV.CA0130000.LIC/PAUSED2")
        wait_unread(port, lambda n: n >= 2 * len("ICS1ABCDEF.QV.CA0130000.LIC/PAUSED1"))  # both sent, unread
        nodes.serve["A"].stop(signal.SIGKILL)  # the connection goes with both messages unanswered
        t.expect(r"Session ended: CONNECTION (RESET|LOST)\. Connecting to the next msc address\.")
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['B']}.")
        logon(t)
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
        nodes.serve["A"].stop(signal.SIGKILL)  # (stopped or not)
        nodes.serve["A"] = nodes.start("A")
    named = re.findall(r"^no A/N for (ICS1\w+)\.(\S+) before the connection was lost: not sent again "
                       r"\(msc may have accepted it: look for an answer or an MSC\.Exxx notice \(E302, E303, E307, E501, "
                       r"or the upstream's own code\) with header "
                       r"(ICS1\w+), or ask your agency's MSC administrator or an investigator to check the journal "
                       r"for it, before sending it again\)$", t.text, re.M)
    assert [(text, head == again) for head, text, again in named] == \
        [("QV.CA0130000.LIC/PAUSED1", True), ("QV.CA0130000.LIC/PAUSED2", True)], t.text
    assert t.text.index("no A/N for") < t.text.index("Session ended: CONNECTION")
    assert "FAILOVER" not in "".join(line for line in t.text.splitlines() if line.startswith("no A/N"))
    # not sent again: the node that serves now never got them
    assert not [r for r in search(nodes.cfg["B"], "--mke", "QV") if "PAUSED" in json.dumps(r)]


# -- typing while the client reconnects (newcomer6 finding 5) -------------------------------------

TYPED_AHEAD = [
    # id, lines typed while no node serves and no prompt waits for them
    ("enter-and-password", ["", PASSWORD]),  # the finding: Enter (banner) then the password -> the User ID
    ("a-whole-logon-dialog", ["", "TS0002", "", PASSWORD]),  # every answer of the dialog, another user's
    ("a-message", ["QV.CA0130000.LIC/TYPED1"]),  # meant for the session that was lost
    ("end-of-input", ["\x04"]),  # Ctrl-D typed meanwhile: does not end the next connection's dialog
]


@pytest.mark.parametrize("name,lines", TYPED_AHEAD, ids=[c[0] for c in TYPED_AHEAD])
def test_what_is_typed_during_a_reconnect_is_neither_shown_nor_sent(nodes, name, lines):
    """CJIS IA-6: a password typed while the client reconnects is not echoed, and nothing typed
    then is taken by the next connection's prompts (it would have become the User ID)."""
    gone = closed_port()
    t = Tty("--connect", nodes.addr("A", gone), "--header", "ICS1")
    try:
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['A']}.")
        logon(t)
        nodes.serve["A"].stop(signal.SIGKILL)
        t.expect(r"Connecting to the next msc address\.")
        t.expect(r"connection refused; trying")  # no node serves: the client is in its reconnect loop
        mark = len(t.text)
        t.type_ahead(lines)  # in the terminal's input queue, unread
        nodes.serve["A"] = nodes.start("A")
        t.expect(f"Connected to msc at 127.0.0.1:{nodes.ports['A']}.", timeout=60)
        logon(t)  # each prompt waits for its own answer: the banner's Enter, TS0001, its password
        t.type(QUERY)
        t.expect(r"\nA \d+")
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
    shown = t.text[mark:]
    for line in lines:
        assert line.strip("\x04") == "" or line not in shown, shown  # not echoed
    assert PASSWORD not in t.text, t.text
    assert re.findall(r"^A \d+ MNE/ICS1\.USR/(\w+)", t.text, re.M) == ["TS0001", "TS0001"], t.text
    assert not re.search(r"^N \d+ ", t.text, re.M) and "Logon refused" not in t.text, t.text
    # Nothing typed ahead reached msc: no refused logon or message, no session of another user.
    assert search(nodes.cfg["A"], "--code", "E108") == [] and search(nodes.cfg["A"], "--code", "E202") == []
    assert search(nodes.cfg["A"], "--user", "TS0002") == []
    assert not [r for r in search(nodes.cfg["A"], "--mke", "QV") if "TYPED1" in json.dumps(r)]


# -- the load generator ---------------------------------------------------------------------------

def test_the_load_generator_moves_its_terminals_to_the_next_node_when_one_is_killed(tmp_path):
    """bench/loadgen.py switch --connect A,B: kill -9 of A under load, every terminal reconnects to
    B and the load goes on there (reconnects = terminals; B acknowledged transactions)."""
    import sys

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "bench"))
    import benchconfig

    procs: list[Proc] = []
    up = free_port()
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", log=tmp_path / "stub.err"))
    wait_port(up)
    ports, mports, serve = {}, {}, {}
    try:
        for n in "AB":
            ports[n], mports[n] = free_port(), free_port()
            cfg = benchconfig.write(tmp_path / n, port=ports[n], metrics_port=mports[n], upstream_ports=[up],
                                    stations=4, timeout_s=5, heartbeat_s=1)
            serve[n] = start_serve(procs, tmp_path / n, cfg)
        gen = subprocess.Popen([sys.executable, str(root / "bench" / "loadgen.py"), "switch", "--connect",
                                f"127.0.0.1:{ports['A']},127.0.0.1:{ports['B']}", "--terminals", "4",
                                "--warmup", "0", "--duration", "6"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root / "bench")
        try:
            # A has acknowledged traffic from the generator: now kill it
            deadline = time.monotonic() + 30
            while accepted(mports["A"]) < 20:
                assert gen.poll() is None and time.monotonic() < deadline, gen.stderr.read()
                time.sleep(0.05)
            serve["A"].stop(signal.SIGKILL)
            out, err = gen.communicate(timeout=60)
        finally:
            if gen.poll() is None:
                gen.kill()
        assert gen.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["reconnects"] == 4, json.dumps(result)
        assert result["transactions"] > 0
        # only the mix's deliberately refused kinds are refused: the requests the bench measures
        # pass the message-key edits (a malformed one would be E108, and a terminal sending
        # refusals past max_refused_per_minute is closed)
        assert set(result["rejects"]) <= {"E108", "E301"}, json.dumps(result)
        assert all(n <= result["kinds"].get(code, 0) for code, n in result["rejects"].items()), json.dumps(result)
        assert accepted(mports["B"]) > 0  # the load went on at B
    finally:
        for p in reversed(procs):
            p.stop()


def accepted(metrics_port: int) -> float:
    """msc_messages_total{outcome="accepted"} summed, from a node's /metrics (0 when unreachable)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("msc_messages_total{") and 'outcome="accepted"' in line)
