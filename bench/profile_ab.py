#!/usr/bin/env python3
"""Where the time per request goes in ``msc serve``, two source trees compared function by function.

    python bench/profile_ab.py --before /tmp/msc-before/src --after src --terminals 16

``bench/call_count_ab.py`` counts all calls per forwarded request; this one says *which* calls,
and what else each request costs. Each tree's ``msc serve`` runs driven by ``loadgen.py switch``
as ``make bench`` drives it; a ``sitecustomize`` on ``PYTHONPATH`` starts cProfile in the
``serve`` process on SIGUSR1 and stops it and writes the profile on SIGUSR2, sent once the load
is steady and ``--seconds`` later — so the profile holds the steady state only, and the figures
are per request forwarded in that window (calls of ``Router.dispatch``). Per function: calls
and own time (cProfile's, inflated by profiling and by whatever else the machine runs — compare
the shares, not the microseconds); over the same window, per request: the CPU time of
``msc serve`` and its journal writer (profiled), their read and write system calls and context
switches (/proc), journal commits and records (its metrics), and the garbage collector's
collections (``gc.callbacks``) — which more small objects per request would raise.

Trees alternate over ``--rounds``. Prints per round, then the functions whose calls per request
differ most and the largest own-time shares of each tree, and writes
``bench/results/profile-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import run_bench  # noqa: E402

SITECUSTOMIZE = '''
import os, sys
_out = os.environ.get("MSC_PROFILE_OUT")
if _out and "serve" in sys.argv:
    import cProfile, gc, json, signal
    _gc = {"collections": [0, 0, 0], "collected": [0, 0, 0]}
    _on = [False]
    def _count(phase, info):
        if phase == "stop" and _on[0]:
            g = info["generation"]
            _gc["collections"][g] += 1
            _gc["collected"][g] += info["collected"]
    gc.callbacks.append(_count)
    _prof = cProfile.Profile()
    def _start(*_):
        _on[0] = True
        _prof.enable()
    def _stop(*_):
        _prof.disable()
        _on[0] = False
        _prof.dump_stats(os.path.join(_out, "serve.prof"))
        with open(os.path.join(_out, "gc.json"), "w") as fh:
            json.dump(_gc, fh)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
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


def run(tree: str, hook: str, terminals: int, seconds: float) -> dict:
    """One profiled steady-state window of ``msc serve`` on ``tree``: per request forwarded."""
    d = tempfile.mkdtemp(prefix="msc-prof-")
    os.environ["PYTHONPATH"] = f"{tree}:{hook}"
    os.environ["MSC_PROFILE_OUT"] = d
    try:
        m = run_bench.Msc(Path(d) / "w", sync="full", latency_ms=0, stations=terminals + 10)
    finally:
        del os.environ["PYTHONPATH"], os.environ["MSC_PROFILE_OUT"]
    warm = 4.0
    load = threading.Thread(target=run_bench.loadgen, args=("switch", m.port, terminals, warm + seconds + 2))
    try:
        load.start()
        time.sleep(2 + warm)  # loadgen's own warm-up, then the switch's
        before = process_counters(m.pid)
        before["cpu_s"] = run_bench.cpu_seconds(m.pid)
        before["journal_commits"] = run_bench.metrics_value(m.mport, "msc_journal_append_seconds_count")
        before["journal_records"] = run_bench.metrics_value(m.mport, "msc_journal_records_total")
        os.kill(m.pid, signal.SIGUSR1)
        time.sleep(seconds)
        after = process_counters(m.pid)
        after["cpu_s"] = run_bench.cpu_seconds(m.pid)
        after["journal_commits"] = run_bench.metrics_value(m.mport, "msc_journal_append_seconds_count")
        after["journal_records"] = run_bench.metrics_value(m.mport, "msc_journal_records_total")
        os.kill(m.pid, signal.SIGUSR2)
        prof = Path(d) / "serve.prof"
        deadline = time.monotonic() + 30
        while not (Path(d) / "gc.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        load.join()
    finally:
        m.stop()
    st = pstats.Stats(str(prof)).stats
    n = sum(v[1] for k, v in st.items() if k[0].endswith("msc/routing/router.py") and k[2] == "dispatch")
    funcs: dict[str, list[float]] = {}
    for k, v in st.items():
        f = funcs.setdefault(short_name(k), [0.0, 0.0])
        f[0] += v[1] / n
        f[1] += v[2] / n * 1e6
    gc = json.loads((Path(d) / "gc.json").read_text())
    per = {k: round((after[k] - before[k]) / n, 4) for k in after}
    per["cpu_us"] = round(per.pop("cpu_s") * 1e6, 1)
    per.update({f"gc_{k}": [round(x / n, 5) for x in v] for k, v in gc.items()})
    return {"requests": n, "per_request": per, "functions": funcs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the src directory of the 'before' tree")
    ap.add_argument("--after", required=True, help="the src directory of the 'after' tree")
    ap.add_argument("--terminals", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10, help="the profiled window of each run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    hook = tempfile.mkdtemp(prefix="msc-prof-hook-")
    Path(hook, "sitecustomize.py").write_text(SITECUSTOMIZE)
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.rounds):
        for name in (list(trees) if r % 2 == 0 else list(reversed(trees))):
            res = run(trees[name], hook, args.terminals, args.seconds)
            runs[name].append(res)
            calls = sum(c for c, _ in res["functions"].values())
            print(f"round {r} {name:>6}: {res['requests']} requests, {calls:.1f} calls/request, "
                  f"{res['per_request']}", flush=True)
    # Functions: the sum over the rounds, per request of all the rounds.
    merged: dict[str, dict[str, list[float]]] = {}
    for name, rs in runs.items():
        total = sum(x["requests"] for x in rs)
        m = merged[name] = {}
        for x in rs:
            for k, (c, t) in x["functions"].items():
                e = m.setdefault(k, [0.0, 0.0])
                e[0] += c * x["requests"] / total
                e[1] += t * x["requests"] / total
    b, a = merged["before"], merged["after"]
    print("\ncalls per request that differ most: change, before -> after; own us per request (profiled)")
    for k in sorted(set(a) | set(b), key=lambda k: -abs(a.get(k, [0, 0])[0] - b.get(k, [0, 0])[0]))[: args.top]:
        cb, tb = b.get(k, [0.0, 0.0])
        ca, ta = a.get(k, [0.0, 0.0])
        print(f"  {ca - cb:+7.2f}  {cb:7.2f} -> {ca:7.2f}   {tb:7.2f} -> {ta:7.2f} us  {k}")
    print("\nown us per request that differ most: change, before -> after (profiled)")
    for k in sorted(set(a) | set(b), key=lambda k: -abs(a.get(k, [0, 0])[1] - b.get(k, [0, 0])[1]))[: args.top]:
        cb, tb = b.get(k, [0.0, 0.0])
        ca, ta = a.get(k, [0.0, 0.0])
        print(f"  {ta - tb:+7.2f} us  {tb:7.2f} -> {ta:7.2f} us   {cb:6.2f} -> {ca:6.2f} calls  {k}")
    for name in trees:
        f = merged[name]
        own = sum(t for _, t in f.values())
        print(f"\n{name}: {own:.1f} us own time per request (profiled); largest shares")
        for k in sorted(f, key=lambda k: -f[k][1])[: args.top]:
            print(f"  {f[k][1] / own * 100:5.1f} %  {f[k][1]:7.2f} us  {f[k][0]:7.2f} calls  {k}")
    doc = {"bench": "profile", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "trees": trees,
           "terminals": args.terminals, "seconds": args.seconds, "rounds": args.rounds,
           "runs": {n: [{"requests": x["requests"], "per_request": x["per_request"]} for x in rs]
                    for n, rs in runs.items()},
           "functions": {n: {k: [round(c, 3), round(t, 3)] for k, (c, t) in f.items() if c >= 0.01 or t >= 0.01}
                         for n, f in merged.items()},
           "machine": run_bench.machine()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
