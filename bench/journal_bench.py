#!/usr/bin/env python3
"""Journal benchmark (JOURNAL.md "Performance"): append rate, append latency, search, verify.

    .venv/bin/python bench/journal_bench.py                      # the full run (10 M records)
    .venv/bin/python bench/journal_bench.py --records 200000     # a quicker look

Phases, each against a fresh journal under --workdir (deleted afterwards unless --keep):
  A  sustained append, 500-byte texts, 256 concurrent appenders, synchronous = full and normal
  B  append latency under a paced load of 5,000 records/s (synchronous = full), p50/p99/max
  C  build a journal of --records records in one month (2,000 users, 400 mnemonics)
  D  search by user within that month: time to the first page (50 records) and to the end
  E  token search (--token LIC:…) for a plate that occurs a handful of times
  F  msc journal verify over the whole journal: records/s

Writes bench/results/journal-<timestamp>.json and appends a table to bench/results/journal.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from msc.journal import Entry, Journal, KeyRing  # noqa: E402
from msc.journal.search import Query, search  # noqa: E402
from msc.journal.verify import verify  # noqa: E402

TEXT_PAD = "X" * 420


def machine() -> dict:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}


def entry(i: int, user: str, mnemonic: str, plate: str) -> Entry:
    text = f"{mnemonic}A{i % 1000}.QV.CA0130000.NAM/PERSON, NUMBER{i % 50000}.LIC/{plate}.{TEXT_PAD}"
    return Entry(kind="RECEIVED", direction="in", peer=mnemonic, mnemonic=mnemonic, user=user, taf="7F000001",
                 ori="CA0130000", mke="QV", txn=f"b-{i:x}", text=text[:500])


WRITER = "process"  # --writer: the daemon's journal writer (a child process) unless asked otherwise


async def new_journal(d: Path, sync: str) -> Journal:
    ring = KeyRing(d / "keys", d / "keys" / "master.key")
    if not ring.exists:
        ring.init()
    j = Journal(d / "journal", ring, synchronous=sync, checkpoint_every=100_000, writer=WRITER)
    await j.open()
    return j


async def phase_append(work: Path, sync: str, n: int, concurrency: int = 256) -> dict:
    d = work / f"append-{sync}"
    j = await new_journal(d, sync)
    counter = iter(range(n))
    commits_before = 0

    async def worker():
        for i in counter:
            await j.append(entry(i, f"U{i % 2000:05d}", f"M{i % 400:03d}", f"P{i:07d}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    dt = time.perf_counter() - t0
    await j.close()
    shutil.rmtree(d)
    return {"synchronous": sync, "records": n, "concurrency": concurrency, "seconds": round(dt, 3),
            "records_per_s": round(n / dt), "commits": commits_before}


async def phase_latency(work: Path, rate: int = 5000, seconds: float = 10.0) -> dict:
    d = work / "latency"
    j = await new_journal(d, "full")
    lat: list[float] = []
    loop = asyncio.get_running_loop()
    pending = []
    tick = 0.001
    per_tick = rate * tick
    t0 = loop.time()
    i = 0
    carry = 0.0
    while loop.time() - t0 < seconds:
        carry += per_tick
        while carry >= 1:
            carry -= 1
            start = time.perf_counter()
            fut = j.submit([entry(i, f"U{i % 2000:05d}", f"M{i % 400:03d}", f"P{i:07d}")])
            fut.add_done_callback(lambda f, s=start: lat.append(time.perf_counter() - s))
            pending.append(fut)
            i += 1
        await asyncio.sleep(tick)
    await asyncio.gather(*pending)
    achieved = i / (loop.time() - t0)
    await j.close()
    shutil.rmtree(d)
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3)  # noqa: E731
    return {"target_per_s": rate, "achieved_per_s": round(achieved), "records": i, "p50_ms": q(0.5),
            "p95_ms": q(0.95), "p99_ms": q(0.99), "max_ms": round(lat[-1] * 1000, 3)}


async def phase_build(work: Path, n: int) -> tuple[dict, Path, KeyRing, list[str], str]:
    d = work / "big"
    j = await new_journal(d, "full")
    rnd = random.Random(7)
    rare_plate = "7RARE77"
    rare_at = set(rnd.sample(range(n), 8))
    t0 = time.perf_counter()
    batch = 2000
    inflight = []
    for start in range(0, n, batch):
        entries = []
        for i in range(start, min(n, start + batch)):
            plate = rare_plate if i in rare_at else f"P{rnd.randrange(10**7):07d}"
            entries.append(entry(i, f"U{rnd.randrange(2000):05d}", f"M{rnd.randrange(400):03d}", plate))
        inflight.append(j.submit(entries))
        if len(inflight) >= 4:
            await inflight.pop(0)
        if start % 1_000_000 == 0 and start:
            el = time.perf_counter() - t0
            print(f"  built {start:,} records, {start / el:,.0f}/s", file=sys.stderr, flush=True)
    await asyncio.gather(*inflight)
    dt = time.perf_counter() - t0
    await j.close()
    size = sum(p.stat().st_size for p in (d / "journal").iterdir())
    ring = KeyRing(d / "keys", d / "keys" / "master.key")
    users = [f"U{u:05d}" for u in rnd.sample(range(2000), 5)]
    return ({"records": n, "seconds": round(dt, 1), "records_per_s": round(n / dt), "bytes": size,
             "bytes_per_record": round(size / n)}, d, ring, users, rare_plate)


def phase_search(d: Path, ring: KeyRing, users: list[str], plate: str) -> dict:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    month_start = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    start = int(month_start.timestamp() * 1e6)
    firsts, fulls, counts = [], [], []
    for u in users:
        t0 = time.perf_counter()
        it = search(d / "journal", ring, Query(user=u, start=start))
        first = list(itertools.islice(it, 50))
        t1 = time.perf_counter()
        rest = sum(1 for _ in it)
        t2 = time.perf_counter()
        firsts.append(t1 - t0)
        fulls.append(t2 - t0)
        counts.append(len(first) + rest)
    t0 = time.perf_counter()
    hits = list(search(d / "journal", ring, Query(tokens=[("LIC", plate)])))
    tok = time.perf_counter() - t0
    return {"user_month_first_page_s": round(statistics.median(firsts), 3),
            "user_month_all_s": round(statistics.median(fulls), 3),
            "user_month_records": int(statistics.median(counts)),
            "token_search_s": round(tok, 3), "token_hits": len(hits)}


def phase_verify(d: Path, ring: KeyRing) -> dict:
    res = verify(d / "journal", ring, name="MSC")
    return {"ok": res.ok, "records": res.records, "seconds": round(res.seconds, 1),
            "records_per_s": round(res.records / res.seconds)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000_000, help="size of the search/verify journal")
    ap.add_argument("--append-records", type=int, default=200_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--writer", choices=("process", "thread"), default="process",
                    help="journal writer: a child process (as `msc serve` runs it) or a thread (as the CLI does)")
    args = ap.parse_args()
    global WRITER
    WRITER = args.writer
    work = Path(args.workdir or tempfile.mkdtemp(prefix="msc-journal-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"bench": "journal", "writer": args.writer, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine()}
    try:
        print("A: sustained append …", file=sys.stderr)
        result["append"] = [await phase_append(work, s, args.append_records) for s in ("full", "normal")]
        print("B: latency at 5,000 records/s …", file=sys.stderr)
        result["latency_5000"] = await phase_latency(work)
        print(f"C: building {args.records:,} records …", file=sys.stderr)
        result["build"], d, ring, users, plate = await phase_build(work, args.records)
        print("D/E: search …", file=sys.stderr)
        result["search"] = phase_search(d, ring, users, plate)
        print("F: verify …", file=sys.stderr)
        result["verify"] = phase_verify(d, ring)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"journal-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    a_full, a_norm = result["append"]
    lat, s, v, b = result["latency_5000"], result["search"], result["verify"], result["build"]
    md = (f"\n## Journal benchmark {result['started']} ({result['machine']['cores']} cores, {result['machine']['cpu']}, "
          f"Python {result['machine']['python']}, SQLite {result['machine']['sqlite']}; writer: {args.writer})\n\n"
          "| figure | goal (JOURNAL.md) | measured |\n|---|---|---|\n"
          "| sustained append, synchronous=full, 500-byte texts, 256 appenders | ≥ 50,000 records/s "
          f"| {a_full['records_per_s']:,} records/s |\n"
          f"| same, synchronous=normal | — | {a_norm['records_per_s']:,} records/s |\n"
          "| append latency at 5,000 records/s (full) | p99 ≤ 5 ms "
          f"| p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms |\n"
          f"| bulk build of {b['records']:,} records (full) | — "
          f"| {b['records_per_s']:,} records/s, {b['bytes_per_record']} bytes/record on disk |\n"
          f"| search by user + month over {b['records']:,} records | ≤ 1 s to first page "
          f"| first page {s['user_month_first_page_s']} s; all {s['user_month_records']:,} in {s['user_month_all_s']} s |\n"
          f"| token search (--token LIC:…) over {b['records']:,} records | ≤ 1 s | {s['token_search_s']} s ({s['token_hits']} hits) |\n"
          f"| verify | ≥ 100,000 records/s | {v['records_per_s']:,} records/s ({v['records']:,} in {v['seconds']} s, ok={v['ok']}) |\n")
    with open(out / "journal.md", "a") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    import uvloop  # as `msc serve` runs

    uvloop.run(main())
