#!/usr/bin/env python3
"""Where the time per request goes in ``msc serve``, two source trees compared function by function.

    python bench/profile_ab.py --before /tmp/msc-before/src --after src --terminals 16

``bench/call_count_ab.py`` counts all calls per forwarded request; this one says *which* calls,
and what the garbage collector does per request. Each tree's ``msc serve`` runs under cProfile
(a ``sitecustomize`` on ``PYTHONPATH`` that profiles only the ``serve`` process), driven by
``loadgen.py switch`` as ``make bench`` drives it, a short run and a long one; the long run minus
the short one over the requests forwarded in between (calls of ``Router.dispatch``) is the
*marginal* figure per request, so start-up and stop cancel out. Per function: calls and own time
(cProfile's, inflated by profiling and by whatever else the machine runs — compare the shares,
not the microseconds); per request: garbage collections by generation and the objects they
examined (``gc.callbacks``), which more small objects per request would raise.

Prints the functions whose calls per request differ most, then the largest own-time shares of
each tree, and writes ``bench/results/profile-<stamp>.json``.
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
_out = os.environ.get("MSC_PROFILE_OUT")
if _out and "serve" in sys.argv:
    import atexit, cProfile, gc, json
    _gc = {"collections": [0, 0, 0], "collected": [0, 0, 0]}
    def _count(phase, info):
        if phase == "stop":
            g = info["generation"]
            _gc["collections"][g] += 1
            _gc["collected"][g] += info["collected"]
    gc.callbacks.append(_count)
    _prof = cProfile.Profile()
    _prof.enable()
    def _dump():
        _prof.disable()
        _prof.dump_stats(os.path.join(_out, f"serve-{os.getpid()}.prof"))
        with open(os.path.join(_out, f"gc-{os.getpid()}.json"), "w") as fh:
            json.dump(_gc, fh)
    atexit.register(_dump)
'''


def short_name(key: tuple[str, int, str]) -> str:
    file, line, fn = key
    if "/msc/" in file:
        file = "msc/" + file.split("/msc/", 1)[1]
    elif file == "~":
        return fn
    else:
        file = os.path.basename(file)
    return f"{file}:{fn}"


def process_counters(pid: int) -> dict[str, int]:
    """System calls that read and write, and context switches, of ``pid`` and its descendants
    (``msc serve`` and its journal writer): cumulative, from /proc."""
    out = {"syscr": 0, "syscw": 0, "voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
    try:
        for line in open(f"/proc/{pid}/io"):
            k, _, v = line.partition(":")
            if k in out:
                out[k] += int(v)
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in out:
                out[k] += int(v)
        for tid in os.listdir(f"/proc/{pid}/task"):
            for child in open(f"/proc/{pid}/task/{tid}/children").read().split():
                for k, v in process_counters(int(child)).items():
                    out[k] += v
    except FileNotFoundError:
        pass
    return out


def run(tree: str, hook: str, terminals: int, seconds: float) -> tuple[int, dict[str, tuple[int, float]], dict]:
    """(requests forwarded, {function: (calls, own seconds)}, gc and process counts) of one profiled run."""
    d = tempfile.mkdtemp(prefix="msc-prof-")
    os.environ["PYTHONPATH"] = f"{tree}:{hook}"
    os.environ["MSC_PROFILE_OUT"] = d
    try:
        m = run_bench.Msc(Path(d) / "w", sync="full", latency_ms=0, stations=terminals + 10)
    finally:
        del os.environ["PYTHONPATH"], os.environ["MSC_PROFILE_OUT"]
    try:
        run_bench.loadgen("switch", m.port, terminals, seconds, watch=[m.pid])
        counters = process_counters(m.pid)
        counters["journal_commits"] = int(run_bench.metrics_value(m.mport, "msc_journal_append_seconds_count"))
        counters["journal_records"] = int(run_bench.metrics_value(m.mport, "msc_journal_records_total"))
    finally:
        m.stop()
    [f] = glob.glob(f"{d}/serve-*.prof")
    [g] = glob.glob(f"{d}/gc-*.json")
    st = pstats.Stats(f).stats
    requests = sum(v[1] for k, v in st.items() if k[0].endswith("msc/routing/router.py") and k[2] == "dispatch")
    funcs: dict[str, tuple[int, float]] = {}
    for k, v in st.items():
        name = short_name(k)
        calls, own = funcs.get(name, (0, 0.0))
        funcs[name] = (calls + v[1], own + v[2])
    gc = json.loads(Path(g).read_text())
    gc.update({k: [v] for k, v in counters.items()})
    return requests, funcs, gc


def marginal(short: tuple, long: tuple) -> dict:
    (r1, f1, g1), (r2, f2, g2) = short, long
    n = r2 - r1
    per: dict[str, tuple[float, float]] = {}
    for name in set(f1) | set(f2):
        c1, t1 = f1.get(name, (0, 0.0))
        c2, t2 = f2.get(name, (0, 0.0))
        per[name] = ((c2 - c1) / n, (t2 - t1) / n * 1e6)
    gc = {k: [round((b - a) / n, 4) for a, b in zip(g1[k], g2[k], strict=True)] for k in g1}
    return {"requests": n, "functions": per, "gc_per_request": gc}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the src directory of the 'before' tree")
    ap.add_argument("--after", required=True, help="the src directory of the 'after' tree")
    ap.add_argument("--terminals", type=int, default=16)
    ap.add_argument("--short", type=float, default=3, help="seconds of the short run")
    ap.add_argument("--long", type=float, default=15, help="seconds of the long run")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    hook = tempfile.mkdtemp(prefix="msc-prof-hook-")
    Path(hook, "sitecustomize.py").write_text(SITECUSTOMIZE)
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    result = {}
    for name, tree in trees.items():
        result[name] = marginal(run(tree, hook, args.terminals, args.short), run(tree, hook, args.terminals, args.long))
        r = result[name]
        calls = sum(c for c, _ in r["functions"].values())
        own = sum(t for _, t in r["functions"].values())
        print(f"{name}: {r['requests']} requests; {calls:.1f} calls and {own:.1f} us own time (profiled) per request; "
              f"per request: {r['gc_per_request']}", flush=True)
    b, a = result["before"]["functions"], result["after"]["functions"]
    diff = sorted(set(a) | set(b), key=lambda k: -abs(a.get(k, (0, 0))[0] - b.get(k, (0, 0))[0]))
    print("\ncalls per request that differ most (before -> after), own us per request (profiled):")
    for k in diff[: args.top]:
        cb, tb = b.get(k, (0, 0.0))
        ca, ta = a.get(k, (0, 0.0))
        if abs(ca - cb) < 0.05:
            break
        print(f"  {ca - cb:+7.2f}  {cb:7.2f} -> {ca:7.2f}   {tb:7.2f} -> {ta:7.2f} us  {k}")
    for name in trees:
        f = result[name]["functions"]
        own = sum(t for _, t in f.values())
        print(f"\n{name}: largest own-time shares")
        for k in sorted(f, key=lambda k: -f[k][1])[: args.top]:
            print(f"  {f[k][1] / own * 100:5.1f} %  {f[k][0]:7.2f} calls  {k}")
    doc = {"bench": "profile", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "trees": trees,
           "terminals": args.terminals, "short_s": args.short, "long_s": args.long,
           "result": {n: {"requests": r["requests"], "gc_per_request": r["gc_per_request"],
                          "functions": {k: [round(c, 3), round(t, 3)] for k, (c, t) in r["functions"].items()
                                        if abs(c) >= 0.01}}
                      for n, r in result.items()},
           "machine": run_bench.machine()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
