#!/usr/bin/env python3
"""Before/after latency at fixed rates of two msc source trees, interleaved in one run.

    python bench/tail_ab.py --before /tmp/msc-before/src --after src --rates 1000 --rounds 4

The open loop of ``run_bench.py --open-rounds`` (64 terminals, latency from when each
transaction was due, an unanswered one infinitely late: ``p99_all_ms``), against the real
``msc serve`` of each tree on each storage: SQLite (synchronous=full), PostgreSQL with local
commit, PostgreSQL with a synchronous standby. Every switch is up at once (the two trees of a
backend share its PostgreSQL cluster, each its own database); each rate is offered to each
switch in turn, round after round, the two trees of a backend back to back and in alternating
order — so that what else the machine does falls on both alike (PERFORMANCE.md: only a
comparison within one run means anything; on this shared 2-core VM the load moves within
minutes). ``PYTHONPATH`` picks the tree the switch and its stub import; the load generator and
the bench configuration are this tree's, the same for both.

Writes ``bench/results/tail-ab-<stamp>.{json,md}``: per backend and rate, each round's p99 of all
offered for both trees, their medians and the ratio, the p50s, the generator's send lag and the
1-minute load average before each point.

``--new-wal-before``: the trees' PostgreSQL switches on clusters of their own, the 'before' ones as
``initdb`` left them and the 'after' ones in service (``run_bench.in_service``: recycled WAL
segments ready) — with the same tree twice, what new WAL segments cost (PERFORMANCE.md "Where the
tail came from").
"""

from __future__ import annotations

import argparse
import contextlib
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

BACKENDS = ("sqlite", "pg_local", "pg_sync_standby")
NAMES = {"sqlite": "SQLite full", "pg_local": "PostgreSQL local", "pg_sync_standby": "PostgreSQL + sync standby"}


def start(work: Path, tree: str, stations: int, extra: str) -> run_bench.Msc:
    os.environ["PYTHONPATH"] = tree
    try:
        return run_bench.Msc(work, sync="full", latency_ms=0, stations=stations, extra=extra)
    finally:
        del os.environ["PYTHONPATH"]


def median(values: list[float | None]) -> float | None:
    """The median, an unanswered round (None: beyond the grace) counting as infinitely late."""
    v = sorted(float("inf") if x is None else x for x in values)
    if not v:
        return None
    m = statistics.median(v)
    return None if m == float("inf") else round(m, 3)


