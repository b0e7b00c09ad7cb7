#!/usr/bin/env python3
"""How long two ``msc serve`` nodes with a lease (``[node]``; OPERATIONS.md "Running two nodes")
take to hand over, by fault: the active node killed (``kill -9``), paused (SIGSTOP, continued
once the other serves: it must exit 75), or stopped cleanly (SIGTERM: the lease is released).

    .venv/bin/python bench/ha_failover.py [--rounds 10] [--ttl 5] [--faults kill9,sigstop,term] [--journal pg]

A throw-away PostgreSQL (tests/pg.py) holds the lease and — ``--journal pg``, the default — the
shared journal, queues and OSNs of both nodes (``[storage] backend = "postgresql"``, one key ring);
``--journal sqlite`` gives each node its own SQLite journal (the lifecycle only, as first measured).
One clets stub; no load (``make ha-soak`` measures under load, with "0 acknowledged lost"). Per
round: fault the active node at t0, then poll the other
node every 20 ms until its ``/readyz`` is 200 and its terminal listener accepts — "serving". The
faulted node is started again (a standby) before the next round, which faults the new active.
Writes bench/results/ha-failover-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests import pg as pgmod  # noqa: E402

import benchconfig  # noqa: E402

MSC = [sys.executable, "-m", "msc"]
POLL_S = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, what: str, timeout: float = 120.0) -> float:
    """Poll ``cond`` every 20 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(POLL_S)


class Node:
    def __init__(self, tmp: Path, name: str, *, up: int, dsn: str, ttl: float, shared: Path | None = None) -> None:
        self.name, self.tmp = name, tmp / name
        self.port, self.mport = free_port(), free_port()
        if shared is None:
            node = f'\n[node]\nname = "{name}"\nlease_ttl_s = {ttl}\nlease_dsn = "{dsn}"\n'
        else:  # the journal on PostgreSQL: the lease there too; the password from a 0600 file
            node = (f'\n[node]\nname = "{name}"\nlease_ttl_s = {ttl}\n\n[storage]\nbackend = "postgresql"\n'
                    f'dsn = "{dsn}"\npassword_file = "{shared / "pg.password"}"\n')
        self.cfg = benchconfig.write(self.tmp, port=self.port, metrics_port=self.mport, upstream_ports=[up], stations=1,
                                     extra=node)
        if shared is not None:  # one key ring for both nodes (OPERATIONS.md "Running two nodes")
            keys = self.tmp / "data" / "keys"
            if (shared / "keys").exists():
                shutil.rmtree(keys)
            else:
                keys.rename(shared / "keys")
            keys.symlink_to(shared / "keys")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ready = self.tmp / "ready"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen([*MSC, "serve", "--config", str(self.cfg), "--ready-file", str(ready)],
                                     stderr=open(self.tmp / "serve.err", "a"))
        wait(lambda: ready.exists() and ready.read_text().strip() in ("standby", "ready"), f"{self.name} up", 60)

    def readyz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/readyz", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def serving(self) -> bool:
        if self.readyz() != 200:
            return False
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def one_round(fault: str, active: Node, standby: Node) -> dict:
    assert active.proc is not None
    pid = active.proc.pid
    t0 = time.monotonic()
    if fault == "kill9":
        os.kill(pid, signal.SIGKILL)
    elif fault == "sigstop":
        os.kill(pid, signal.SIGSTOP)
    else:
        os.kill(pid, signal.SIGTERM)
    t1 = wait(standby.serving, f"{standby.name} serving after {fault} of {active.name}")
    row = {"fault": fault, "from": active.name, "to": standby.name, "serving_s": round(t1 - t0, 3)}
    if fault == "sigstop":
        os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        row["exit_status"] = active.proc.wait(60)
        row["stepped_down_s"] = round(time.monotonic() - resumed, 3)
    else:
        row["exit_status"] = active.proc.wait(60)
    active.start()  # its supervisor starts it again: a standby
    wait(lambda: active.readyz() == 503, f"{active.name} standby again", 60)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10, help="handovers per fault (default 10)")
    ap.add_argument("--ttl", type=float, default=5.0, help="[node] lease_ttl_s (default 5, the default of CONFIG.md)")
    ap.add_argument("--faults", default="kill9,sigstop,term", help="comma-separated: kill9, sigstop, term")
    ap.add_argument("--journal", choices=("pg", "sqlite"), default="pg",
                    help="pg: one shared journal on PostgreSQL (default); sqlite: each node its own")
    args = ap.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    for f in faults:
        if f not in ("kill9", "sigstop", "term"):
            ap.error(f"unknown fault {f!r}")
    rows: list[dict] = []
    with pgmod.PgCluster.create() as pg, tempfile.TemporaryDirectory(prefix="msc-ha-bench-") as d:
        tmp = Path(d)
        pg.create_database("msc")
        shared: Path | None = None
        if args.journal == "pg":
            shared = tmp / "shared"
            shared.mkdir()
            fd = os.open(shared / "pg.password", os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pg.password + "\n")
            dsn = f"postgresql://postgres@127.0.0.1:{pg.port}/msc"
        else:
            dsn = f"postgresql://postgres@127.0.0.1:{pg.port}/msc?passfile={pg.passfile}"
        up = free_port()
        stub = subprocess.Popen([*MSC, "stub", "--role", "clets", "--listen", f"127.0.0.1:{up}"],
                                stderr=subprocess.DEVNULL)
        nodes = [Node(tmp, n, up=up, dsn=dsn, ttl=args.ttl, shared=shared) for n in ("node-a", "node-b")]
        try:
            nodes[0].start()
            wait(nodes[0].serving, "node-a serving", 60)
            nodes[1].start()
            active, standby = nodes
            for fault in faults:
                for i in range(args.rounds):
                    row = one_round(fault, active, standby)
                    rows.append(row)
                    print(f"{fault} #{i + 1}: {row['to']} serving after {row['serving_s']:.2f} s "
                          f"(exit {row['exit_status']})", flush=True)
                    active, standby = standby, active
        finally:
            for n in nodes:
                n.stop()
            stub.terminate()
            stub.wait(10)
    summary = {}
    for fault in faults:
        xs = [r["serving_s"] for r in rows if r["fault"] == fault]
        summary[fault] = {"n": len(xs), "median_s": round(statistics.median(xs), 3), "max_s": max(xs),
                          "min_s": min(xs), "exit_statuses": sorted({r["exit_status"] for r in rows if r["fault"] == fault})}
    doc = {"ttl_s": args.ttl, "rounds": args.rounds, "journal": args.journal, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
           "summary": summary, "rows": rows}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results"
    (out / f"ha-failover-{stamp}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Two nodes: time to the other node serving (lease_ttl_s = {args.ttl:g})", "",
             f"`bench/ha_failover.py --rounds {args.rounds} --ttl {args.ttl:g} --faults {args.faults} --journal "
             f"{args.journal}`; {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}. "
             + ("One shared journal, queues and OSNs in a local PostgreSQL, the lease there too. " if args.journal == "pg"
                else "Each node its own SQLite journal; the lease in a local PostgreSQL. ")
             + "\"Serving\": /readyz 200 and the listener accepts.", "",
             "| fault | n | median s | max s | min s | exit status of the faulted node |", "|---|---|---|---|---|---|"]
    for fault, s in summary.items():
        lines.append(f"| {fault} | {s['n']} | {s['median_s']:.2f} | {s['max_s']:.2f} | {s['min_s']:.2f} | "
                     f"{', '.join(str(x) for x in s['exit_statuses'])} |")
    (out / f"ha-failover-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
