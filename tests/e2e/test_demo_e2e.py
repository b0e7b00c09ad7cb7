"""`msc demo` (`make run`) beside other demos and when its processes come and go (newcomer trial
of issues 12/13): a second demo or `msc serve` on the same directory refuses in one line and
leaves the running one alone; taken ports are named before anything starts (the switch never
dials another user's stub); a stub that dies is reported with the command that restarts it and
the switch keeps running."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import run, wait_port
from tests.e2e.test_msc_command import _demo_port_offset

pytestmark = pytest.mark.timeout(180)


def _until(pred, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Demo:
    def __init__(self, d: Path, offset: int) -> None:
        self.dir, self.offset = d, offset
        self.err = d.parent / f"{d.name}.demo.err"
        self.out = d.parent / f"{d.name}.demo.out"
        self.p = subprocess.Popen([sys.executable, "-m", "msc", "demo", "--dir", str(d), "--port-offset", str(offset)],
                                  stdout=open(self.out, "w"), stderr=open(self.err, "w"), start_new_session=True)

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self) -> int:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
        return self.p.wait(timeout=60)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "var"
    demo = Demo(d, _demo_port_offset())
    try:
        _until(lambda: "Press Ctrl-C to stop." in demo.out.read_text() or demo.p.poll() is not None, 90, "the demo")
        assert demo.p.poll() is None, demo.stderr()
        assert (d / ".demo.lock").read_text().strip() == str(demo.p.pid)  # held while it runs
        yield demo
    finally:
        assert demo.stop() == 0, demo.stderr()
    assert "Traceback" not in demo.stderr()
    assert not (d / ".demo.lock").exists()  # gone with the demo: a copy of DIR carries no lock


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def _running_files(demo: Demo) -> dict:
    return {f: f.stat().st_mtime_ns for f in (demo.dir / ".ready", demo.dir / "data" / "control.sock")}


def test_a_second_demo_or_serve_on_the_same_directory_leaves_the_running_one_alone(demo):
    before = _running_files(demo)
    r = run("demo", "--dir", str(demo.dir), timeout=60)
    assert r.returncode == 2 and "a demo is already running in" in _one_line(r)
    r = run("serve", "--config", str(demo.dir / "msc.toml"), timeout=60)
    line = _one_line(r)
    assert r.returncode == 2 and line.startswith("error: msc serve did not start:")
    # (refused by the node's data_dir/serve.lock, first: before it opened anything of the running one's)
    assert "another msc serve of this node is running (process " in line
    assert f"holding {demo.dir / 'data' / 'serve.lock'}" in line, line
    assert _running_files(demo) == before  # the ready file and the control socket are the first demo's
    assert demo.p.poll() is None
    wait_port(7400 + demo.offset)  # ... and it still listens


@pytest.mark.parametrize("taken", [(7501, "primary CLETS stub"), (7511, "secondary CLETS stub"),
                                   (7601, "primary CLETS stub's control port"), (7400, "terminal listener 1"),
                                   (9400, "metrics endpoint")])
def test_a_taken_port_is_named_before_anything_starts(tmp_path, taken):
    port, what = taken
    offset = _demo_port_offset()
    d = tmp_path / "var"
    with socket.socket() as sock:  # another user's program on one of the demo's ports
        sock.bind(("127.0.0.1", port + offset))
        sock.listen()
        r = run("demo", "--dir", str(d), "--port-offset", str(offset))
        line = _one_line(r)
        assert r.returncode == 2 and f"port {port + offset} ({what}" in line and "in use" in line
        # Its directory was given as an absolute path: the msc demo line that moves it, that path kept
        # (newcomer trial F6: make run's line, relative to the repository, was given).
        assert f"run this demo on other ports: msc demo --dir {d} --port-offset 1000" in line and "make run" not in line
        assert not (d / "msc.toml").exists() and not (d / "logs").exists()  # nothing made, nothing started
        # An existing demo directory keeps its ports: it says to use another directory.
        assert run("demo", "--dir", str(d), "--port-offset", str(offset), "--init-only").returncode == 0
        assert not (d / ".demo.lock").exists()  # --init-only leaves no run lock (newcomer8: `cp -a a b` copied it)
        r = run("demo", "--dir", str(d))
        line = _one_line(r)
        assert r.returncode == 2 and f"port {port + offset}" in line and f"change that port in {d / 'msc.toml'}" in line
        assert f"msc demo --dir {d}2 --template {d / 'msc.toml'} --port-offset 1000" in line and "make run" not in line
        assert not (d / "logs").exists()
        assert not (d / ".demo.lock").exists()  # nor a refused run


def test_a_stub_that_cannot_listen_says_why_in_one_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        r = run("stub", "--role", "clets", "--listen", f"127.0.0.1:{port}")
        line = _one_line(r)
        assert r.returncode == 2 and f"127.0.0.1:{port}" in line and "in use" in line


def _pid_listening(port: int) -> int:
    """The pid of the `msc stub` whose --listen is 127.0.0.1:port (from /proc)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"stub" in argv and f"127.0.0.1:{port}".encode() in argv and b"--listen" in argv:
                return int(d.name)
    raise AssertionError(f"no stub on {port}")


def test_killing_a_stub_keeps_the_switch_and_says_how_to_restart_it(demo):
    primary = 7501 + demo.offset
    os.kill(_pid_listening(primary), signal.SIGKILL)
    text = _until(lambda: "Start the stub again with:" in demo.stderr() and demo.stderr(), 30, "the demo's report")
    assert f"the primary CLETS stub (127.0.0.1:{primary}) exited (killed by SIGKILL)" in text
    assert "the switch keeps running" in text and demo.p.poll() is None
    # The switch's log says why the link went down (it was "failed": null).
    import json

    def down():
        for ln in (demo.dir / "logs" / "msc.log").read_text().splitlines():
            if '"upstream.down"' in ln:
                return json.loads(ln)
    event = _until(down, 30, "upstream.down")
    assert event["failed"] and event["failed"] != "None", event
    command = text.split("Start the stub again with:\n", 1)[1].splitlines()[0].strip()
    # The printed command starts it again, as the operator would paste it.
    restarted = subprocess.Popen(command, shell=True, start_new_session=True)
    try:
        wait_port(primary)
        assert demo.p.poll() is None
        # The switch still serves terminals throughout.
        pw = next(ln.split("password: ")[1].strip() for ln in demo.out.read_text().splitlines()
                  if ln.strip().startswith("JD1234"))
        r = run("terminal", "--connect", f"127.0.0.1:{7400 + demo.offset}", "--header", "ICS1", "--user", "JD1234",
                "--password-stdin", "--send", "QV.CA0130000.LIC/7ABC123", "--expect", "1", "--timeout", "60",
                input=pw + "\n", timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        os.killpg(restarted.pid, signal.SIGTERM)
        restarted.wait(timeout=30)
    assert shlex.split(command)[1:4] == ["-m", "msc", "stub"]


def test_the_stub_control_command_pushes_traffic(demo):
    r = run("stub-control", f"127.0.0.1:{7611 + demo.offset}", "/hold off", "/resend 2")
    assert r.returncode == 0 and r.stdout.splitlines() == ["OK", "OK"], r.stderr
    r = run("stub-control", f"127.0.0.1:{7611 + demo.offset}", "/no-such-command")
    assert r.returncode == 1 and r.stdout.startswith("ERR")
    r = run("stub-control", "127.0.0.1:1", "/hold off")
    assert r.returncode == 1 and _one_line(r).startswith("error: cannot reach")