def table(doc: dict) -> list[str]:
    lines = ["| rate/s | msc on | before: p99 of all, ms (rounds) | median | after | median | after / before "
             "| p50 before → after, ms (medians) | CPU ms/txn: msc serve before → after; generator; machine "
             "| send lag p99, ms | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rate in doc["rates"]:
        for key in doc["backends"]:
            b = doc["points"][key]["before"][rate]
            a = doc["points"][key]["after"][rate]

            def shown(v):
                return "> grace" if v is None else f"{v:g}"

            mb, ma = median([o["p99_all_ms"] for o in b]), median([o["p99_all_ms"] for o in a])
            ratio = round(ma / mb, 2) if ma is not None and mb else "—"
            p50b = statistics.median(o["p50_ms"] for o in b if o["p50_ms"] is not None)
            p50a = statistics.median(o["p50_ms"] for o in a if o["p50_ms"] is not None)
            lag = max(o.get("send_lag_p99_ms") or 0 for o in b + a)

            def cpu(runs, key=None):
                v = [(o.get(key) if key else next(iter((o.get("cpu_ms_per_txn") or {}).values()), None)) for o in runs]
                v = [x for x in v if x is not None]
                return f"{statistics.median(v):.2f}" if v else "—"

            loads = [o["load_average"][0] for o in b + a]
            lines.append(
                f"| {rate} | {NAMES[key]} | {', '.join(shown(o['p99_all_ms']) for o in b)} | {shown(mb)} | "
                f"{', '.join(shown(o['p99_all_ms']) for o in a)} | {shown(ma)} | {ratio} | {p50b:g} → {p50a:g} | "
                f"{cpu(b)} → {cpu(a)}; {cpu(b + a, 'loadgen_cpu_ms_per_txn')}; {cpu(b + a, 'machine_cpu_ms_per_txn')} | "
                f"≤ {lag:g} | {min(loads):.1f}–{max(loads):.1f} |")
    return lines


def database_lines(doc: dict) -> list[str]:
    """PostgreSQL's own work during each point (run_bench.database_work), per backend, tree and rate."""
    seen = []
    for key in doc["backends"]:
        for t, per in doc["points"][key].items():
            for rate, runs in per.items():
                if any(o.get("postgresql") for o in runs):
                    seen.append(f"{NAMES[key]} {t} at {rate}/s: " + ", ".join(
                        "/".join(str(o["postgresql"].get(k, "-")) for k in ("autovacuum", "autoanalyze", "checkpoints",
                                                                            "wal_files"))
                        if o.get("postgresql") else "-" for o in runs))
    if not seen:
        return []
    return ["PostgreSQL's own work during each point (autovacuum / autoanalyze runs on msc's tables / checkpoints / "
            "new WAL segment file names on the primary and its standby, per round): " + "; ".join(seen) + ".", ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the src directory of the 'before' tree")
    ap.add_argument("--after", default=str(ROOT / "src"), help="the src directory of the 'after' tree")
    ap.add_argument("--rates", default="1000", help="transactions/s offered, comma-separated")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--new-wal-before", action="store_true",
                    help="the 'before' switches on PostgreSQL clusters of their own as initdb left them (no WAL "
                         "segment to recycle), the 'after' ones on clusters in service (run_bench.in_service); "
                         "with --before and --after the same tree this measures that alone")
    args = ap.parse_args()
    from tests import pg

    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    backends = [b for b in args.backends.split(",") if b]
    if any(b != "sqlite" for b in backends) and pg.missing_reason():
        sys.exit(f"PostgreSQL: {pg.missing_reason()}")
    stations = run_bench.OPEN_LOOP_TERMINALS * args.rounds * len(rates) + 10
    work = Path(tempfile.mkdtemp(prefix="msc-tail-ab-"))
    doc: dict = {"bench": "tail_ab", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "machine": run_bench.machine(), "trees": trees, "duration_s": args.duration,
                 "rates": [str(int(r)) for r in rates], "backends": backends, "rounds": args.rounds,
                 "uptime_before": os.getloadavg(),
                 "points": {k: {t: {str(int(r)): [] for r in rates} for t in trees} for k in backends}}
    switches: dict[tuple[str, str], run_bench.Msc] = {}
    with contextlib.ExitStack() as stack:
        try:
            for key in backends:
                primaries: dict[str, object] = {}
                for t in (trees if args.new_wal_before else ["both"]):
                    if key == "pg_local":
                        primaries[t] = stack.enter_context(pg.PgCluster.create(durable=True, name="tail-ab"))
                    elif key == "pg_sync_standby":
                        primaries[t] = stack.enter_context(pg.primary_with_standby(durable=True))[0]
                    if t != "before" and t in primaries:
                        run_bench.in_service(primaries[t])
                for t, tree in trees.items():
                    primary = primaries.get(t, primaries.get("both"))
                    extra = run_bench.pg_storage(work, primary, f"{key}-{t}", f"msc_{t}") if primary else ""
                    switches[key, t] = start(work / f"{key}-{t}", tree, stations, extra)
                    if primary is not None:  # each point then says what PostgreSQL did on its own
                        switches[key, t].database = (primary, f"msc_{t}")
            point = 0
            for r in range(args.rounds):
                for rate in rates:
                    for key in backends:
                        order = list(trees) if (r + point) % 2 == 0 else list(reversed(trees))
                        for t in order:
                            o = run_bench.open_point(switches[key, t], rate, args.duration, label=f"{key} {t}",
                                                     first=point * run_bench.OPEN_LOOP_TERMINALS)
                            doc["points"][key][t][str(int(rate))].append(o)
                    point += 1
        finally:
            for m in switches.values():
                m.stop()
    doc["uptime_after"] = os.getloadavg()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = [f"# Latency at fixed rates, two trees interleaved ({doc['started']})", "",
          f"`bench/tail_ab.py --before {args.before} --after {args.after} --rates {args.rates} "
          f"--duration {args.duration:g} --rounds {args.rounds}"
          f"{' --new-wal-before' if args.new_wal_before else ''}`; 64 terminals, stub 0 ms, {args.duration:g} s per point "
          f"after 2 s of warm-up; p99 of all offered (unanswered: infinitely late). 1-minute load average "
          f"{doc['uptime_before'][0]:.2f} before, {doc['uptime_after'][0]:.2f} after.", "", *table(doc), "",
          *database_lines(doc)]
    (out / f"tail-ab-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"tail-ab-{stamp}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
