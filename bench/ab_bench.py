#!/usr/bin/env python3
"""Before/after throughput of two msc source trees, interleaved in one run on this machine.

    python bench/ab_bench.py --before /tmp/msc-before/src --after src --terminals 16,64 --rounds 3

The same closed-loop load as ``make bench``'s "msc full, stub 0 ms" rows (``run_bench.run_msc``:
the real ``msc serve`` and a stub, ``loadgen.py switch``), run against each tree in turn
(``PYTHONPATH`` picks the tree the switch's processes import), round after round, so that
whatever else the machine is doing falls on both alike (PERFORMANCE.md: figures at 16–64
connections vary up to 2× between runs on this VM; only a comparison within one run means
anything). Besides the rate it records the switch's CPU time per transaction (``msc serve`` and
its journal writer), which what else runs on the machine disturbs much less, and the part of it
that is ``msc serve`` alone (the sessions, the router, the event loop: what the journal writer's
own changes do not move). Prints each round
and the median of each, and writes
``bench/results/ab-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import run_bench  # noqa: E402


def own_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` alone (user + system), without its children (the journal writer)."""
    try:
        f = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return 0.0
    p = f[f.rindex(")") + 2 :].split()
    return (int(p[11]) + int(p[12])) / run_bench.TCK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the src directory of the 'before' tree")
    ap.add_argument("--after", required=True, help="the src directory of the 'after' tree")
    ap.add_argument("--terminals", default="16,64")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    terminals = [int(x) for x in args.terminals.split(",")]
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    runs: dict[str, dict[str, list[float]]] = {k: {str(n): [] for n in terminals} for k in trees}
    # CPU of the switch process (and its journal writer) per transaction: less disturbed by what
    # else the machine runs than the rate is.
    cpu: dict[str, dict[str, list[float]]] = {k: {str(n): [] for n in terminals} for k in trees}
    # Of which msc serve itself, without its journal writer: where the session and the switch run.
    own: dict[str, dict[str, list[float]]] = {k: {str(n): [] for n in terminals} for k in trees}
    work = Path(tempfile.mkdtemp(prefix="msc-ab-"))
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))  # neither always goes first
        for name in order:
            # Only the switch and its stub import the tree under test; the load generator and the
            # bench configuration are this tree's, the same for both.
            os.environ["PYTHONPATH"] = trees[name]
            try:
                m = run_bench.Msc(work / f"{name}-{r}", sync="full", latency_ms=0, stations=max(terminals) + 10)
            finally:
                del os.environ["PYTHONPATH"]
            try:
                for n in terminals:
                    c0 = own_cpu_seconds(m.pid)
                    res = run_bench.loadgen("switch", m.port, n, args.duration, watch=[m.pid])
                    runs[name][str(n)].append(res["per_s"])
                    cpu[name][str(n)].append(res["cpu_ms_per_txn"].get(str(m.pid)))
                    # As loadgen counts the switch's CPU: over the run, warm-up included.
                    own[name][str(n)].append(round((own_cpu_seconds(m.pid) - c0) / (res["per_s"] * (args.duration + 2))
                                                   * 1000, 3) if res["per_s"] else None)
            finally:
                m.stop()
            print(f"round {r + 1} {name:>6}: " + "  ".join(f"{n}: {runs[name][str(n)][-1]:.1f}/s "
                                                            f"({cpu[name][str(n)][-1]} ms CPU/txn, {own[name][str(n)][-1]} of it msc serve)"
                                                            for n in terminals),
                  file=sys.stderr, flush=True)
    summary = {}
    for n in terminals:
        b, a = statistics.median(runs["before"][str(n)]), statistics.median(runs["after"][str(n)])
        cb, ca = statistics.median(cpu["before"][str(n)]), statistics.median(cpu["after"][str(n)])
        ob, oa = statistics.median(own["before"][str(n)]), statistics.median(own["after"][str(n)])
        summary[str(n)] = {"before_per_s": round(b, 1), "after_per_s": round(a, 1), "change_pct": round((a / b - 1) * 100, 1),
                           "before_cpu_ms_per_txn": cb, "after_cpu_ms_per_txn": ca,
                           "cpu_change_pct": round((ca / cb - 1) * 100, 1),
                           "before_serve_cpu_ms_per_txn": ob, "after_serve_cpu_ms_per_txn": oa,
                           "serve_cpu_change_pct": round((oa / ob - 1) * 100, 1)}
        # The least disturbed round of each (highest rate, least CPU): on a shared machine the
        # noise only ever slows a run down.
        bb, ba = max(runs["before"][str(n)]), max(runs["after"][str(n)])
        mb, ma = min(cpu["before"][str(n)]), min(cpu["after"][str(n)])
        sb, sa = min(own["before"][str(n)]), min(own["after"][str(n)])
        summary[str(n)].update(best_before_per_s=bb, best_after_per_s=ba, best_change_pct=round((ba / bb - 1) * 100, 1),
                               least_before_cpu_ms=mb, least_after_cpu_ms=ma, least_cpu_change_pct=round((ma / mb - 1) * 100, 1),
                               least_before_serve_cpu_ms=sb, least_after_serve_cpu_ms=sa,
                               least_serve_cpu_change_pct=round((sa / sb - 1) * 100, 1))
        print(f"{n:>3} terminals, median: before {b:.1f}/s  after {a:.1f}/s  ({(a / b - 1) * 100:+.1f} %);  "
              f"switch CPU per transaction before {cb} ms  after {ca} ms  ({(ca / cb - 1) * 100:+.1f} %);  "
              f"msc serve alone before {ob} ms  after {oa} ms  ({(oa / ob - 1) * 100:+.1f} %)")
        print(f"{n:>3} terminals, best:   before {bb:.1f}/s  after {ba:.1f}/s  ({(ba / bb - 1) * 100:+.1f} %);  "
              f"switch CPU per transaction before {mb} ms  after {ma} ms  ({(ma / mb - 1) * 100:+.1f} %);  "
              f"msc serve alone before {sb} ms  after {sa} ms  ({(sa / sb - 1) * 100:+.1f} %)")
    doc = {"bench": "ab", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "trees": trees,
           "duration_s": args.duration, "rounds": args.rounds, "runs": runs, "cpu_ms_per_txn": cpu,
           "serve_cpu_ms_per_txn": own, "median": summary,
           "machine": run_bench.machine()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ab-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
