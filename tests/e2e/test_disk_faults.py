"""Disk faults under load, injected with libfiu (Debian fiu-utils, LD_PRELOAD via fiu-run).

While fsync/fdatasync fail with EIO, and then while pwrite fails with ENOSPC, the switch must
answer E501, turn /readyz 503, count msc_journal_errors_total, forward nothing it has not
recorded — and serve again as soon as the fault clears.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.journal.verify import verify
from msc.keyring import KeyRing
from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import Proc, wait_for, wait_port
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("fiu-run") is None or shutil.which("fiu-ctrl") is None,
                                 reason="libfiu tools not installed (make test installs Debian's fiu-utils)")]

FAULTS = {
    "EIO on fsync": ["posix/io/sync/fsync", "posix/io/sync/fdatasync"],
    "ENOSPC on write": ["posix/io/rw/pwrite"],
}
ERRNO = {"EIO on fsync": 5, "ENOSPC on write": 28}


def http(port: int, path: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=HANG_S) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if path == "/readyz" else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def tree(pid: int) -> list[int]:
    """The process and its descendants (the journal writer runs in a child of msc serve)."""
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            for child in open(f"/proc/{pid}/task/{tid}/children").read().split():
                out += tree(int(child))
    except FileNotFoundError:
        pass
    return out


def fiu(pid: int, action: str, points: list[str], errno: int = 5) -> None:
    args = ["fiu-ctrl"]
    for p in points:
        args += ["-c", f"enable name={p},failinfo={errno}" if action == "enable" else f"disable name={p}"]
    subprocess.run([*args, *map(str, tree(pid))], check=True, timeout=10)


async def poll(read, ok, *, thread: bool = False):
    """``read()`` (in a worker thread if ``thread``) until ``ok`` of it holds; the last value once
    HANG_S has passed (the caller's assertions then say what was seen)."""
    deadline = time.monotonic() + HANG_S
    while True:
        value = await asyncio.to_thread(read) if thread else read()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def test_disk_faults_fail_closed_and_service_resumes(tmp_path, procs):
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport, rate_limit=100000)
    stub_log = tmp_path / "stub.log"
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--log", str(stub_log), log=tmp_path / "stub.err"))
    wait_port(up)
    ready = tmp_path / "ready"
    serve = subprocess.Popen(["fiu-run", "-x", sys.executable, "-m", "msc", "serve", "--config", str(cfg),
                              "--ready-file", str(ready)], stderr=open(tmp_path / "serve.err", "w"))

    class P:  # so the procs fixture stops it
        def __init__(self, p):
            self.p = p
            self.log = tmp_path / "serve.err"

        def stop(self, sig=signal.SIGTERM, timeout=15):
            if self.p.poll() is None:
                self.p.send_signal(sig)
            return self.p.wait(timeout)

    procs.append(P(serve))
    wait_for(ready, procs[-1])
    outcome: dict[str, dict] = {}

    async def scenario():
        clients = []
        for header, user in (("ICS1", "TS0001"), ("ICS2", "TS0002")):
            c = await WireClient.connect(port)
            await c.banner()
            assert (await c.logon(header, user, PASSWORD)).type == "A"
            clients.append((c, header))
        counts = {"A": 0, "E501": 0, "other": 0}
        stop = asyncio.Event()

        async def load(c, header):
            i = 0
            while not stop.is_set():
                try:
                    f = await c.send(f"{header}L{i}.QV.CA0130000.LIC/D{header}{i}")
                except TimeoutError:
                    counts["other"] += 1
                    continue
                counts["A" if f.type == "A" else ("E501" if f.code == "E501" else "other")] += 1
                i += 1
                await asyncio.sleep(0.003)

        tasks = [asyncio.create_task(load(c, h)) for c, h in clients]
        await poll(lambda: counts["A"], lambda n: n > 0)

        async def journal_errors() -> float:
            _s, text = await asyncio.to_thread(http, mport, "/metrics")
            return float(next(ln for ln in text.splitlines() if ln.startswith("msc_journal_errors_total ")).split()[1])

        for name, points in FAULTS.items():
            before = dict(counts)
            errors0 = await journal_errors()
            await asyncio.to_thread(fiu, serve.pid, "enable", points, ERRNO[name])
            # While the disk fails: requests are refused E501 and /readyz turns 503 — waited for
            # (a condition, bounded for a hang), not given a second that a loaded machine may need.
            await poll(lambda b=before: counts["E501"] - b["E501"], lambda n: n > 0)
            status, body = await poll(lambda: http(mport, "/readyz"), lambda r: r[0] == 503, thread=True)
            errors1 = await journal_errors()
            during = {k: counts[k] - before[k] for k in counts}
            await asyncio.to_thread(fiu, serve.pid, "disable", points)
            # ... and as soon as it clears, ready again and serving.
            after_status, _ = await poll(lambda: http(mport, "/readyz"), lambda r: r[0] == 200, thread=True)
            resumed = counts["A"]
            await poll(lambda r=resumed: counts["A"] - r, lambda n: n > 0)
            outcome[name] = {"readyz_during": status, "reason": body.get("reasons", {}).get("journal") if isinstance(body, dict) else None,
                             "errors_added": errors1 - errors0, "during": during, "readyz_after": after_status,
                             "accepted_after": counts["A"] - resumed}
        stop.set()
        await asyncio.gather(*tasks)
        for c, _h in clients:
            c.close()
        return counts

    counts = asyncio.run(scenario())
    print(f"\n{json.dumps(outcome, indent=1)}\ntotals {counts}")
    for name, o in outcome.items():
        assert o["readyz_during"] == 503, (name, o)
        assert o["errors_added"] >= 1, (name, o)
        assert o["during"]["E501"] > 0, (name, o)
        assert o["readyz_after"] == 200, (name, o)
        assert o["accepted_after"] > 0, (name, o)
    assert counts["other"] == 0
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    # Nothing was forwarded that the journal does not hold, and the journal is intact.
    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    forwarded = {r.text for r in search(s.journal_dir, ring, Query(kind="FORWARDED"))}
    sent = stub_log.read_text().splitlines()
    assert sent and set(sent) <= forwarded, set(sent) - forwarded
    res = verify(s.journal_dir, ring, name=s.config.switch.name)
    assert res.ok, res.problems
