"""`msc terminal` on a logon msc could not decide, and on requests left without an answer when
the connection went (newcomer7 findings 2 and 4), with the real `msc serve` and `msc stub`.

* A script whose LOGON is answered "try again" — E503 (msc's run-time state, ``state.db``, held
  locked by the test, as a database away does it), E307 (the address throttled) — tries again
  after a back-off and gets its answer; when its ``--reconnect-for`` runs out it exits 75,
  never 3 ("authentication refused"). An operator is told it was no wrong password and offered
  the same logon again.
* A request msc accepted (``A``) whose answer had not come when the connection was lost: after
  the new logon the client says where its answer goes — to this station (static), or to the
  pool's printer (pooled: the loan ended with the connection, PROTOCOL.md §4) — and the answer,
  or the ``MSC.E302`` of a restart, does go there.
"""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import MSC, run, start_serve
from tests.e2e.test_fates_e2e import ctl, stub
from tests.e2e.test_terminal_client import Tty
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(240)

QW = "QW.CA0130100.NAM/POOLED, HELD.DOB/19750505"
QW_ICS = "QW.CA0130000.NAM/STATIC, HELD.DOB/19750505"


class Node:
    """One `msc serve` on one `msc stub` (with a control port); ``restart`` after a kill -9."""

    def __init__(self, tmp: Path, procs, **overrides) -> None:
        self.tmp, self.procs = tmp, procs
        up, self.control, self.port = free_port(), free_port(), free_port()
        stub(procs, tmp, up, self.control, "stub")
        self.cfg = make_config(tmp, upstream_ports=[up], port=self.port, metrics_port=free_port(), **overrides)
        self.serve = start_serve(procs, tmp, self.cfg)

    def restart(self) -> None:
        self.serve.stop(signal.SIGKILL)
        self.serve = start_serve(self.procs, self.tmp, self.cfg, log="serve2.err")

    @property
    def state_db(self) -> Path:
        return self.tmp / "data" / "state.db"


class Script:
    """`msc terminal` as a script (pipes), read line by line while it runs."""

    def __init__(self, *args: str, password: str = PASSWORD) -> None:
        self.p = subprocess.Popen([*MSC, "terminal", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.p.stdin.write(password + "\n")
        self.p.stdin.close()
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(f, into), daemon=True)
                         for f, into in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for th in self._threads:
            th.start()

    @staticmethod
    def _pump(f, into: list[str]) -> None:
        for line in f:
            into.append(line.rstrip("\n"))

    def wait_line(self, where: list[str], pattern: str, timeout: float = HANG_S) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            exited = self.p.poll() is not None
            if exited:
                for th in self._threads:
                    th.join(HANG_S)  # everything it wrote is read
            for line in list(where):
                if m := re.search(pattern, line):
                    return m
            assert not exited and time.monotonic() < deadline, \
                f"no line {pattern!r}:\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            time.sleep(0.05)

    def wait(self, timeout: float = 120) -> int:
        rc = self.p.wait(timeout)
        for th in self._threads:
            th.join(HANG_S)
        return rc

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)


class Cut:
    """A TCP relay in front of a node that the test can cut, as a network failure does: the
    client's connection is lost while the node goes on (its session ends with the connection)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            self.pairs.append((c, s))
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Close every relayed connection, both sides."""
        for c, s in self.pairs:
            for x in (c, s):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.pairs = []

    def close(self) -> None:
        self.cut()
        self.sock.close()


