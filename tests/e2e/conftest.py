"""Helpers for running the real ``msc`` command as separate processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.waiting import START_S

MSC = [sys.executable, "-m", "msc"]


def run(*args: str, input: str | None = None, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*MSC, *args], input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd)


class Proc:
    def __init__(self, *args: str, log: Path) -> None:
        self.log = log
        self.p = subprocess.Popen([*MSC, *args], stdout=subprocess.DEVNULL, stderr=open(log, "w"))

    def stop(self, sig=signal.SIGTERM, timeout: float = START_S) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


def wait_for(path: Path, proc: Proc, timeout: float = START_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.p.poll() is not None:
            raise AssertionError(f"process exited early (status {proc.p.returncode}):\n{proc.log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}:\n{proc.log.read_text()}")
        time.sleep(0.05)


def wait_port(port: int, timeout: float = START_S) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


def start_stub(procs: list[Proc], tmp_path: Path, port: int, *extra: str) -> Proc:
    """A clets stub on ``port`` (``extra``: --seed, --latency-ms, --log …), listening when this returns."""
    stub = Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{port}", *extra, log=tmp_path / "stub.err")
    procs.append(stub)
    wait_port(port)
    return stub


def start_serve(procs: list[Proc], tmp_path: Path, cfg: Path, log: str = "serve.err") -> Proc:
    """`msc serve --config cfg`, ready (listeners bound) when this returns."""
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    serve = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / log)
    procs.append(serve)
    wait_for(ready, serve)
    return serve
