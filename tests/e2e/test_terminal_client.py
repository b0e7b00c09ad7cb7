"""`msc terminal` as a dispatcher meets it (issue 12 item 7), through the real command.

Interactive cases run the client on a pseudo-terminal (so echo-off, Ctrl-D and prompts behave as
at a keyboard); scripted cases run it with pipes as a script would. Each session-ending reason
msc can send (`SYS LOGOFF.<why>`) and a connection that dies are a row of a table.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import resource
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import MSC, run, start_serve, start_stub
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(180)


class Tty:
    """`msc terminal` on a pseudo-terminal: read what it shows, type to it."""

    def __init__(self, *args: str, **popen) -> None:
        master, slave = pty.openpty()
        self.initial = termios.tcgetattr(slave)  # the terminal's settings before the client ran
        # Its own session, unless the popen arguments say otherwise (process_group=0: a job of
        # this session, whose process group is not orphaned, so SIGTSTP stops it as in a shell).
        popen.setdefault("start_new_session", "process_group" not in popen)
        self.p = subprocess.Popen([*MSC, "terminal", *args], stdin=slave, stdout=slave, stderr=slave,
                                  close_fds=True, **popen)
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        self.fd = master
        self.text = ""
        self.pos = 0

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the client exited and closed its side
            return False
        if not data:
            return False
        self.text += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern: str, timeout: float = HANG_S) -> str:
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.text, self.pos)
            if m:
                self.pos = m.end()
                return m.group(0)
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.5)) and not re.compile(pattern).search(self.text, self.pos):
                raise AssertionError(f"did not see {pattern!r}; screen:\n{self.text}")

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def queued(self) -> int:
        """Bytes typed and not read by the client yet (the terminal's input queue: complete lines)."""
        fd = os.open(self.slave_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        finally:
            os.close(fd)

    def attrs(self) -> list:
        """The terminal's settings now (termios.tcgetattr)."""
        fd = os.open(self.slave_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            return termios.tcgetattr(fd)
        finally:
            os.close(fd)

    def echoes(self) -> bool:
        return bool(self.attrs()[3] & termios.ECHO)

    def type_ahead(self, lines: list[str]) -> None:
        """Type ``lines`` and wait until the terminal holds them (typed, not read by the client)."""
        typed = "".join(line + "\n" for line in lines).encode()
        before = self.queued()
        os.write(self.fd, typed)
        deadline = time.monotonic() + 30
        # (an end of input, Ctrl-D, ends its line without being a byte of it)
        while self.queued() < before + len(typed.replace(b"\x04", b"")):
            assert time.monotonic() < deadline, f"typed-ahead lines not queued ({self.queued()} bytes)"
            time.sleep(0.02)

    def ctrl_d(self) -> None:
        os.write(self.fd, b"\x04")

    def wait(self, timeout: float = HANG_S) -> int:
        deadline = time.monotonic() + timeout
        while self.p.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while self._read(0.05) and self.p.poll() is not None and select.select([self.fd], [], [], 0)[0]:
            pass
        if self.p.poll() is None:
            self.p.kill()
            raise AssertionError(f"the client did not exit; screen:\n{self.text}")
        return self.p.returncode

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        os.close(self.fd)


def logon(t: Tty, user: str = "TS0001") -> None:
    t.expect("Press Enter to acknowledge")
    t.type("")
    t.expect("User ID: ")
    t.type(user)
    t.expect(r"One-time password \(Enter if none\): ")
    t.type("")
    t.expect("Password: ")
    t.type(PASSWORD)
    t.expect(r"Logged on as ICS1\.")


def scripted(port: int, *sends: str, expect: int = 0, user: str = "TS0001", header: str = "ICS1",
             timeout: float = HANG_S) -> subprocess.CompletedProcess:
    return run("terminal", "--connect", f"127.0.0.1:{port}", "--header", header, "--user", user, "--password-stdin",
               *[a for s in sends for a in ("--send", s)], "--expect", str(expect), "--timeout", str(timeout),
               input=PASSWORD + "\n")


def set_station_status(cfg: Path, mnemonic: str, status: str) -> None:
    text = cfg.read_text()
    text = text.replace(f'mnemonic = "{mnemonic}"\n', f'mnemonic = "{mnemonic}"\nstatus = "{status}"\n', 1)
    cfg.write_text(text)


def set_user(cfg: Path, uid: str, *, remove: bool = False) -> None:
    import msgspec

    from msc.mnemonics import userfile

    path = cfg.parent / "users.toml"
    users = userfile.read(path)
    kept = []
    for u in users.user:
        if u.id == uid:
            if remove:
                continue
            u = msgspec.structs.replace(u, status="disabled")
        kept.append(u)
    userfile.write(path, msgspec.structs.replace(users, user=tuple(kept)))


# -- every way a session ends -------------------------------------------------------------------

def _shutdown(ctx):
    ctx["serve"].p.send_signal(signal.SIGTERM)


def _station_disabled(ctx):
    set_station_status(ctx["cfg"], "ICS1", "disabled")
    ctx["serve"].p.send_signal(signal.SIGHUP)


def _replaced(ctx):
    # The same station connects again (a restarted terminal): the newer session wins.
    ctx["other"] = subprocess.Popen([*MSC, "terminal", "--connect", f"127.0.0.1:{ctx['port']}", "--header", "ICS1",
                                     "--user", "TS0002", "--password-stdin"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx["other"].communicate(PASSWORD + "\n", timeout=30)


def _user_disabled(ctx):
    set_user(ctx["cfg"], "TS0001")
    ctx["serve"].p.send_signal(signal.SIGHUP)


def _user_removed(ctx):
    set_user(ctx["cfg"], "TS0001", remove=True)
    ctx["serve"].p.send_signal(signal.SIGHUP)


def _killed(ctx):
    ctx["serve"].p.send_signal(signal.SIGKILL)  # a crash: no SYS message, the connection just ends


def _idle(ctx):
    pass  # the switch logs the idle operator off by itself


ENDINGS = [
    # id, config overrides, action, the reason shown, msc keeps the connection (logon prompt again)
    # (a short drain: in the scripted case the request is still upstream, and the ending is the
    # same whether the drain waits 1 s or the default 10 s for it)
    ("shutdown", {"switch_extra": "drain_timeout_s = 1"}, _shutdown, "SHUTDOWN", False),
    ("station-disabled", {}, _station_disabled, "STATION DISABLED", False),
    ("replaced", {}, _replaced, "REPLACED", False),
    ("connection-reset", {}, _killed, "CONNECTION (RESET|LOST)", False),  # killed: no LOGOFF, not "closed by msc"
    ("idle", {"idle_logoff_s": 2}, _idle, "IDLE", True),
    ("session-maximum", {"session_max_s": 2}, _idle, "SESSION MAXIMUM", True),
    ("user-disabled", {}, _user_disabled, "USER DISABLED", True),
    ("user-removed", {}, _user_removed, "USER REMOVED", True),
]


def shown(reason: str, stays: bool) -> str:
    if stays:
        return rf"Session ended by msc: {reason}\. Log on again, or Ctrl-D to exit\."
    return rf"Session ended: {reason}\. Disconnected from msc\."


@pytest.mark.parametrize("name,overrides,action,reason,stays", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_interactive_session_ends_with_the_reason(tmp_path, procs, name, overrides, action, reason, stays):
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port(), **overrides)
    serve = start_serve(procs, tmp_path, cfg)
    t = Tty("--connect", f"127.0.0.1:{port}", "--header", "ICS1")
    ctx = {"serve": serve, "cfg": cfg, "port": port}
    try:
        logon(t)
        action(ctx)
        t.expect(shown(reason, stays))
        if stays:
            # msc kept the connection: the next operator logs on at the same prompt; Ctrl-D exits.
            t.expect("User ID: ")
            if name in ("idle", "session-maximum"):
                t.type("TS0002")
                t.expect(r"One-time password \(Enter if none\): ")
                t.type("")
                t.expect("Password: ")
                t.type(PASSWORD)
                t.expect(r"Logged on as ICS1\.")
                t.expect(shown(reason, stays))  # the next session ends the same way: the client keeps up
                t.expect("User ID: ")
            t.ctrl_d()
            assert t.wait() == 0, t.text
        else:
            assert t.wait() == 4, t.text
        # Typed input after the end goes nowhere: the client is gone, it does not swallow lines.
        assert t.p.poll() is not None
    finally:
        t.close()


@pytest.mark.parametrize("name,overrides,action,reason,stays", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_scripted_session_ended_while_waiting_exits_4(tmp_path, procs, name, overrides, action, reason, stays):
    """A script waiting for an answer learns that the session ended, and why, at once."""
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port(), **overrides)
    stub = start_stub(procs, tmp_path, up, "--latency-ms", "60000")  # the answer never comes in time
    serve = start_serve(procs, tmp_path, cfg)
    p = subprocess.Popen([*MSC, "terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS1", "--user",
                          "TS0001", "--password-stdin", "--send", "QV.CA0130000.LIC/WAIT1", "--expect", "1",
                          "--timeout", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    p.stdin.write(PASSWORD + "\n")
    p.stdin.close()
    try:
        line = ""
        while not line.startswith("A 2"):  # the QV was accepted: the client now waits for its answer
            line = p.stdout.readline()
            assert line, p.stderr.read()
        action({"serve": serve, "cfg": cfg, "port": port})
        assert p.wait(timeout=30) == 4
        err = p.stderr.read()
        assert re.search(rf"Session ended( by msc)?: {reason}\.", err), err
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        stub.stop(signal.SIGKILL)  # the request still upstream: the switch's drain need not wait for it


# -- the operator's own ways out ---------------------------------------------------------------

def test_typed_logoff_logs_off_and_returns_to_the_logon_prompt(tmp_path, procs):
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port())
    start_serve(procs, tmp_path, cfg)
    t = Tty("--connect", f"127.0.0.1:{port}", "--header", "ICS1")
    try:
        logon(t)
        for typed in ("LOGOFF", "logoff ", "ICS1.LOGOFF"):
            t.type(typed)
            t.expect(r"A \d+")
            t.expect(r"Logged off\.")
            t.expect("User ID: ")
            t.type("TS0001")
            t.expect(r"One-time password \(Enter if none\): ")
            t.type("")
            t.expect("Password: ")
            t.type(PASSWORD)
            t.expect(r"Logged on as ICS1\.")
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
    # The journal's session records: every LOGOFF, nothing after the last one but the disconnect.
    assert t.text.count("Logged off.") == 3


CTRL_D_AT = ["banner", "user-id", "otp", "password", "session", "after-logoff"]


@pytest.mark.parametrize("where", CTRL_D_AT)
def test_ctrl_d_ends_the_client_at_every_prompt(tmp_path, procs, where):
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port())
    start_serve(procs, tmp_path, cfg)
    t = Tty("--connect", f"127.0.0.1:{port}", "--header", "ICS1")
    try:
        steps = [("Press Enter to acknowledge", ""), ("User ID: ", "TS0001"),
                 (r"One-time password \(Enter if none\): ", ""), ("Password: ", PASSWORD),
                 (r"Logged on as ICS1\.", "LOGOFF"), (r"Logged off\.", None)]
        stop = {"banner": 0, "user-id": 1, "otp": 2, "password": 3, "session": 4, "after-logoff": 5}[where]
        for prompt, answer in steps[:stop]:
            t.expect(prompt)
            t.type(answer)
        t.expect(steps[stop][0])
        if where == "after-logoff":
            t.expect("User ID: ")
        t.ctrl_d()
        assert t.wait() == 0, t.text
        assert "Traceback" not in t.text
        if where == "session":
            assert re.search(r"A \d+\s*$", t.text.strip().splitlines()[-1]), t.text  # the LOGOFF was accepted
    finally:
        t.close()


# -- the terminal's settings on every way out ------------------------------------------------------

def _no_core() -> None:
    """The client as a login shell starts it: no core dump (SIGQUIT's default action dumps
    core), and the signals under test at their default action. A test run started in the
    background or under nohup inherits SIGHUP, SIGINT and SIGQUIT ignored (a shell without job
    control ignores SIGINT and SIGQUIT for ``&``), and the client rightly keeps a signal its
    parent ignored — which is not what these cases test."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


SIGNALLED = [
    # id, where the client is when the signal comes, the signal, its exit status (-N: ended by signal N)
    ("sigterm-while-trying", "trying", signal.SIGTERM, -signal.SIGTERM),  # kill PID during a failover
    ("sighup-while-trying", "trying", signal.SIGHUP, -signal.SIGHUP),  # the window or SSH session closed
    ("sigquit-while-trying", "trying", signal.SIGQUIT, -signal.SIGQUIT),  # Ctrl-\
    ("sigint-while-trying", "trying", signal.SIGINT, 1),  # Ctrl-C: "Stopped: no msc node answered."
    ("sigterm-at-password", "password", signal.SIGTERM, -signal.SIGTERM),  # echo off for the secret
    ("sighup-at-password", "password", signal.SIGHUP, -signal.SIGHUP),
    ("sigterm-in-a-session", "session", signal.SIGTERM, -signal.SIGTERM),  # echo on: left on
]


@pytest.mark.parametrize("name,where,signum,status", SIGNALLED, ids=[c[0] for c in SIGNALLED])
def test_a_signal_leaves_the_terminal_as_it_was(tmp_path, procs, name, where, signum, status):
    """A client ended by a signal while echo was off (between prompts, a reconnect, the password)
    left the operator's terminal without echo (``stty sane`` needed): the settings it found are
    restored, and it ends as that signal ends a process (a shell's 128 + N)."""
    if where == "trying":
        connect = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"  # nothing listens: it keeps trying
    else:
        port = free_port()
        start_serve(procs, tmp_path, make_config(tmp_path, port=port, metrics_port=free_port()))
        connect = f"127.0.0.1:{port}"
    t = Tty("--connect", connect, "--header", "ICS1", preexec_fn=_no_core)
    try:
        if where == "trying":
            t.expect("connection refused; trying")
        else:
            steps = DIALOG if where == "password" else [*DIALOG, (r"Logged on as ICS1\.", None)]
            for prompt, answer in steps[:-1]:
                t.expect(prompt)
                t.type(answer)
            t.expect(steps[-1][0])
        assert t.echoes() == (where == "session"), t.text  # the state the signal finds
        t.p.send_signal(signum)
        assert t.wait() == status, t.text
        assert t.attrs() == t.initial, t.text
        assert "Traceback" not in t.text
        if signum == signal.SIGTERM:
            assert "msc terminal: ended by SIGTERM; the connection to msc is closed." in t.text
    finally:
        t.close()


def _nohup() -> None:
    _no_core()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def test_a_signal_ignored_by_whoever_started_the_client_stays_ignored():
    """``nohup msc terminal …``: SIGHUP ignored by the parent stays ignored (the client goes on);
    a SIGTERM after it still ends the client, its terminal restored."""
    connect = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    t = Tty("--connect", connect, "--header", "ICS1", preexec_fn=_nohup)
    try:
        t.expect("connection refused; trying")  # (its handlers are in place before the first try)
        masks = {k: int(v, 16) for k, v in re.findall(r"^(SigIgn|SigCgt):\s*([0-9a-f]+)$",
                                                       Path(f"/proc/{t.p.pid}/status").read_text(), re.M)}

        def bit(signum: int) -> int:
            return 1 << (signum - 1)

        assert masks["SigIgn"] & bit(signal.SIGHUP) and not masks["SigCgt"] & bit(signal.SIGHUP), masks
        assert masks["SigCgt"] & bit(signal.SIGTERM), masks  # (SIGTERM is caught: the check can see one)
        t.p.send_signal(signal.SIGHUP)  # discarded by the kernel: nothing to handle
        t.p.send_signal(signal.SIGTERM)
        assert t.wait() == -signal.SIGTERM, t.text
        assert t.attrs() == t.initial, t.text
    finally:
        t.close()


# -- Ctrl-Z: the terminal is the shell's while the client is stopped -------------------------------

def _job() -> None:
    """The client as a shell's job: SIGTSTP at its default action (a test run in the background
    may inherit it ignored), no core dump."""
    _no_core()
    signal.signal(signal.SIGTSTP, signal.SIG_DFL)


def _state(pid: int) -> str:
    """The process's state letter (/proc/PID/stat): ``T`` stopped."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _until(what, why: str, t: Tty) -> None:
    deadline = time.monotonic() + HANG_S
    while not what():
        assert time.monotonic() < deadline, f"{why}; screen:\n{t.text}"
        t._read(0.05)


STOPPED = [
    # id, where Ctrl-Z comes, echo there (what fg must give back), the prompt shown again at fg
    ("at-password", "password", False, "Password: "),  # the secret: echo off
    ("at-password-half-typed", "password-half", False, "Password: "),  # part of it typed, not shown
    ("at-user-id", "user", True, "User ID: "),
    ("while-trying", "trying", False, None),  # between prompts: nothing typed is for anyone
    ("in-a-session", "session", True, None),
]


@pytest.mark.parametrize("name,where,echo,prompt", STOPPED, ids=[c[0] for c in STOPPED])
def test_ctrl_z_gives_the_shell_the_terminal_as_it_was_and_fg_gives_the_prompt_back(
        tmp_path, procs, name, where, echo, prompt):
    """Stopped by Ctrl-Z (SIGTSTP) at the password prompt, the client left the shell a terminal
    without echo: the operator's commands were not shown. While stopped the terminal is as the
    client found it; at ``fg`` (SIGCONT) echo is as the client had it, a waiting prompt is shown
    again, and what was typed at it before is not taken."""
    if where == "trying":
        connect = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    else:
        port = free_port()
        start_serve(procs, tmp_path, make_config(tmp_path, port=port, metrics_port=free_port()))
        connect = f"127.0.0.1:{port}"
    t = Tty("--connect", connect, "--header", "ICS1", preexec_fn=_job, process_group=0)
    try:
        if where == "trying":
            t.expect("connection refused; trying")
        else:
            upto = {"user": 2, "password": 4, "password-half": 4, "session": 5}[where]
            steps = [*DIALOG, (r"Logged on as ICS1\.", None)][:upto]
            for p, answer in steps[:-1]:
                t.expect(p)
                t.type(answer)
            t.expect(steps[-1][0])
            if where == "password-half":
                # Half a line, then Ctrl-Z. (The kill stands for the key: a Ctrl-Z typed comes
                # through the terminal after the half line, which is then read with echo off; a
                # kill can overtake the terminal's handling of the half line, so what the screen
                # shows before the stop is not what this row asserts.)
                os.write(t.fd, b"NOT-THE-PASSWORD")
        _until(lambda: t.echoes() == echo, "the state Ctrl-Z finds", t)
        t.p.send_signal(signal.SIGTSTP)
        _until(lambda: _state(t.p.pid) == "T", "stopped", t)
        assert t.attrs() == t.initial, t.text  # the shell's terminal: echo on
        t.p.send_signal(signal.SIGCONT)  # fg
        resumed = len(t.text)
        if prompt is not None:
            t.expect(re.escape(prompt))  # shown again
        _until(lambda: t.echoes() == echo and _state(t.p.pid) != "T", "the client's settings again", t)
        if where in ("password", "password-half"):
            t.type(PASSWORD)  # (the half typed before Ctrl-Z is not part of it)
            t.expect(r"Logged on as ICS1\.")
        elif where == "user":
            t.type("TS0001")
            t.expect(r"One-time password")
        if where == "trying":
            t.p.send_signal(signal.SIGINT)
            assert t.wait() == 1, t.text
        else:
            t.ctrl_d()
            assert t.wait() == 0, t.text
        assert t.attrs() == t.initial, t.text
        assert "Traceback" not in t.text
        assert "NOT-THE-PASSWORD" not in t.text[resumed:]  # not shown after fg (nor taken: logged on above)
    finally:
        t.close()


# -- only what is typed after a prompt answers it ------------------------------------------------

DIALOG = [("Press Enter to acknowledge", ""), ("User ID: ", "TS0001"), (r"One-time password \(Enter if none\): ", ""),
          ("Password: ", PASSWORD)]
TYPED_AHEAD_AT = [
    # id, the prompt at which more than its answer is typed (in one go), what is typed there
    ("banner", 0, ["", "TS0001"]),  # the User ID typed before its prompt
    ("user-id", 1, ["TS0001", "", PASSWORD]),  # the one-time password and password typed ahead
    ("otp", 2, ["", PASSWORD]),  # the password typed before "Password:" (echo off too): as getpass, not taken
    ("password", 3, [PASSWORD, "QV.CA0130000.LIC/AHEAD1"]),  # a message typed while the logon is checked
]


@pytest.mark.parametrize("name,at,lines", TYPED_AHEAD_AT, ids=[c[0] for c in TYPED_AHEAD_AT])
def test_lines_typed_ahead_of_a_logon_prompt_are_discarded(tmp_path, procs, name, at, lines):
    """Each prompt of the logon dialog takes only what is typed after it appears: a line typed
    before is discarded (never a credential, never a message of the next session)."""
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port())
    start_serve(procs, tmp_path, cfg)
    t = Tty("--connect", f"127.0.0.1:{port}", "--header", "ICS1")
    try:
        for i, (prompt, answer) in enumerate(DIALOG):
            t.expect(prompt)
            if i == at:
                os.write(t.fd, "".join(line + "\n" for line in lines).encode())
            else:
                t.type(answer)
        t.expect(r"Logged on as ICS1\.")
        t.type("LOGOFF")
        t.expect(r"Logged off\.")
        t.expect("User ID: ")
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
    # One logon, TS0001's; nothing typed ahead was sent (it would be a refusal or a second A).
    assert re.findall(r"^A \d+.*$", t.text, re.M) == [re.search(r"^A \d+ MNE/ICS1\.USR/TS0001$", t.text, re.M)[0],
                                                      re.search(r"^A \d+$", t.text, re.M)[0]], t.text
    assert not re.search(r"^N \d+ ", t.text, re.M) and "Logon refused" not in t.text, t.text
    if at == 3:
        assert "AHEAD1" not in t.text  # typed while hushed: not shown either


# -- a console left at the logon dialog (newcomer6 finding 10) -------------------------------------

@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    """One node whose terminal listener closes a connection not logged on within 2 s (E201)."""
    from tests.e2e.conftest import Proc

    tmp = tmp_path_factory.mktemp("logon-timeout")
    port, mport = free_port(), free_port()
    cfg = make_config(tmp, port=port, metrics_port=mport, listener_extra="logon_timeout_s = 2")
    started: list[Proc] = []
    start_serve(started, tmp, cfg)
    yield port, mport
    for p in reversed(started):
        p.stop()


LEFT_AT = [
    # id, the answers given before the operator walks away, typed LOGOFF first
    ("banner", 0, False),
    ("user-id", 1, False),
    ("otp", 2, False),
    ("password", 3, False),  # the secret prompt: echo comes back for the next one
    ("after-logoff", 4, True),  # logged off: the connection is pending again, its deadline runs
]


@pytest.mark.parametrize("addresses", [1, 2], ids=["one-address", "two-addresses"])
@pytest.mark.parametrize("name,answered,logoff", LEFT_AT, ids=[c[0] for c in LEFT_AT])
def test_a_console_left_at_the_logon_dialog_is_told_why_and_waits_for_enter(impatient, name, answered, logoff,
                                                                          addresses):
    """E201 NO LOGON WITHIN n S: the client says msc closed the connection and why (it said
    CONNECTION LOST) and waits for Enter before it connects again (with two addresses it went
    on to the next one every 60 s, for ever, each time a CONNECT and a DISCONNECT journaled)."""
    from tests.e2e.test_operations import get, metric

    port, mport = impatient
    connect = f"127.0.0.1:{port}" + (f",127.0.0.1:{free_port()}" if addresses == 2 else "")
    _, before = get(mport, "/metrics")
    closed_before = metric(before, "msc_connections_closed_total", reason="logon_timeout")
    t = Tty("--connect", connect, "--header", "ICS1")
    try:
        steps = DIALOG[:answered] if not logoff else DIALOG
        for prompt, answer in steps:
            t.expect(prompt)
            t.type(answer)
        if logoff:
            t.expect(r"Logged on as ICS1\.")
            t.type("LOGOFF")
            t.expect(r"Logged off\.")
            t.expect("User ID: ")
        t.expect(r"N 0 E201 NO LOGON WITHIN 2 S", timeout=30)
        t.expect(r"msc closed the connection: no logon within its time limit \(E201 NO LOGON WITHIN 2 S\)\.")
        t.expect("Press Enter to connect again, or Ctrl-D to exit: ")
        deadline = time.monotonic() + 20
        while metric(get(mport, "/metrics")[1], "msc_connections_closed_total", reason="logon_timeout") \
                < closed_before + 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        waiting = t.text[t.pos:]
        t.type("")  # the operator is back
        t.expect("Press Enter to acknowledge")  # a new connection, its banner
        t.ctrl_d()
        assert t.wait() == 0, t.text
    finally:
        t.close()
    assert "Connected to msc" not in waiting and "This is a restricted" not in waiting  # no reconnect by itself
    assert "CONNECTION LOST" not in t.text and "Connecting to the next msc address" not in t.text, t.text
    assert t.text.count("N 0 E201") == 1, t.text


def test_a_script_closed_for_want_of_a_logon_says_why_and_does_not_fail_over(impatient):
    """A script whose logon is never sent in time (a --password prompt nobody answers) ends with
    the reason msc gave, exit 4 — another node would do the same."""
    port, _ = impatient
    t = Tty("--connect", f"127.0.0.1:{port},127.0.0.1:{free_port()}", "--header", "ICS1", "--user", "TS0001",
            "--send", "QV.CA0130000.LIC/NOBODY")
    try:
        t.expect("Password: ")
        t.expect(r"Connection to msc ended \(no one was logged on\): E201 NO LOGON WITHIN 2 S\. Disconnected from msc\.",
                 timeout=30)
        assert t.wait() == 4, t.text
    finally:
        t.close()
    assert "Connecting to the next msc address" not in t.text


# -- --expect waits for its own answers ----------------------------------------------------------

def _outputs(stdout: str) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^M (\d+) (.*)$", stdout, re.M)]


EXPECT_CASES = [
    # id, queued before the run (older answers, AMs), what the run sends, --expect, also during the run
    ("older-answer-queued", ["answer"], ["QV.CA0130000.LIC/NEW1"], 1, False),
    ("older-ams-queued", ["am", "am"], ["QV.CA0130000.LIC/NEW2"], 1, False),
    ("answer-and-ams-queued", ["answer", "am", "answer"], ["QV.CA0130000.LIC/NEW3"], 1, False),
    ("three-sends", ["am", "answer"], ["QV.CA0130000.LIC/N4A", "QV.CA0130000.LIC/N4B", "QV.CA0130000.LIC/N4C"], 3, False),
    ("unsolicited-during-wait", [], ["QV.CA0130000.LIC/NEW5"], 1, True),
    ("own-ref-kept", ["answer"], ["ICS1MINE.QV.CA0130000.LIC/NEW6"], 1, False),
    ("bare-header-gets-ref", ["answer"], ["ICS1.QV.CA0130000.LIC/NEW7"], 1, False),
    ("fewer-expected-than-sent", ["am"], ["QV.CA0130000.LIC/N8A", "QV.CA0130000.LIC/N8B"], 1, False),
]


@pytest.mark.parametrize("name,queued,sends,expect,during", EXPECT_CASES, ids=[c[0] for c in EXPECT_CASES])
def test_expect_counts_only_answers_to_its_own_messages(tmp_path, procs, name, queued, sends, expect, during):
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport)
    start_stub(procs, tmp_path, up, "--latency-ms", "400")
    start_serve(procs, tmp_path, cfg)
    runs = []
    # Queue outputs for ICS1 while no one is logged on there: an earlier script's answer that came
    # after it had gone (expect 0), and administrative messages from ICS2.
    waiting = 0
    for i, what in enumerate(queued):
        if what == "answer":
            r = scripted(port, f"QV.CA0130000.LIC/OLD{i}")
            assert r.returncode == 0, r.stderr
            runs.append(r.stdout)
            waiting -= len(_outputs(r.stdout))  # what it printed before it left is delivered
        else:
            r = scripted(port, f"AM.CA0130000.ICS1.TXT OLDER NOTICE {i}", user="TS0002", header="ICS2")
            assert r.returncode == 0, r.stderr
        waiting += 1
        _wait_queued(mport, waiting)
    am_sender = None
    if during:
        # Unsolicited traffic while the run waits: an AM sent from ICS2 during the upstream's 400 ms.
        am_sender = subprocess.Popen([*MSC, "terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS2",
                                      "--user", "TS0002", "--password-stdin", "--send",
                                      "AM.CA0130000.ICS1.TXT DURING THE WAIT"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = scripted(port, *sends, expect=expect)
    assert r.returncode == 0, r.stdout + r.stderr
    outs = _outputs(r.stdout)
    own = [text for _, text in outs if re.search(r"LIC/(NEW|N\d[A-C])", text)]
    assert len(own) >= expect, r.stdout
    # The run ended on its own answer, not on an older output.
    assert re.search(r"LIC/(NEW|N\d[A-C])", outs[-1][1]), r.stdout
    for text in own:
        head = text.split(".", 1)[0]
        assert re.fullmatch(r"ICS1[A-Z0-9]{1,6}", head), head  # every message had its own reference
    if name == "own-ref-kept":
        assert own[0].startswith("ICS1MINE.QV.")
    if during:
        am_sender.communicate(PASSWORD + "\n", timeout=30)
    # Everything printed was acknowledged (never printed again); nothing was lost: a last run
    # gets exactly what the earlier ones did not print, and the OSNs of all runs are 1..n once.
    runs.append(r.stdout)
    last = scripted(port, "QV.CA0130000.LIC/LAST9", expect=1)
    assert last.returncode == 0, last.stdout + last.stderr
    runs.append(last.stdout)
    osns = [osn for out in runs for osn, _ in _outputs(out)]
    assert sorted(osns) == list(range(1, len(osns) + 1)), runs
    total = len(queued) + len(sends) + (1 if during else 0) + 1
    assert len(osns) == total, runs


def _wait_queued(mport: int, n: int) -> None:
    """Wait until ``n`` outputs wait in msc's queues (the earlier answers came back upstream)."""
    from tests.e2e.test_operations import get, metric

    deadline = time.monotonic() + HANG_S
    while True:
        _, text = get(mport, "/metrics")
        if metric(text, "msc_delivery_queued") == n:
            return
        assert time.monotonic() < deadline, text
        time.sleep(0.05)


def test_expect_with_every_message_refused_exits_1_at_once(tmp_path, procs):
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    start_stub(procs, tmp_path, up)
    start_serve(procs, tmp_path, cfg)
    # --timeout 600: had it waited for an answer that cannot come, run() (60 s) would fail.
    r = scripted(port, "ZZ.CA0130000.NAM/X", "QH.CA0130000.NAM/X", expect=1, timeout=600)
    assert r.returncode == 1
    assert "no message was accepted" in r.stderr


@pytest.mark.parametrize("user", ["IN0001", "AD0001", "PR0001", "EX0001", "EC0001", "NOSUCH"])
def test_a_refused_logon_shows_only_e202_whatever_the_account(tmp_path, procs, user):
    """Issue 12/13 trial item 4: ``msc terminal --user INV001`` with the right password showed
    ``E205 ROLE INVESTIGATOR MAY NOT OPERATE A TERMINAL``. Every refusal shows E202 alone."""
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    start_stub(procs, tmp_path, up)
    start_serve(procs, tmp_path, cfg)
    r = scripted(port, "QV.CA0130000.LIC/7ABC123", user=user, expect=1, timeout=30)
    assert r.returncode != 0
    shown = r.stdout + r.stderr
    assert "E202" in shown, shown
    for leak in ("E205", "E206", "E207", "ROLE", "INVESTIGATOR", "AGENCY", "CERTIF", "EXPIRED", "UNKNOWN"):
        assert leak not in shown.upper(), shown


# -- an interactive dialog piped in by a script (no terminal) ----------------------------------------

LOGON_LINES = ["", "TS0001", "", PASSWORD]  # the banner's Enter, User ID, one-time password, password


def piped(connect: str) -> subprocess.Popen:
    """`msc terminal` without --user/--send, its dialog written to a pipe by a script."""
    return subprocess.Popen([*MSC, "terminal", "--connect", connect, "--header", "ICS1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write(p: subprocess.Popen, lines: list[str]) -> None:
    p.stdin.write("".join(line + "\n" for line in lines))
    p.stdin.flush()


def until_logged_on(p: subprocess.Popen) -> str:
    """Read the client's output up to its logon (stdout: ``Logged on as …``)."""
    out = ""
    while "Logged on as ICS1." not in out:
        line = p.stdout.readline()
        assert line, out + p.stderr.read()
        out += line
    return out


def finish(p: subprocess.Popen, timeout: float = HANG_S) -> tuple[int, str, str]:
    """The client's exit status and what it printed, once it ends by itself (the pipe left open:
    a client that waits for another line fails here, it is not ended by an end of input)."""
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"the client waited for more input; stderr:\n{err}") from None
    if p.stdin is not None and p.stdin.closed:
        p.stdin = None  # (closed by the test: nothing more to write)
    out, err = p.communicate()
    return p.returncode, out, err


def test_a_piped_dialog_whose_logon_is_refused_is_not_asked_again(tmp_path, procs):
    """The lines after a refused logon were the script's messages: they were taken as the next
    User ID, one-time password and password. Now the client exits 3, as a --user script does."""
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port())
    start_serve(procs, tmp_path, cfg)
    p = piped(f"127.0.0.1:{port}")
    try:
        write(p, ["", "TS0001", "", "WRONG-PASSWORD", "QV.CA0130000.LIC/NEXT1", "TS0001", "", PASSWORD,
                  "QV.CA0130000.LIC/NEXT2"])
        status, out, err = finish(p)
    finally:
        if p.poll() is None:
            p.kill()
    assert status == 3, err
    assert ("Logon refused. Not asking again: the input is not a terminal: its next lines were written for the "
            "session refused, and are not taken as another logon's answers") in err, err
    assert "Logged on" not in out
    from tests.e2e.test_answers_e2e import search

    assert [r["kind"] for r in search(cfg, "--code", "E202")] == ["SESSION", "REJECTED"]  # one refusal
    assert not [r for r in search(cfg, "--user", "TS0001") if "LOGON OK" in (r["text"] or "")]
    assert not [r for r in search(cfg, "--mke", "QV")]


PIPED_ENDINGS = [
    # id, config overrides, action, the reason msc gives (it keeps the connection)
    ("idle", {"idle_logoff_s": 2}, _idle, "IDLE"),  # a script that waits longer than idle_logoff_s
    ("user-disabled", {}, _user_disabled, "USER DISABLED"),
]


@pytest.mark.parametrize("name,overrides,action,reason", PIPED_ENDINGS, ids=[e[0] for e in PIPED_ENDINGS])
def test_a_piped_dialog_ended_by_msc_is_not_logged_on_again(tmp_path, procs, name, overrides, action, reason):
    """msc ends the session and keeps the connection: at a terminal the next operator logs on at
    the User ID prompt; a script's next lines (its messages) would become the User ID and
    password. The client exits 4 and says why."""
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port(), **overrides)
    serve = start_serve(procs, tmp_path, cfg)
    p = piped(f"127.0.0.1:{port}")
    try:
        write(p, LOGON_LINES)
        until_logged_on(p)
        action({"serve": serve, "cfg": cfg, "port": port})
        status, _out, err = finish(p)
    finally:
        if p.poll() is None:
            p.kill()
    assert status == 4, err
    assert (f"Session ended by msc: {reason}. Not logging on again: the input is not a terminal: its next lines "
            "were written for the session that ended") in err, err


@pytest.mark.parametrize("second", [False, True], ids=["one-address", "two-addresses"])
def test_a_piped_dialog_of_a_node_that_shuts_down_exits_4(tmp_path, procs, second):
    """Newcomer trial F2: the dialog written into a shell pipeline through a fifo — the banner's
    Enter, the logon, a message answered — then the only node SIGTERMed (SYS LOGOFF.SHUTDOWN):
    the client ends with status 4 ("the session was ended by msc"), never 0, as OPERATIONS.md
    says; with a second address it does not connect to it. The status is the client's own, as
    the shell reports the pipeline's (its last command)."""
    up, port = free_port(), free_port()
    start_stub(procs, tmp_path, up)
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    serve = start_serve(procs, tmp_path, cfg)
    fifo = tmp_path / "dialog"
    os.mkfifo(fifo)
    connect = f"127.0.0.1:{port}" + (f",127.0.0.1:{free_port()}" if second else "")
    script = ("(printf '\\n%s\\n\\n%s\\nQV.CA0130000.LIC/DURING1\\n' TS0001 \"$PW\"; cat \"$FIFO\") | "
              "\"$PY\" -m msc terminal --connect \"$CONNECT\" --header ICS1")
    p = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PW": PASSWORD, "FIFO": str(fifo), "CONNECT": connect,
                              "PY": MSC[0]})
    writer = open(fifo, "w")  # the rest of the dialog, not written yet: the pipe stays open
    try:
        out = ""
        while not re.search(r"^M \d+ ICS1\w+\.QV\.", out, re.M):  # logged on, the message answered
            line = p.stdout.readline()
            assert line, out + p.stderr.read()
            out += line
        serve.stop(signal.SIGTERM)
        err = ""
        while "Session ended: SHUTDOWN" not in err:  # the client has ended; its pipeline ends with cat
            line = p.stderr.readline()
            assert line, err
            err += line
        writer.close()
        status, _out, rest = finish(p)
        err += rest
    finally:
        if not writer.closed:
            writer.close()
        if p.poll() is None:
            p.kill()
    assert status == 4, err
    said = "Not connecting again: the input is not a terminal" if second else "Disconnected from msc."
    assert f"Session ended: SHUTDOWN. {said}" in err, err
    assert err.count("Connected to msc at") <= 1, err  # (said with two addresses): the second not tried


def test_a_piped_dialog_closed_for_want_of_a_logon_does_not_wait_for_enter(impatient):
    """E201 at a console waits for Enter; from a pipe that Enter would be the script's next line."""
    port, _mport = impatient
    p = piped(f"127.0.0.1:{port},127.0.0.1:{free_port()}")
    try:
        status, _out, err = finish(p)  # nothing written: the script is slower than logon_timeout_s
    finally:
        if p.poll() is None:
            p.kill()
    assert status == 4, err
    assert re.search(r"Connection to msc ended \(no one was logged on\): E201 NO LOGON WITHIN \d+ S\. "
                     r"Not connecting again: the input is not a terminal", err), err
    assert "Press Enter to connect again" not in err


def test_a_piped_dialog_may_log_off_and_on_again_itself(tmp_path, procs):
    """What the script wrote for itself still works: its own LOGOFF, then the next logon."""
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port())
    start_serve(procs, tmp_path, cfg)
    p = piped(f"127.0.0.1:{port}")
    try:
        write(p, [*LOGON_LINES, "LOGOFF", "TS0002", "", PASSWORD, "LOGOFF"])
        p.stdin.close()
        status, out, err = finish(p)
    finally:
        if p.poll() is None:
            p.kill()
    assert status == 0, err
    assert re.findall(r"\bA \d+ MNE/ICS1\.USR/(\w+)$", out, re.M) == ["TS0001", "TS0002"], out
    assert err.count("Logged off.") == 2, err
