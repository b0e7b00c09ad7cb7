#!/usr/bin/env python3
"""How many bytes of WAL one journal record costs on PostgreSQL, by kind, and whether
``wal_compression`` changes it.

    .venv/bin/python bench/pg_wal_bench.py [--records 4000] [--batch 16] [--rounds 2]

A synchronous standby waits for every byte of WAL a commit makes to be sent and flushed on the
standby too, so the WAL per record is the standby's share of the p99 (issue 16's goal of 20 ms at
1,000 msg/s; PERFORMANCE.md). This bench commits ``--records`` sealed records (~1 KB of text each,
as pg_journal_bench.py seals them: the journal's own ``seal``, blind-index tokens) through the
daemon's writer (msc.storage.pgjournal.PgWriter), ``--batch`` per transaction (the group commit),
right after a ``CHECKPOINT`` (so the first touch of each page costs a full-page image, as it does
once per checkpoint interval in service), and reads the WAL between the two LSNs with
PostgreSQL's own ``pg_walinspect.pg_get_wal_stats`` (resource manager, record and full-page-image
bytes). Each ``wal_compression`` setting (off, pglz, lz4, zstd — those this server was built
with) is measured in turn, rounds interleaved. A throw-away cluster (tests/pg.py, fsync on).
Writes bench/results/pg-wal-<stamp>.json and .md. Measurements, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.pg import PgCluster, PgError  # noqa: E402

from msc.keyring import KeyRing  # noqa: E402
from msc.storage.pgjournal import PgWriter  # noqa: E402
from msc.storage.postgres import PgSettings  # noqa: E402
from pg_journal_bench import Source, save  # noqa: E402

SETTINGS = ("off", "pglz", "lz4", "zstd")


def wal_stats(pg: PgCluster, start: str, end: str) -> dict[str, dict[str, int]]:
    """Per resource manager: records, record bytes, full-page-image bytes (pg_walinspect, PG ≥ 15)."""
    out = {}
    rows = pg.sql("SELECT \"resource_manager/record_type\", count, record_size, fpi_size FROM "
                  f"pg_get_wal_stats('{start}', '{end}') WHERE count > 0", dbname="walbench")
    for line in rows.splitlines():
        rm, count, rec, fpi = line.split("|")
        out[rm] = {"records": int(count), "record_bytes": int(rec), "fpi_bytes": int(fpi)}
    return out


async def cell(pg: PgCluster, writer: PgWriter, src: Source, setting: str, records: int, batch: int) -> dict:
    pg.sql(f"ALTER SYSTEM SET wal_compression = '{setting}'")
    pg.sql("SELECT pg_reload_conf()")
    pg.sql("CHECKPOINT")
    start = pg.sql("SELECT pg_current_wal_insert_lsn()")
    t0 = time.perf_counter()
    done = 0
    while done < records:
        await writer.commit(src.batch(min(batch, records - done)))
        done += min(batch, records - done)
    wall = time.perf_counter() - t0
    end = pg.sql("SELECT pg_current_wal_insert_lsn()")
    total = int(pg.sql(f"SELECT pg_wal_lsn_diff('{end}', '{start}')"))
    return {"setting": setting, "records": records, "wal_bytes": total, "wal_bytes_per_record": total / records,
            "seconds": wall, "by_rmgr": wal_stats(pg, start, end)}


async def main(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="msc-walbench-") as tmp, \
            PgCluster.create(name="walbench", durable=True) as pg:
        base = Path(tmp)
        ring = KeyRing(base / "keys", base / "master.key")
        ring.init()
        pg.create_database("walbench")
        pg.sql("CREATE EXTENSION pg_walinspect", dbname="walbench")
        writer = PgWriter(PgSettings(f"postgresql://postgres@127.0.0.1:{pg.port}/walbench", pg.password),
                          ring.signing_key().sign)
        await writer.start()
        src = Source(ring)
        await writer.commit(src.batch(args.batch))  # the month's partition exists before the first cell
        settings = []
        for s in SETTINGS:
            try:
                pg.sql(f"ALTER SYSTEM SET wal_compression = '{s}'")
                settings.append(s)
            except PgError:
                print(f"wal_compression = {s}: not supported by this server; skipped", file=sys.stderr)
        cells: dict[str, list[dict]] = {s: [] for s in settings}
        for _round in range(args.rounds):
            for s in settings:
                cells[s].append(await cell(pg, writer, src, s, args.records, args.batch))
        await writer.close()
        server = pg.sql("SHOW server_version")
    record_bytes = int(statistics.mean(len(b) for _c, b, _t in src.pool))
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
            "postgresql": server, "records": args.records, "batch": args.batch, "rounds": args.rounds,
            "sealed_record_bytes": record_bytes,
            "cells": [c for s in settings for c in cells[s]]}


def markdown(doc: dict) -> str:
    lines = [f"# WAL per journal record on PostgreSQL ({doc['when']})", "",
             f"`bench/pg_wal_bench.py --records {doc['records']} --batch {doc['batch']} --rounds {doc['rounds']}`; "
             f"PostgreSQL {doc['postgresql']} (fsync on); sealed records of {doc['sealed_record_bytes']} bytes, "
             f"{doc['batch']} per commit through the daemon's writer, right after a CHECKPOINT; WAL read with "
             "pg_walinspect.pg_get_wal_stats.", "",
             "| wal_compression | round | WAL bytes/record | heap | btree | transaction | other | of which full-page images |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rounds: dict[str, int] = {}
    for c in doc["cells"]:
        rounds[c["setting"]] = rounds.get(c["setting"], 0) + 1
        by = c["by_rmgr"]
        total = sum(v["record_bytes"] + v["fpi_bytes"] for v in by.values()) or 1

        def share(*names: str, by=by, total=total) -> str:
            n = sum(by[k]["record_bytes"] + by[k]["fpi_bytes"] for k in names if k in by)
            return f"{n / total:.1%}"

        other = [k for k in by if k not in ("Heap", "Heap2", "Btree", "Transaction")]
        fpi = sum(v["fpi_bytes"] for v in by.values())
        lines.append(f"| {c['setting']} | {rounds[c['setting']]} | {c['wal_bytes_per_record']:,.0f} | "
                     f"{share('Heap', 'Heap2')} | {share('Btree')} | {share('Transaction')} | {share(*other)} | "
                     f"{fpi / total:.1%} |")
    lines += ["", "Shares are of the bytes pg_get_wal_stats counts (records + full-page images); "
              "the bytes/record column is the LSN distance (page headers included) over the records."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    save("pg-wal", asyncio.run(main(a)), markdown)
