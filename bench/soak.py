#!/usr/bin/env python3
"""`make soak`: load with faults on a schedule; availability as the probes see it.

    .venv/bin/python bench/soak.py --minutes 30

* A supervisor loop keeps `msc serve` running (as systemd's Restart=always would) and the
  schedule kills it with SIGKILL every --kill-every seconds.
* The primary CLETS stub is killed every --upstream-every seconds and restored a minute later
  (the secondary carries the traffic meanwhile).
* SIGHUP (a configuration reload) every minute.
* Steady load: --terminals terminals in closed loop, reconnecting after every restart.
* A probe terminal sends one transaction per second; availability = answered probes / probes.
  Recovery time per fault = fault → the answer to the first probe sent after it that was answered
  (what an operator pressing Enter at the moment of the fault would wait).
* At the end: every message whose A a client received must be in the journal, and every
  output created must have been delivered once the terminals are back (lost must be 0).

Writes bench/results/soak-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import benchconfig  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.wire import WireClient  # noqa: E402

PY = sys.executable


class Supervisor:
    """Restarts `msc serve` whenever it exits, like systemd with Restart=always."""

    def __init__(self, cfg: Path, work: Path) -> None:
        self.cfg = cfg
        self.work = work
        self.proc: subprocess.Popen | None = None
        self.starts: list[float] = []
        self.ready_times: list[float] = []
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            ready = self.work / "ready"
            ready.unlink(missing_ok=True)
            t0 = time.monotonic()
            self.proc = subprocess.Popen([PY, "-m", "msc", "serve", "--config", str(self.cfg), "--ready-file", str(ready),
                                          "--log-level", "warning"], stderr=open(self.work / "serve.err", "a"))
            self.starts.append(time.time())
            while not ready.exists() and self.proc.poll() is None:
                await asyncio.sleep(0.01)
            if ready.exists():
                self.ready_times.append(time.monotonic() - t0)
            while self.proc.poll() is None:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # RestartSec

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def hup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(self.proc.wait, 60)


class Terminal:
    """A terminal that keeps reconnecting and logging on; records what msc acknowledged."""

    def __init__(self, port: int, station: str, acked: list[str], answers: dict[str, str]) -> None:
        self.port, self.station, self.acked, self.answers = port, station, acked, answers
        self.c: WireClient | None = None

    async def ensure(self) -> WireClient:
        while self.c is None or self.c.closed.done():
            try:
                c = await WireClient.connect(self.port)
                await c.banner(timeout=5)
                f = await c.logon(self.station, "BN0001", benchconfig.PASSWORD)
                if f.type != "A":
                    raise ConnectionError(f.text)
                self.c = c
                asyncio.get_running_loop().create_task(self._drain(c))
            except (OSError, ConnectionError, asyncio.TimeoutError, AssertionError):
                await asyncio.sleep(0.1)
        return self.c

    async def _drain(self, c: WireClient) -> None:
        while not c.closed.done():
            try:
                o = await asyncio.wait_for(c.outputs.get(), 1)
            except asyncio.TimeoutError:
                continue
            self.answers[o.text.split(".", 1)[0]] = o.text

    async def transact(self, header: str, body: str, timeout: float) -> bool:
        c = await self.ensure()
        try:
            f = await c.send(f"{header}.{body}", timeout=timeout)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            self.c = None
            return False
        if f.type != "A":
            return False
        self.acked.append(f"{header}.{body}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if header in self.answers:
                return ".MSC." not in self.answers[header]
            await asyncio.sleep(0.01)
        return False


async def soak(args) -> dict:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="msc-soak-"))
    up1, up2, port, mport = free_port(), free_port(), free_port(), free_port()
    cfg = benchconfig.write(work, port=port, metrics_port=mport, upstream_ports=[up1, up2],
                            stations=args.terminals + 2, timeout_s=5, heartbeat_s=1)

    def stub(p: int, name: str) -> subprocess.Popen:
        return subprocess.Popen([PY, "-m", "msc", "stub", "--role", "clets", "--listen", f"127.0.0.1:{p}",
                                 "--heartbeat-s", "1"], stderr=open(work / f"{name}.err", "a"))

    primary, secondary = stub(up1, "primary"), stub(up2, "secondary")
    sup = Supervisor(cfg, work)
    sup_task = asyncio.create_task(sup.run())
    acked: list[str] = []
    answers: dict[str, str] = {}
    events: list[dict] = []
    probes: list[tuple[float, float, bool]] = []  # (sent, finished, answered)
    stop = asyncio.Event()
    t_start = time.time()

    async def load(i: int) -> None:
        t = Terminal(port, benchconfig.mnemonic(i), acked, answers)
        k = 0
        while not stop.is_set():
            await t.transact(f"{benchconfig.mnemonic(i)}{k % 1000000:06d}", f"QV.CA0130000.LIC/S{i}X{k}", 10)
            k += 1
            await asyncio.sleep(args.think)

    async def probe() -> None:
        t = Terminal(port, benchconfig.mnemonic(args.terminals), acked, answers)
        k = 0
        while not stop.is_set():
            t0 = time.time()
            try:
                ok = await asyncio.wait_for(
                    t.transact(f"{benchconfig.mnemonic(args.terminals)}P{k % 100000:05d}", f"QW.CA0130000.NAM/PROBE {k}.DOB/19800101", 1.0), 1.0)
            except asyncio.TimeoutError:
                ok = False
            probes.append((t0, time.time(), ok))
            k += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.time() - t0)))

    async def schedule() -> None:
        nonlocal primary
        t0 = time.monotonic()
        next_kill = args.kill_every
        next_up = args.upstream_every
        next_hup = 60.0
        restore_at = None
        while not stop.is_set():
            now = time.monotonic() - t0
            if now >= next_kill:
                events.append({"t": time.time(), "fault": "kill -9 msc serve"})
                sup.kill9()
                next_kill += args.kill_every
            if now >= next_up:
                events.append({"t": time.time(), "fault": "primary upstream killed"})
                primary.kill()
                restore_at = now + 60
                next_up += args.upstream_every
            if restore_at is not None and now >= restore_at:
                events.append({"t": time.time(), "fault": "primary upstream restored"})
                primary = stub(up1, "primary")
                restore_at = None
            if now >= next_hup:
                events.append({"t": time.time(), "fault": "config reload (SIGHUP)"})
                sup.hup()
                next_hup += 60
            await asyncio.sleep(0.2)

    while not (work / "ready").exists():
        await asyncio.sleep(0.05)
    tasks = [asyncio.create_task(load(i)) for i in range(args.terminals)]
    tasks += [asyncio.create_task(probe()), asyncio.create_task(schedule())]
    await asyncio.sleep(args.minutes * 60)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Let the terminals take what is still queued for them, then stop cleanly.
    ts = [Terminal(port, benchconfig.mnemonic(i), [], answers) for i in range(args.terminals + 1)]
    for t in ts:
        await t.ensure()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(a.split(".", 1)[0] in answers for a in acked):
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    await sup.stop()
    sup_task.cancel()
    primary.kill()
    secondary.kill()

    from msc.config.load import load
    from msc.journal.keys import KeyRing
    from msc.journal.search import Query, search
    from msc.journal.verify import verify

    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    received = {r.text for r in search(s.journal_dir, ring, Query(kind="RECEIVED")) if r.peer and r.peer.startswith("X")}
    outputs = {(r.mnemonic, r.osn) for r in search(s.journal_dir, ring, Query(kind="RECEIVED")) if r.osn is not None}
    finished = {(r.mnemonic, r.osn) for kind in ("DELIVERED", "UNDELIVERED")
                for r in search(s.journal_dir, ring, Query(kind=kind))}
    lost_records = [a for a in acked if a not in received]
    lost_outputs = outputs - finished
    no_fate = [a for a in acked if a.split(".", 1)[0] not in answers]
    res = verify(s.journal_dir, ring, name=s.config.switch.name)

    ok = sum(1 for _, _, good in probes if good)
    recoveries = []
    for e in events:
        if e["fault"] in ("kill -9 msc serve", "primary upstream killed"):
            first_ok = next(((sent, done) for sent, done, good in probes if sent >= e["t"] and good), None)
            failed = sum(1 for sent, _, good in probes
                         if e["t"] <= sent < (first_ok[0] if first_ok else 1e18) and not good)
            recoveries.append({"fault": e["fault"], "at_s": round(e["t"] - t_start, 1),
                               "recovered_s": round(first_ok[1] - e["t"], 2) if first_ok else None,
                               "probes_failed": failed})
    doc = {"bench": "soak", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)), "minutes": args.minutes,
           "terminals": args.terminals, "probes": len(probes), "probes_ok": ok,
           "availability": round(ok / len(probes), 5) if probes else None,
           "faults": {f: sum(1 for e in events if e["fault"] == f) for f in {e["fault"] for e in events}},
           "recoveries": recoveries,
           "restart_to_ready_s": {"median": round(statistics.median(sup.ready_times), 3) if sup.ready_times else None,
                                  "max": round(max(sup.ready_times), 3) if sup.ready_times else None,
                                  "restarts": len(sup.ready_times) - 1},
           "messages_acknowledged": len(acked), "outputs_created": len(outputs),
           "acknowledged_but_lost": len(lost_records), "outputs_lost": len(lost_outputs),
           "requests_without_fate": len(no_fate), "journal_verify": "ok" if res.ok else res.reason,
           "journal_records": res.records, "workdir": str(work)}
    return doc


def render(doc: dict) -> str:
    rec = [r["recovered_s"] for r in doc["recoveries"] if r["recovered_s"] is not None]
    lines = [f"# Soak {doc['started']}: {doc['minutes']} min, {doc['terminals']} terminals under load", "",
             f"- **Availability (1-second probes answered): {doc['availability']:.3%}** "
             f"({doc['probes_ok']} of {doc['probes']}); goal ≥ 99.9 %",
             "- Faults: " + ", ".join(f"{n} × {f}" for f, n in sorted(doc["faults"].items())),
             f"- Recovery after a fault (fault → answer to the first probe sent after it that was answered; "
             f"probes are 1 s apart): median {statistics.median(rec) if rec else '-'} s, max {max(rec) if rec else '-'} s",
             f"- Restart to ready: median {doc['restart_to_ready_s']['median']} s, max {doc['restart_to_ready_s']['max']} s "
             f"over {doc['restart_to_ready_s']['restarts']} restarts; goal < 1 s",
             f"- Messages acknowledged {doc['messages_acknowledged']:,}; **acknowledged but lost: {doc['acknowledged_but_lost']}**; "
             f"outputs created {doc['outputs_created']:,}, lost {doc['outputs_lost']}; requests without a fate "
             f"{doc['requests_without_fate']}; journal verify: {doc['journal_verify']} ({doc['journal_records']:,} records)",
             "", "| fault | at (s) | recovered after (s) | probes failed |", "|---|---|---|---|"]
    for r in doc["recoveries"]:
        lines.append(f"| {r['fault']} | {r['at_s']} | {r['recovered_s']} | {r['probes_failed']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--terminals", type=int, default=16)
    ap.add_argument("--think", type=float, default=0.01, help="pause between a terminal's transactions (s)")
    ap.add_argument("--kill-every", type=float, default=300)
    ap.add_argument("--upstream-every", type=float, default=420)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    import uvloop

    doc = uvloop.run(soak(args))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"soak-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = render(doc)
    (out / f"soak-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
