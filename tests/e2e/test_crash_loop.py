"""kill -9 `msc serve` at random points under load, restart, repeat; then prove nothing was lost.

`make test` runs 3 iterations, `make crash` 20 (MSC_CRASH_ITERATIONS). After the last restart:

* every message whose ``A`` a client received is in the journal (its RECEIVED record);
* ``msc journal verify`` passes;
* no queued output was lost: every output the journal created was delivered once the terminals
  came back, and every request accepted got an answer or a notice (MSC.Exxx);
* the figures (iterations, messages, outputs, lost) are printed.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
import urllib.request

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.journal.verify import verify
from msc.keyring import KeyRing
from msc.protocol.message import parse_notice
from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import Proc, wait_for, wait_port
from tests.waiting import HANG_S
from tests.wire import WireClient

ITERATIONS = int(os.environ.get("MSC_CRASH_ITERATIONS", "3"))
pytestmark = pytest.mark.timeout(120 + 30 * ITERATIONS)
STATIONS = (("ICS1", "TS0001"), ("ICS2", "TS0002"))


async def load_until(port: int, stop: asyncio.Event, acked: list[str], answers: dict[str, str], tag: str) -> None:
    async def one(station: str, user: str) -> None:
        try:
            c = await WireClient.connect(port)
            await c.banner()
            if (await c.logon(station, user, PASSWORD)).type != "A":
                return
        except (TimeoutError, OSError, AssertionError):
            return

        async def drain():
            while True:
                o = await c.outputs.get()
                answers[o.text.split(".", 1)[0]] = o.text

        d = asyncio.create_task(drain())
        i = 0
        while not stop.is_set():
            hdr = f"{station}{tag}{i:04d}"[:10]
            try:
                f = await c.send(f"{hdr}.QV.CA0130000.LIC/{tag}{i}")
            except (TimeoutError, OSError, ConnectionError):
                break
            if f.type == "A":
                acked.append(f"{hdr}.QV.CA0130000.LIC/{tag}{i}")
            i += 1
            await asyncio.sleep(0.002)
        d.cancel()

    await asyncio.gather(*(one(s, u) for s, u in STATIONS))


def queued(mport: int) -> float:
    """The running switch's outputs waiting for delivery (msc_delivery_queued), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=HANG_S) as r:
        text = r.read().decode()
    m = re.search(r"^msc_delivery_queued (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def delivered_records(mport: int) -> float:
    """The running switch's committed DELIVERED records, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=HANG_S) as r:
        text = r.read().decode()
    m = re.search(r'^msc_journal_records_total\{kind="DELIVERED"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_random_kill_9_loop_loses_nothing(tmp_path, procs):
    rnd = random.Random(int(os.environ.get("MSC_CRASH_SEED", "20261125")))
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport, rate_limit=100000)
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--latency-ms", "20",
                      log=tmp_path / "stub.err"))
    wait_port(up)
    ready = tmp_path / "ready"
    acked: list[str] = []
    answers: dict[str, str] = {}

    def start() -> Proc:
        ready.unlink(missing_ok=True)
        p = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "serve.err")
        procs.append(p)
        wait_for(ready, p)
        return p

    for it in range(ITERATIONS):
        serve = start()

        async def run_and_kill(it: int, serve: Proc) -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(load_until(port, stop, acked, answers, f"K{it:02d}"))
            await asyncio.sleep(rnd.uniform(0.3, 1.5))
            serve.p.send_signal(signal.SIGKILL)  # anywhere: mid-commit, mid-delivery, mid-snapshot
            await asyncio.to_thread(serve.p.wait)
            stop.set()
            await asyncio.wait_for(task, 30)

        asyncio.run(run_and_kill(it, serve))

    # Last start: the terminals come back and take what waits for them; then a clean stop.
    serve = start()

    async def collect():
        clients = []
        for station, user in STATIONS:
            c = await WireClient.connect(port)
            await c.banner()
            assert (await c.logon(station, user, PASSWORD)).type == "A"
            clients.append(c)
        deadline = time.monotonic() + HANG_S
        received = 0
        while time.monotonic() < deadline:
            for c in clients:
                while not c.outputs.empty():
                    o = c.outputs.get_nowait()
                    received += 1
                    answers[o.text.split(".", 1)[0]] = o.text
            # Every request has its answer (some received before a kill) and nothing waits for the
            # terminals any more: an output received before a kill whose DELIVERED record was lost
            # is sent again after the restart, and must be taken (acknowledged) before the stop —
            # otherwise it stays queued, which the check below would count as lost.
            if all(a.split(".", 1)[0] in answers for a in acked) and await asyncio.to_thread(queued, mport) == 0:
                break
            await asyncio.sleep(0.1)
        # Every output received here was acknowledged: wait for its DELIVERED record to commit
        # (this process counts only its own), so the clean stop below does not race the ACKs.
        while await asyncio.to_thread(delivered_records, mport) < received and time.monotonic() < deadline + 10:
            await asyncio.sleep(0.05)
        for c in clients:
            c.close()

    asyncio.run(collect())
    assert serve.stop() == 0

    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    received = {r.text for r in search(s.journal_dir, ring, Query(kind="RECEIVED")) if r.peer in ("ICS1", "ICS2")}
    missing = [a for a in acked if a not in received]
    outputs = {(r.mnemonic, r.osn) for r in search(s.journal_dir, ring, Query(kind="RECEIVED")) if r.osn is not None}
    delivered = {(r.mnemonic, r.osn) for r in search(s.journal_dir, ring, Query(kind="DELIVERED"))}
    undelivered = {(r.mnemonic, r.osn) for r in search(s.journal_dir, ring, Query(kind="UNDELIVERED"))}
    lost_outputs = outputs - delivered - undelivered
    no_fate = [a for a in acked if a.split(".", 1)[0] not in answers]
    notices = sum(1 for t in answers.values() if parse_notice(t))  # the switch's one reader
    res = verify(s.journal_dir, ring, name=s.config.switch.name)
    print(f"\ncrash loop: {ITERATIONS} kill -9 iterations, {len(acked)} messages acknowledged, "
          f"{len(outputs)} outputs created, {len(delivered)} delivered, {notices} answered by a notice; "
          f"lost records {len(missing)}, lost outputs {len(lost_outputs)}, requests without a fate {len(no_fate)}; "
          f"verify {'ok' if res.ok else res.reason} ({res.records} records)")
    assert len(acked) > 0
    assert missing == []
    assert res.ok, res.problems
    assert lost_outputs == set(), sorted(lost_outputs)[:10]
    assert no_fate == [], no_fate[:10]
