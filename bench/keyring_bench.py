#!/usr/bin/env python3
"""The key ring's store, measured: the file (SQLite deployments) and PostgreSQL (a pair).

    .venv/bin/python bench/keyring_bench.py [--months 200]

For each store: making a month's key (``KeyRing.period(m)`` with nothing cached: the journal does
it at its open for this and next month, and when sealing the first record of a month it has not
made), and reading one uncached (``create=False``: ``msc journal verify``/``search`` once per
month). Then two key rings ("two nodes", two connections) making the same ``--months`` months at
the same moment: how many months end with one secret (all must) and the time per month.

PostgreSQL runs durable (fsync on) in a temporary cluster (tests/pg.py), on loopback. Latencies
are milliseconds, median and p95 over ``--months`` calls. Writes bench/results/keyring-<stamp>.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import pg as pgmod  # noqa: E402

from msc.keyring import KeyRing  # noqa: E402
from msc.storage.pgkeyring import PgKeyStore  # noqa: E402
from msc.storage.postgres import PgSettings  # noqa: E402


def months(n: int, start: int = 0) -> list[str]:
    return [f"{2030 + i // 12}-{i % 12 + 1:02d}" for i in range(start, start + n)]


def timed(ring: KeyRing, ms: list[str], *, create: bool) -> list[float]:
    out = []
    for m in ms:
        ring._periods.clear()  # uncached, as a new process or a month not yet opened
        t = time.perf_counter()
        ring.period(m, create=create)
        out.append((time.perf_counter() - t) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--months", type=int, default=200)
    args = ap.parse_args()
    n = args.months
    lines = [f"# Key ring stores — {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", "",
             f"`bench/keyring_bench.py --months {n}`; PostgreSQL durable (fsync on), loopback.", "",
             "| store | make a month: median | p95 | read uncached: median | p95 |", "|---|---|---|---|---|"]
    with pgmod.PgCluster.create(durable=True) as cluster:
        cluster.create_database("keyring")
        pg = PgSettings(f"postgresql://postgres@127.0.0.1:{cluster.port}/keyring", cluster.password)
        tmp = Path(tempfile.mkdtemp(prefix="msc-keyring-bench-"))
        master = tmp / "master.key"
        for name in ("file", "pg"):
            (tmp / name).mkdir(mode=0o700)
        file_ring = KeyRing(tmp / "file" / "keys", master)
        file_ring.init()
        pg_ring = KeyRing(tmp / "pg" / "keys", master, PgKeyStore(pg))
        pg_ring.init()
        for name, ring in (("file (keyring.json)", file_ring), ("PostgreSQL", pg_ring)):
            ms = months(n)
            made, read = timed(ring, ms, create=True), timed(ring, ms, create=False)
            lines.append(f"| {name} | {statistics.median(made):.2f} ms | {p(made, .95):.2f} ms | "
                         f"{statistics.median(read):.2f} ms | {p(read, .95):.2f} ms |")
        nodes = [KeyRing(tmp / f"node{i}" / "keys", master, PgKeyStore(pg)) for i in range(2)]
        ms = months(n, start=n)
        got: list[list[bytes | None]] = [[None] * n for _ in nodes]
        barrier = threading.Barrier(len(nodes))

        def run(i: int) -> None:
            barrier.wait()
            for j, m in enumerate(ms):
                keys = nodes[i].period(m)
                got[i][j] = keys.index_key if keys else None

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(nodes))]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        one = sum(1 for a, b in zip(*got, strict=True) if a is not None and a == b)
        lines += ["", f"Race: 2 nodes making the same {n} months at once on PostgreSQL: **{one}/{n}** months with one "
                      f"secret; {elapsed * 1000 / n:.2f} ms per month (both nodes)."]
        for ring in (pg_ring, *nodes):
            ring.close()
    out = ROOT / "bench" / "results" / f"keyring-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {out}")
    return 0 if one == n else 1


if __name__ == "__main__":
    sys.exit(main())
