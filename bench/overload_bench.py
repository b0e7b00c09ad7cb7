#!/usr/bin/env python3
"""Overload: goodput and latency offered 1x / 2x / 5x capacity, shedding on and off, one run.

    .venv/bin/python bench/overload_bench.py [--rounds 2] [--duration 10] [--multiples 1,2,5]

Two switches (each its own stub and SQLite journal, the bench configuration with the production
``max_in_flight`` 1000) run at once: one with ``[switch] shed_wait_s`` at its default (new
requests refused ``E307 SWITCH BUSY`` while the journal's queue delay stays above it,
PROTOCOL.md §5 "Overload"), one with ``shed_wait_s = 0`` (never shed: msc before issue 16's
shedding). First each one's closed-loop capacity at 64 terminals; *capacity* is their mean. Then,
each round, every multiple of it is offered open loop (bench/loadgen.py ``--rate``, 64 fresh
terminals each point) to one switch and then the other (which goes first alternates), so that
the two are compared under the same machine load, point by point.

Per point: goodput (transactions accepted and ended in the window, per second), p99 of the
accepted (from when each was due; an accepted one unanswered by the end of the grace is
infinitely late), what was refused ``E307`` (and how many were shed, from msc's
``msc_requests_shed_total``), msc's journal queue delay, the machine's load average.
Writes ``bench/results/overload-<time>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.conftest import free_port  # noqa: E402
from tests.e2e.conftest import wait_port  # noqa: E402

import benchconfig  # noqa: E402
import run_bench as rb  # noqa: E402

TERMINALS = rb.OPEN_LOOP_TERMINALS


class Switch:
    """A stub and ``msc serve`` on the bench configuration, ``[switch]`` keys added."""

    def __init__(self, work: Path, label: str, switch_keys: str, stations: int, upstream_keys: str = "") -> None:
        self.label = label
        self.dir = work / label
        self.up, self.port, self.mport = free_port(), free_port(), free_port()
        cfg = benchconfig.write(self.dir, port=self.port, metrics_port=self.mport, upstream_ports=[self.up],
                                stations=stations, timeout_s=60, switch_extra=switch_keys)
        # The production default max_in_flight (the bench's own configuration lifts it).
        cfg.write_text(cfg.read_text().replace("max_in_flight = 100000", f"max_in_flight = 1000\n{upstream_keys}"))
        self.stub = rb.Proc([rb.PY, "-m", "msc", "stub", "--role", "clets", "--listen", f"127.0.0.1:{self.up}"],
                            self.dir / "stub.err")
        wait_port(self.up, 20)
        ready = self.dir / "ready"
        self.serve = rb.Proc([rb.PY, "-m", "msc", "serve", "--config", str(cfg), "--ready-file", str(ready),
                              "--log-level", "warning"], self.dir / "serve.err")
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.serve.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.dir / "serve.err").read_text()[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        self.serve.stop()
        self.stub.stop()


def point(sw: Switch, rate: float, duration: float, first: int) -> dict:
    waited = rb.wait_quiet(sw.mport, bound_s=120)
    shed0 = rb.metrics_value(sw.mport, "msc_requests_shed_total")
    h0 = rb.histogram(sw.mport, "msc_transaction_seconds")
    res = rb.loadgen("switch", sw.port, TERMINALS, duration, rate=rate, first=first, watch=[sw.serve.p.pid])
    res["shed"] = int(rb.metrics_value(sw.mport, "msc_requests_shed_total") - shed0)
    res["msc_transaction"] = rb.histogram_quantiles(h0, rb.histogram(sw.mport, "msc_transaction_seconds"))
    res["waited_for_quiet_s"] = waited
    res["stations_first"] = first
    return res


def line(r: dict) -> str:
    return (f"good {r['good_per_s']}/s p99 accepted {r['p99_accepted_ms']} ms (p50 {r['p50_accepted_ms']}) "
            f"accepted {r['accepted']}/{r['offered']} E307 {r['rejects'].get('E307', 0)} (shed {r['shed']}) "
            f"missing {r['missing']} load {r['load_average']}")


def median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 1) if xs else None


def p99_text(values: list) -> str:
    """The rounds' p99s in ms; None (beyond the grace) as '> grace'."""
    return " / ".join("> 5 s" if v is None else f"{v:,.0f}" for v in values)


