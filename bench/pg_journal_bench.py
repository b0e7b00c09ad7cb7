#!/usr/bin/env python3
"""The journal's writers side by side: SQLite (WriterProcess, the daemon's: synchronous = full)
and PostgreSQL (msc.storage.pgjournal.PgWriter, fsync on), the same sealed records, the same
batch sizes.

    .venv/bin/python bench/pg_journal_bench.py [--seconds 3] [--rounds 2] [--batches 1,16,128,1024]

Records are sealed once, before timing, by the journal's own code (msc.journal.records.seal with a
period key of a fresh key ring; ~1 KB of text each, blind-index tokens from the text) — sealing
costs the same on both backends, so only the writer's commit is timed. One writer in a closed
loop (the journal has one batch in flight): each cell commits batches for ``--seconds``, cells
interleaved round by round, the median round reported: records/s, commits/s, commit latency
p50/p99 and this process's CPU per record — the switch's side only: the SQLite writer's child
process and the PostgreSQL server are not counted (so compare the two CPU columns with care).
PostgreSQL: a throw-away cluster (tests/pg.py, ``durable``: fsync on) on loopback, no standby.
Writes bench/results/pg-journal-<stamp>.json and .md. Measurements, not assertions: compare only
within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from tests.pg import PgCluster  # noqa: E402

from msc.journal.records import Entry, entry_columns, seal  # noqa: E402
from msc.journal.schema import Row  # noqa: E402
from msc.journal.tokens import tokens_for  # noqa: E402
from msc.journal.writerproc import WriterProcess  # noqa: E402
from msc.keyring import KeyRing, period_of  # noqa: E402
from msc.storage.pgjournal import PgWriter  # noqa: E402
from msc.storage.postgres import PgSettings  # noqa: E402

TEXT = ("QW.CA0130000.NAM/DOE,JOHN Q.SEX/M.RAC/W.DOB/19800101.HGT/510.WGT/180.OLN/D1234567.OLS/CA. "
        "PUR/C.ATN/DET SMITH 4471.REL/CASE 26-00017. ") * 8


class Source:
    """Sealed rows, numbered on demand from a pool sealed before timing."""

    def __init__(self, ring: KeyRing, pool: int = 4096) -> None:
        ts = int(time.time() * 1e6)
        self.period = period_of(ts)
        keys = ring.period(self.period)
        assert keys is not None
        self.ts = ts
        self.pool = []
        for i in range(pool):
            e = Entry(kind="RECEIVED", direction="in", peer="ICS1", mnemonic="ICS1", user="TS0001", ori="CA0130000",
                      mke="QW", txn=f"X{i}", text=TEXT)
            _meta, blob = seal(keys.aead, e, i + 1, ts, self.period)
            self.pool.append((entry_columns(e), blob, tokens_for(keys.index_key, e.text)))
        self.next = 1

    def batch(self, n: int) -> list[Row]:
        out = []
        for _ in range(n):
            cols, blob, toks = self.pool[self.next % len(self.pool)]
            out.append(Row(self.period, (self.next, self.ts + self.next, *cols), blob, toks))
            self.next += 1
        return out


async def cell(writer, src: Source, batch: int, seconds: float) -> dict:
    lat = []
    n = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rows = src.batch(batch)
        c0 = time.perf_counter()
        await writer.commit(rows)
        lat.append(time.perf_counter() - c0)
        n += len(rows)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    lat.sort()
    return {"records_s": n / wall, "commits_s": len(lat) / wall, "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, "cpu_us_per_record": cpu / n * 1e6,
            "records": n}


async def main(args) -> dict:
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="msc-jbench-") as tmp, PgCluster.create(name="jbench", durable=True) as pg:
        base = Path(tmp)
        ring = KeyRing(base / "keys", base / "master.key")
        ring.init()
        signing = ring.signing_key()
        pg.create_database("jbench")
        settings = PgSettings(f"postgresql://postgres@127.0.0.1:{pg.port}/jbench", pg.password)
        seed = signing.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        writers = {"sqlite": WriterProcess(base / "journal", "full", seed, base / "journal.hwm"),
                   "postgresql": PgWriter(settings, signing.sign)}
        sources = {k: Source(ring) for k in writers}
        for w in writers.values():
            await w.start()
        results: dict[tuple[str, int], list[dict]] = {(k, b): [] for k in writers for b in batches}
        for _round in range(args.rounds):
            for b in batches:
                for k, w in writers.items():
                    results[(k, b)].append(await cell(w, sources[k], b, args.seconds))
        for w in writers.values():
            await w.close()
        server = pg.sql("SHOW server_version")
    cells = []
    for (k, b), rs in results.items():
        med = sorted(rs, key=lambda r: r["records_s"])[len(rs) // 2]
        cells.append({"backend": k, "batch": b, **med, "rounds_records_s": [round(r["records_s"]) for r in rs]})
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
            "postgresql": server, "seconds": args.seconds, "rounds": args.rounds, "record_bytes":
            int(statistics.mean(len(b) for _c, b, _t in sources["sqlite"].pool)), "cells": cells}


def save(prefix: str, doc: dict, render) -> None:
    """``doc`` to bench/results/<prefix>-<UTC stamp>.json and, as ``render`` writes it, .md; the
    markdown is printed too."""
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (out / f"{prefix}-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{prefix}-{stamp}.md").write_text(render(doc))
    print(render(doc))


def markdown(doc: dict) -> str:
    lines = [f"# Journal writers: SQLite vs PostgreSQL ({doc['when']})", "",
             f"`bench/pg_journal_bench.py --seconds {doc['seconds']} --rounds {doc['rounds']}`; PostgreSQL "
             f"{doc['postgresql']} (fsync on, no standby), SQLite writer process synchronous=full; sealed records of "
             f"{doc['record_bytes']} bytes; one writer, closed loop; median round.", "",
             "| backend | batch | records/s | commits/s | p50 ms | p99 ms | switch-side CPU µs/record | rounds (rec/s) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in doc["cells"]:
        lines.append(f"| {c['backend']} | {c['batch']} | {c['records_s']:,.0f} | {c['commits_s']:,.1f} | "
                     f"{c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {c['cpu_us_per_record']:.1f} | "
                     f"{', '.join(f'{x:,}' for x in c['rounds_records_s'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", default="1,16,128,1024")
    a = ap.parse_args()
    save("pg-journal", asyncio.run(main(a)), markdown)