def locked(db: Path) -> sqlite3.Connection:
    """Hold ``state.db``'s write lock, as a database that does not answer: msc's logon waits its
    busy timeout and answers E503 STORAGE UNAVAILABLE, TRY AGAIN."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=HANG_S)
    conn.execute("BEGIN IMMEDIATE")
    return conn


# -- a logon msc could not decide (finding 2) ---------------------------------------------------

def test_a_script_refused_e503_tries_its_logon_again_and_gets_its_answer(tmp_path, procs):
    """The finding: `N 1 E503 STORAGE UNAVAILABLE, TRY AGAIN` then exit 3. Now: said, tried again
    after a back-off, answered once the database is back; "refused" is never said."""
    node = Node(tmp_path, procs)
    lock = locked(node.state_db)
    s = Script("--connect", f"127.0.0.1:{node.port}", "--header", "ECMDT", "--user", "EC0002", "--password-stdin",
               "--send", "QV.CA0130100.LIC/PGDOWN2", "--expect", "1", "--timeout", str(HANG_S))
    try:
        s.wait_line(s.out, r"^N \d+ E503 STORAGE UNAVAILABLE, TRY AGAIN$", timeout=60)
        s.wait_line(s.err, r"^Logon not decided: msc could not reach its database to check the logon \(E503 "
                           r"STORAGE UNAVAILABLE, TRY AGAIN\)\. This is not a wrong password\. Trying again in "
                           r"\d+\.\d s\.$")
        lock.rollback()  # the database is back
        assert s.wait() == 0, s.stderr
    finally:
        lock.close()
        s.kill()
    assert re.search(r"^A \d+ MNE/ECM\d\.USR/EC0002$", s.stdout, re.M), s.stdout
    assert re.search(r"^M \d+ ECM\d\w+\.", s.stdout, re.M), s.stdout  # its answer
    assert "refused" not in s.stderr.lower(), s.stderr


@pytest.fixture
def throttled(tmp_path, procs):
    """A node that answers E307 TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS after one failed logon
    from 127.0.0.1, for ``logon_failures_window_s`` (4 s)."""
    node = Node(tmp_path, procs, switch_extra="logon_failures_per_address = 1\nlogon_failures_window_s = 4")

    def fail_once() -> None:
        r = run("terminal", "--connect", f"127.0.0.1:{node.port}", "--header", "ICS1", "--user", "TS0001",
                "--password-stdin", "--timeout", str(HANG_S), input="not the password\n")
        assert r.returncode == 3 and "E202" in r.stdout, (r.stdout, r.stderr)  # wrong password: 3, as before

    node.fail_once = fail_once
    return node


TRIES = [
    # id, --reconnect-for, further options -> exit status, what stderr says last
    ("within-budget", "120", [], 0, r"Trying again in"),
    ("budget-spent", "1", [], 75, r"Not trying again: giving up \d+ s after the first try \(--reconnect-for\)\. "
                                  r"Exit 75: temporarily unavailable\.$"),
]


@pytest.mark.parametrize("name,budget,extra,status,said", TRIES, ids=[x[0] for x in TRIES])
def test_a_throttled_script_tries_again_until_its_budget_runs_out_then_exits_75(throttled, name, budget, extra,
                                                                                 status, said):
    throttled.fail_once()
    s = Script("--connect", f"127.0.0.1:{throttled.port}", "--header", "ICS1", "--user", "TS0001",
               "--password-stdin", "--reconnect-for", budget, *extra, "--send", QW_ICS.replace("HELD", "FREE"),
               "--expect", "1", "--timeout", str(HANG_S))
    try:
        assert s.wait() == status, s.stderr
    finally:
        s.kill()
    assert re.search(r"^N \d+ E307 TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS, TRY LATER$", s.stdout, re.M), s.stdout
    assert re.search(said, s.stderr, re.M), s.stderr
    assert "Logon not decided: msc did not check the logon" in s.stderr
    if status == 0:
        assert re.search(r"^M \d+ ICS1\w+\.", s.stdout, re.M), s.stdout


def test_a_script_whose_retries_outlast_the_logon_time_limit_connects_again_and_goes_on(tmp_path, procs):
    """msc closes a connection that has not logged on within logon_timeout_s (E201): a script
    still trying its logon connects again (the same address) and goes on within its budget,
    instead of ending with exit 4."""
    node = Node(tmp_path, procs, listener_extra="logon_timeout_s = 2",
                switch_extra="logon_failures_per_address = 1\nlogon_failures_window_s = 6")
    r = run("terminal", "--connect", f"127.0.0.1:{node.port}", "--header", "ICS1", "--user", "TS0001",
            "--password-stdin", "--timeout", str(HANG_S), input="not the password\n")
    assert r.returncode == 3, (r.stdout, r.stderr)
    s = Script("--connect", f"127.0.0.1:{node.port}", "--header", "ICS1", "--user", "TS0001", "--password-stdin",
               "--send", QW_ICS.replace("HELD", "FREE"), "--expect", "1", "--timeout", str(HANG_S))
    try:
        assert s.wait() == 0, s.stderr
    finally:
        s.kill()
    assert re.search(r"^Connection to msc ended \(no one was logged on\): E201 NO LOGON WITHIN 2 S\. Connecting again to try the "
                     r"logon\.$", s.stderr,
                     re.M), s.stderr
    assert re.search(r"^A \d+ MNE/ICS1\.USR/TS0001$", s.stdout, re.M), s.stdout
    assert re.search(r"^M \d+ ICS1\w+\.", s.stdout, re.M), s.stdout


def test_an_operator_refused_try_again_is_not_told_logon_refused_and_is_offered_the_same_logon(throttled):
    """The cosmetic item: "Logon refused." printed under "TRY AGAIN". Now the refusal is said to
    be no wrong password, and Enter tries the same user ID and password again."""
    throttled.fail_once()
    t = Tty("--connect", f"127.0.0.1:{throttled.port}", "--header", "ICS1")
    try:
        t.expect("Press Enter to acknowledge")
        t.type("")
        t.expect("User ID: ")
        t.type("TS0001")
        t.expect(r"One-time password \(Enter if none\): ")
        t.type("")
        t.expect("Password: ")
        t.type(PASSWORD)
        t.expect(r"E307 TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS, TRY LATER")
        t.expect(r"Logon not decided: .*This is not a wrong password\.")
        for _ in range(60):  # Enter until the address's window has passed (4 s): each try is answered
            t.expect(r"Press Enter to try again as TS0001, or type anything to log on as another user "
                     r"\(Ctrl-D to exit\): ")
            t.type("")
            if t.expect(r"Logged on as ICS1\.|Logon not decided") != "Logon not decided":
                break
        else:
            raise AssertionError(t.text)
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
    assert "Logon refused" not in t.text, t.text
    assert PASSWORD not in t.text


def test_a_dialog_piped_in_refused_try_again_exits_75_without_feeding_its_next_line_to_a_prompt(throttled):
    """An interactive dialog from a pipe (term7's rule: no answer to a prompt it could not
    foresee): a logon msc could not decide ends it with 75, not 3, and no second logon."""
    throttled.fail_once()
    r = run("terminal", "--connect", f"127.0.0.1:{throttled.port}", "--header", "ICS1",
            input=f"\nTS0001\n\n{PASSWORD}\nQV.CA0130000.LIC/PIPED1\n", timeout=HANG_S + 30)
    assert r.returncode == 75, (r.stdout, r.stderr)
    assert "E307 TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS" in r.stdout
    assert re.search(r"This is not a wrong password\.\nNot trying again: the input is not a terminal: .* Exit 75: "
                     r"temporarily unavailable\.$", r.stderr, re.M), r.stderr
    assert "Logon refused" not in r.stderr and "Press Enter to try again" not in r.stdout + r.stderr
    assert PASSWORD not in r.stdout + r.stderr


# -- accepted, no answer when the connection went (finding 4) -----------------------------------

def test_a_pooled_script_is_told_its_accepted_request_goes_to_the_pools_printer(tmp_path, procs):
    """The finding: a pooled operator's QW acknowledged, the node killed, a new logon — and
    nothing said. Now the client names the request and the printer; the printer gets its E302."""
    node = Node(tmp_path, procs)
    assert ctl(node.control, "hold on") == "OK"
    addr = f"127.0.0.1:{node.port}"
    s = Script("--connect", f"{addr},{addr}", "--header", "ECMDT", "--user", "EC0001", "--password-stdin",
               "--send", QW, "--expect", "1", "--timeout", "120")
    try:
        s.wait_line(s.out, r"^A 2$")  # the QW accepted (A 1 was the logon)
        node.restart()  # kill -9, and the node comes back (a failover's other node does the same)
        assert s.wait() == 1, s.stderr
    finally:
        s.kill()
    m = re.search(r"^(ECM\d\w+)\.QW\.CA0130100\.NAM/POOLED, HELD\.DOB/19750505: accepted by msc \(A 2\) but not "
                  r"answered before the connection was lost\. Its answer, or msc's notice of its fate \(MSC\.E302 "
                  r"if msc restarted or failed over meanwhile\), goes to the pool's printer \(a pool without one: "
                  r"only to the journal\), not to this session: the loan of (ECM\d) ended with the session\. Look "
                  r"there for header (ECM\d\w+) before sending it again\.$", s.stderr, re.M)
    assert m and m.group(1) == m.group(3) and m.group(1).startswith(m.group(2)), s.stderr
    assert "the rest cannot come to this session" in s.stderr  # not a 120-s wait for nothing
    assert len(re.findall(r"^A \d+ MNE/ECM\d\.USR/EC0001$", s.stdout, re.M)) == 2, s.stdout  # logged on again
    # ... and it is true: the pool's printer gets the notice with that header.
    p = run("terminal", "--connect", addr, "--header", "ECP1", "--bind", "--expect", "1", "--timeout", str(HANG_S))
    assert p.returncode == 0, p.stderr
    assert re.search(rf"^M \d+ {m.group(1)}\.MSC\.E302 SWITCH RESTARTED BEFORE THE ANSWER CAME$", p.stdout, re.M), \
        p.stdout


def test_a_pooled_operator_who_logs_off_with_a_request_open_is_told_and_logs_on_again_through_the_pool(tmp_path,
                                                                                                       procs):
    """LOGOFF ends the loan (PROTOCOL.md §4): the open QW's answer goes to the printer, and the
    client says so. The next LOGON names the pool again — it named the mnemonic of the ended
    loan, which is no station (E210)."""
    node = Node(tmp_path, procs)
    assert ctl(node.control, "hold on") == "OK"
    r = run("terminal", "--connect", f"127.0.0.1:{node.port}", "--header", "ECMDT",
            input=f"\nEC0001\n\n{PASSWORD}\n{QW}\nLOGOFF\nEC0001\n\n{PASSWORD}\n", timeout=HANG_S + 30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert len(re.findall(r"\bA \d+ MNE/ECM\d\.USR/EC0001$", r.stdout, re.M)) == 2, r.stdout  # (after a prompt)
    assert "E210" not in r.stdout
    assert re.search(r"^ECM\d\w+\.QW\.CA0130100\.NAM/POOLED, HELD\.DOB/19750505: accepted by msc \(A \d+\) but not "
                     r"answered before the session ended \(LOGOFF\)\. .* goes to the pool's printer", r.stderr, re.M), \
        r.stderr


def test_a_static_station_is_told_its_accepted_request_is_answered_here_after_the_new_logon(tmp_path, procs):
    """A static station's answers go to its mnemonic: the client says the answer will come here,
    and it does (the node went on: only the connection was lost)."""
    node = Node(tmp_path, procs)
    relay = Cut(node.port)
    assert ctl(node.control, "hold on") == "OK"
    addr = f"127.0.0.1:{relay.port}"
    s = Script("--connect", f"{addr},{addr}", "--header", "ICS1", "--user", "TS0001", "--password-stdin",
               "--send", QW_ICS, "--expect", "1", "--timeout", "120")
    try:
        s.wait_line(s.out, r"^A 2$")
        relay.cut()
        m = s.wait_line(s.err, r"^(ICS1\w+)\.QW\.CA0130000\.NAM/STATIC, HELD\.DOB/19750505: accepted by msc "
                               r"\(A 2\) but not answered before the connection was lost\. Its answer, or msc's "
                               r"notice of its fate \(MSC\.E302 if msc restarted or failed over meanwhile\), will be "
                               r"delivered to station ICS1 with header (ICS1\w+) \(here once logged on, else at the "
                               r"station's next logon\)\.$")
        assert m.group(1) == m.group(2)
        assert ctl(node.control, "hold off") == "OK"  # the answer comes, to the station
        assert s.wait() == 0, s.stderr
    finally:
        s.kill()
        relay.close()
    assert re.search(rf"^M \d+ {m.group(1)}\.", s.stdout, re.M), s.stdout
    assert "printer" not in s.stderr


# -- a printer stays bound (newcomer8) ----------------------------------------------------------

def test_a_bound_printer_stays_prints_what_comes_binds_again_after_a_kill_and_ends_by_sigterm(tmp_path, procs):
    """`msc terminal --connect A,B --header ECP1 --bind`, stdin at its end (as under a service
    manager): it bound and exited 0 at once, and the administrator's first printer printed nothing.
    Now it stays, prints each output, binds again after its node is killed, and ends by SIGTERM."""
    node = Node(tmp_path, procs)
    addr = f"127.0.0.1:{node.port}"
    printer = Script("--connect", f"{addr},{addr}", "--header", "ECP1", "--bind", password="")

    def notice(text: str) -> None:
        r = run("terminal", "--connect", addr, "--header", "ICS1", "--user", "TS0001", "--password-stdin",
                "--send", f"AM.CA0130000.ECP1.TXT {text}", input=PASSWORD + "\n", timeout=HANG_S + 30)
        assert r.returncode == 0, r.stderr

    try:
        printer.wait_line(printer.err, r"^Bound as ECP1: printing its outputs as they come")
        notice("FIRST NOTICE")
        printer.wait_line(printer.out, r"^M \d+ ECP1\.AM\.CA0130000\.ICS1\.TXT FIRST NOTICE$")
        node.restart()  # kill -9, and the node comes back: the printer connects again and binds
        deadline = time.monotonic() + HANG_S
        while sum(x.startswith("Bound as ECP1") for x in printer.err) < 2:
            assert printer.p.poll() is None and time.monotonic() < deadline, printer.stderr
            time.sleep(0.05)
        notice("SECOND NOTICE")
        printer.wait_line(printer.out, r"^M \d+ ECP1\.AM\.CA0130000\.ICS1\.TXT SECOND NOTICE$")
        assert printer.p.poll() is None
        printer.p.send_signal(signal.SIGTERM)
        assert printer.wait(HANG_S) == -signal.SIGTERM  # ended by that signal (143 in a shell)
    finally:
        printer.kill()
