"""Stopping must not hurt the journal (issue 13 item 5).

`msc serve` runs under light load from two terminals; then the signals a user or a service
manager sends: Ctrl-C (SIGINT to the foreground process group), systemd's default
`KillMode=control-group` (SIGTERM to every process of the service at once), and the same with
SIGINT. Each time: the switch exits 0, its journal writer process is gone, the log has no
traceback and no failed commit, the journal ends with the clean-stop record, and every message
that was acknowledged is in the journal exactly once. And after `kill -9` of the switch its
writer leaves at once, so a restarted switch can take the journal.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.journal.verify import verify
from msc.keyring import KeyRing
from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import MSC, start_stub
from tests.waiting import HANG_S, START_S
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(120)


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def writer_of(pid: int) -> int:
    """The journal writer process among the switch's children (there is also the background
    verifier)."""
    found = [c for c in children(pid) if b"msc.journal.writerproc" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(found) == 1, found
    return found[0]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = HANG_S) -> float:
    t0 = time.monotonic()
    while alive(pid):
        assert time.monotonic() - t0 < timeout, f"process {pid} still running"
        time.sleep(0.005)
    return time.monotonic() - t0


def start_serve_own_group(tmp_path: Path, cfg: Path, log: str = "serve.err") -> subprocess.Popen:
    """`msc serve` as the leader of its own process group (as a shell's job or a service is)."""
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    p = subprocess.Popen([*MSC, "serve", "--config", str(cfg), "--ready-file", str(ready)],
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path / log, "w"), start_new_session=True)
    deadline = time.monotonic() + START_S
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < deadline, (tmp_path / log).read_text()
        time.sleep(0.05)
    return p


async def light_load(port: int, acked: list[str], stop: asyncio.Event) -> None:
    async def one(station: str, user: str) -> None:
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon(station, user, PASSWORD)).type == "A"
        k = 0
        while not stop.is_set():
            text = f"{station}S{k}.QV.CA0130000.LIC/{station}X{k}"
            k += 1
            try:
                f = await c.send(text)
            except (TimeoutError, ConnectionError, OSError):
                return
            if f.type == "A":
                acked.append(text)
            await asyncio.sleep(0.01)  # light load: about 50 messages a second per terminal

    await asyncio.gather(one("ICS1", "TS0001"), one("ICS2", "TS0002"))


def ctrl_c(serve: subprocess.Popen, writer: int) -> None:
    os.killpg(serve.pid, signal.SIGINT)  # what the terminal does: the whole foreground group


def control_group(sig):
    def send(serve: subprocess.Popen, writer: int) -> None:
        # systemd's default KillMode=control-group: every process of the service, at once.
        for pid in (serve.pid, writer):
            os.kill(pid, sig)
    return send


def group_term(serve: subprocess.Popen, writer: int) -> None:
    os.killpg(serve.pid, signal.SIGTERM)


STOPS = [
    ("ctrl-c", ctrl_c),
    ("sigterm-every-process", control_group(signal.SIGTERM)),
    ("sigint-every-process", control_group(signal.SIGINT)),
    ("sigterm-process-group", group_term),
    ("sigterm-then-sigint", lambda s, w: (control_group(signal.SIGTERM)(s, w), control_group(signal.SIGINT)(s, w))),
]


@pytest.mark.parametrize("name,stop", STOPS, ids=[s[0] for s in STOPS])
def test_group_signals_under_light_load_lose_nothing(tmp_path, procs, name, stop):
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    start_stub(procs, tmp_path, up)
    serve = start_serve_own_group(tmp_path, cfg)
    try:
        writers = [writer_of(serve.pid)]
        acked: list[str] = []

        async def scenario():
            halt = asyncio.Event()
            task = asyncio.create_task(light_load(port, acked, halt))
            while len(acked) < 60:
                await asyncio.sleep(0.01)
            stop(serve, writers[0])
            await asyncio.to_thread(serve.wait, 60)
            halt.set()
            await asyncio.wait_for(task, HANG_S)

        asyncio.run(scenario())
        assert serve.returncode == 0
        wait_gone(writers[0])
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    log = (tmp_path / "serve.err").read_text()
    assert "Traceback" not in log and "commit_failed" not in log, log
    assert '"event": "switch.stopped"' in log
    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    records = list(search(s.journal_dir, ring, Query()))
    # The clean-stop record is the last thing the switch wrote.
    assert records[-1].kind == "ADMIN" and records[-1].text == "STOP TEST-MSC", records[-1]
    received = collections.Counter(r.text for r in records if r.kind == "RECEIVED")
    counts = collections.Counter(received[t] for t in acked)
    assert counts == {1: len(acked)}, "every acknowledged message in the journal exactly once"
    res = verify(s.journal_dir, ring, name=s.config.switch.name)
    assert res.ok, res.problems


def test_writer_leaves_at_once_when_the_switch_is_killed(tmp_path, procs, capsys):
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    start_stub(procs, tmp_path, up)
    serve = start_serve_own_group(tmp_path, cfg)
    writer = writer_of(serve.pid)
    acked: list[str] = []

    async def scenario():
        halt = asyncio.Event()
        task = asyncio.create_task(light_load(port, acked, halt))
        while len(acked) < 60:
            await asyncio.sleep(0.01)
        serve.send_signal(signal.SIGKILL)
        serve.wait()
        lived = await asyncio.to_thread(wait_gone, writer)
        halt.set()
        await asyncio.wait_for(task, HANG_S)
        return lived

    lived = asyncio.run(scenario())
    with capsys.disabled():
        print(f"\n  writer exited {lived * 1000:.0f} ms after kill -9 of the switch")
    # A restarted switch takes the journal at once; nothing acknowledged was lost.
    serve = start_serve_own_group(tmp_path, cfg, "serve2.err")
    os.killpg(serve.pid, signal.SIGTERM)
    assert serve.wait(60) == 0
    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    received = collections.Counter(r.text for r in search(s.journal_dir, ring, Query(kind="RECEIVED")))
    assert all(received[t] == 1 for t in acked)
    assert "Traceback" not in (tmp_path / "serve2.err").read_text()