def report(doc: dict) -> str:
    cap = doc["capacity_per_s"]
    out = [f"# Overload: shedding on and off ({doc['started']})", "",
           f"`{doc['command']}`", "",
           f"Machine: {doc['machine']}. Load average before {doc['load_before']}, after {doc['load_after']}.", "",
           f"Closed loop, 64 terminals: shedding on {doc['closed_loop']['on']['per_s']}/s, off "
           f"{doc['closed_loop']['off']['per_s']}/s; capacity = their mean = **{cap}/s**.", "",
           "| offered | shedding | goodput/s (rounds) | median | p99 accepted ms (rounds) | E307 shed (rounds) | load |",
           "|---|---|---|---|---|---|---|"]
    for m in doc["multiples"]:
        for mode in ("on", "off"):
            rs = doc["points"][str(m)][mode]
            out.append(f"| {m}x = {round(m * cap)}/s | {mode} | {' / '.join(str(r['good_per_s']) for r in rs)} | "
                       f"{median([r['good_per_s'] for r in rs])} | {p99_text([r['p99_accepted_ms'] for r in rs])} | "
                       f"{' / '.join(str(r['shed']) for r in rs)} | "
                       f"{' / '.join(str(r['load_average'][0]) for r in rs)} |")
    out += ["", "Ratios (median goodput on / off, and of capacity):", ""]
    for m in doc["multiples"]:
        on = median([r["good_per_s"] for r in doc["points"][str(m)]["on"]])
        off = median([r["good_per_s"] for r in doc["points"][str(m)]["off"]])
        out.append(f"- {m}x: on {on}/s = {rb.ratio(on, cap)} of capacity; off {off}/s = {rb.ratio(off, cap)}; "
                   f"on/off {rb.ratio(on, off)}")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--multiples", default="1,2,5")
    ap.add_argument("--capacity", type=float, default=0, help="skip the closed loop: this capacity (/s)")
    ap.add_argument("--upstream-keys", default="", help='more [[upstream]] keys for both, e.g. "max_inbound = 1024"')
    ap.add_argument("--shed-keys", default="", help='[switch] keys of the shedding switch, e.g. "shed_wait_s = 0.1"')
    args = ap.parse_args()
    multiples = [float(x) for x in args.multiples.split(",")]
    points = args.rounds * len(multiples)
    stations = TERMINALS * (points + 1) + 10
    work = Path(tempfile.mkdtemp(prefix="msc-overload-"))
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    doc: dict = {"started": started, "command": "bench/overload_bench.py " + " ".join(sys.argv[1:]),
                 "machine": rb.machine(), "load_before": [round(x, 2) for x in os.getloadavg()],
                 "multiples": multiples, "duration_s": args.duration, "rounds": args.rounds,
                 "closed_loop": {}, "points": {str(m): {"on": [], "off": []} for m in multiples}}
    switches = {"on": Switch(work, "on", args.shed_keys, stations, args.upstream_keys),
                "off": Switch(work, "off", "shed_wait_s = 0", stations, args.upstream_keys)}
    try:
        for mode, sw in switches.items():
            res = rb.loadgen("switch", sw.port, TERMINALS, args.duration, watch=[sw.serve.p.pid])
            doc["closed_loop"][mode] = res
            print(f"closed loop {mode}: {res['per_s']}/s p99 {res['p99_ms']} ms load {res['load_average']}",
                  file=sys.stderr, flush=True)
        cap = args.capacity or round(statistics.mean(r["per_s"] for r in doc["closed_loop"].values()))
        doc["capacity_per_s"] = cap
        k = 1
        for rnd in range(args.rounds):
            for i, m in enumerate(multiples):
                order = ("on", "off") if (rnd + i) % 2 == 0 else ("off", "on")
                for mode in order:
                    r = point(switches[mode], m * cap, args.duration, TERMINALS * k)
                    doc["points"][str(m)][mode].append(r)
                    print(f"round {rnd + 1} {m}x ({m * cap:.0f}/s) shedding {mode}: {line(r)}", file=sys.stderr, flush=True)
                k += 1
    finally:
        for sw in switches.values():
            sw.stop()
    doc["load_after"] = [round(x, 2) for x in os.getloadavg()]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"overload-{stamp}.json").write_text(json.dumps(doc, indent=1))
    md = report(doc)
    (results / f"overload-{stamp}.md").write_text(md)
    print(md)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
