#!/usr/bin/env python3
"""Python function calls per forwarded request in ``msc serve``, two source trees compared.

    python bench/call_count_ab.py --before /tmp/msc-before/src --after src --terminals 16

A count of calls does not depend on what else the machine runs, which the rate and even the CPU
time per transaction do (``bench/ab_bench.py``: single rounds on this shared VM vary ±35 %). Each
tree's ``msc serve`` runs under cProfile (a ``sitecustomize`` this script writes into a temporary
directory on ``PYTHONPATH``, which profiles only the ``serve`` process, not its journal writer),
driven by ``loadgen.py switch`` as ``make bench`` drives it, twice: a short run and a long one. The
long run's calls minus the short run's, over the requests forwarded in between (calls of
``Router.dispatch``), are the *marginal* calls per request: start-up and stop cancel out. Reported
in all and by msc package. A proxy for CPU, not a measure of it: calls into C (AES-GCM, SQLite,
the event loop) cost far more than a Python call. Writes ``bench/results/calls-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import run_bench  # noqa: E402

SITECUSTOMIZE = '''
import os, sys
_out = os.environ.get("MSC_CALLS_OUT")
if _out and "serve" in sys.argv:
    import atexit, cProfile
    _prof = cProfile.Profile()
    _prof.enable()
    def _dump():
        _prof.disable()
        _prof.dump_stats(os.path.join(_out, f"serve-{os.getpid()}.prof"))
    atexit.register(_dump)
'''

AREAS = (("msc.server", "msc/server/"), ("msc.routing", "msc/routing/"), ("msc.mnemonics", "msc/mnemonics/"),
         ("msc.protocol", "msc/protocol/"), ("msc.journal", "msc/journal/"), ("msc.flow", "msc/flow.py"),
         ("msc.ops", "msc/ops/"))


def run(tree: str, hook: str, terminals: int, seconds: float) -> tuple[int, dict[str, int]]:
    """(requests forwarded, calls by area) of one profiled ``msc serve`` under load."""
    d = tempfile.mkdtemp(prefix="msc-calls-")
    os.environ["PYTHONPATH"] = f"{tree}:{hook}"
    os.environ["MSC_CALLS_OUT"] = d
    try:
        m = run_bench.Msc(Path(d) / "w", sync="full", latency_ms=0, stations=terminals + 10)
    finally:
        del os.environ["PYTHONPATH"], os.environ["MSC_CALLS_OUT"]
    try:
        run_bench.loadgen("switch", m.port, terminals, seconds, watch=[m.pid])
    finally:
        m.stop()
    [f] = glob.glob(f"{d}/serve-*.prof")
    st = pstats.Stats(f).stats
    requests = sum(v[1] for k, v in st.items() if k[0].endswith("msc/routing/router.py") and k[2] == "dispatch")
    calls = {area: sum(v[1] for k, v in st.items() if part in k[0]) for area, part in AREAS}
    calls["all"] = sum(v[1] for v in st.values())
    return requests, calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the src directory of the 'before' tree")
    ap.add_argument("--after", required=True, help="the src directory of the 'after' tree")
    ap.add_argument("--terminals", type=int, default=16)
    ap.add_argument("--short", type=float, default=3, help="seconds of the short run")
    ap.add_argument("--long", type=float, default=15, help="seconds of the long run")
    args = ap.parse_args()
    hook = tempfile.mkdtemp(prefix="msc-calls-hook-")
    Path(hook, "sitecustomize.py").write_text(SITECUSTOMIZE)
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    marginal = {}
    for name, tree in trees.items():
        r1, c1 = run(tree, hook, args.terminals, args.short)
        r2, c2 = run(tree, hook, args.terminals, args.long)
        marginal[name] = {"requests": r2 - r1, **{k: round((c2[k] - c1[k]) / (r2 - r1), 1) for k in c1}}
        print(f"{name:>6}: " + "  ".join(f"{k} {v}" for k, v in marginal[name].items()), file=sys.stderr, flush=True)
    change = {k: round((marginal["after"][k] / marginal["before"][k] - 1) * 100, 1)
              for k in marginal["before"] if k != "requests" and marginal["before"][k]}
    print(f"calls per request, all: before {marginal['before']['all']}  after {marginal['after']['all']}  "
          f"({change['all']:+.1f} %)")
    doc = {"bench": "calls", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "trees": trees,
           "terminals": args.terminals, "short_s": args.short, "long_s": args.long,
           "marginal_calls_per_request": marginal, "change_pct": change, "machine": run_bench.machine()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"calls-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
