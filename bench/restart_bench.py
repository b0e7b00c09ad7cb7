#!/usr/bin/env python3
"""Restart-to-serving time of `msc serve` with a large journal (OPERATIONS.md; issue: operations).

    .venv/bin/python bench/restart_bench.py [--gigabytes 1.0] [--runs 5]

Builds a journal of about --gigabytes under a demo configuration (once), then starts the real
`msc serve` process --runs times — each after a clean stop, and each after a kill -9 — and
measures the wall time from exec to (a) the ready file (every listener bound) and (b) the first
successful logon of a terminal. Writes bench/results/restart-<timestamp>.json and a line in
bench/results/restart.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.conftest import PASSWORD, free_port, make_config  # noqa: E402
from tests.wire import WireClient  # noqa: E402

from msc.config.load import load  # noqa: E402
from msc.journal import Entry, Journal, KeyRing  # noqa: E402


async def build(cfg: Path, gigabytes: float) -> tuple[int, int]:
    s = load(cfg)
    # As the switch writes it: its name in the signed checkpoints, the default checkpoint cadence.
    j = Journal(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file), name=s.config.switch.name,
                checkpoint_every=s.config.journal.checkpoint_every)
    await j.open()
    pad = "X" * 420
    n, batch, inflight = 0, 2000, []
    target = gigabytes * 1e9
    size = 0
    while size < target:
        entries = [Entry(kind="RECEIVED", direction="in", peer="ICS1", mnemonic="ICS1", user="TS0001", ori="CA0130000",
                         mke="QV", txn=f"r-{n + i:x}", text=f"ICS1.QV.CA0130000.LIC/P{n + i:07d}.{pad}")
                   for i in range(batch)]
        inflight.append(j.submit(entries))
        n += batch
        if len(inflight) >= 4:
            await inflight.pop(0)
        if n % 200_000 == 0:
            size = sum(p.stat().st_size for p in s.journal_dir.iterdir())
    await asyncio.gather(*inflight)
    await j.close()
    return n, sum(p.stat().st_size for p in s.journal_dir.iterdir())


async def logon_time(port: int, deadline: float) -> float:
    while True:
        try:
            c = await WireClient.connect(port)
            await c.banner()
            f = await c.logon("ICS1", "TS0001", PASSWORD)
            c.close()
            if f.type == "A":
                return time.perf_counter()
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


def one(cfg: Path, port: int, ready: Path, how: str) -> dict:
    ready.unlink(missing_ok=True)
    log = ready.with_name("serve.err")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "msc", "serve", "--config", str(cfg), "--ready-file", str(ready)],
                         stderr=open(log, "w"))
    while not ready.exists():
        if p.poll() is not None:
            raise RuntimeError("msc serve exited")
        time.sleep(0.002)
    t_ready = time.perf_counter()
    t_logon = asyncio.run(logon_time(port, time.perf_counter() + 30))
    if how == "clean":
        p.send_signal(signal.SIGTERM)
    else:
        p.send_signal(signal.SIGKILL)
    p.wait()
    check = next(json.loads(line) for line in log.read_text().splitlines() if '"journal.self_check"' in line)
    return {"ready_s": round(t_ready - t0, 3), "first_logon_s": round(t_logon - t0, 3),
            "selfcheck_s": check["seconds"], "selfcheck_records": check["records_checked"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gigabytes", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir")
    ap.add_argument("--reuse", action="store_true", help="use the journal already in --workdir")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="msc-restart-"))
    port = free_port()
    cfg = make_config(work, port=port, metrics_port=free_port(), checkpoint_every=1000)  # the production default
    t = time.perf_counter()
    s = load(cfg)
    if args.reuse and list(s.journal_dir.glob("*.db")):
        from msc.journal.reader import Reader

        r = Reader(s.journal_dir)
        records = max(r.period_range(p)[1] for p in r.periods())
        r.close()
        size = sum(f.stat().st_size for f in s.journal_dir.iterdir())
    else:
        records, size = asyncio.run(build(cfg, args.gigabytes))
    print(f"journal of {records:,} records, {size / 1e9:.2f} GB ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    # The whole journal verified once (what one background verification pass does, at full speed).
    from msc.journal.verify import verify

    t = time.perf_counter()
    full = verify(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file), name=s.config.switch.name)
    verify_s = time.perf_counter() - t
    assert full.ok, full.problems
    print(f"verify: {full.records:,} records in {verify_s:.1f} s", file=sys.stderr)
    ready = work / "ready"
    results = {"clean": [], "kill9": []}
    one(cfg, port, ready, "clean")  # warm the page cache once, as a restarted machine's switch would not be
    for _ in range(args.runs):
        results["clean"].append(one(cfg, port, ready, "clean"))
        results["kill9"].append(one(cfg, port, ready, "kill9"))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("ready_s", "first_logon_s", "selfcheck_s",
                                                               "selfcheck_records")} for k, v in results.items()}
    worst = max(r["first_logon_s"] for v in results.values() for r in v)
    doc = {"bench": "restart", "journal_records": records, "journal_bytes": size, "runs": results, "median": med,
           "worst_first_logon_s": worst, "verify_s": round(verify_s, 2), "cores": os.cpu_count(),
           "python": sys.version.split()[0]}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"restart-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    line = (f"| {time.strftime('%Y-%m-%d')} | {size / 1e9:.2f} GB, {records:,} records | "
            f"{med['clean']['ready_s']:.3f} s / {med['clean']['first_logon_s']:.3f} s | "
            f"{med['kill9']['ready_s']:.3f} s / {med['kill9']['first_logon_s']:.3f} s | {worst:.3f} s |\n")
    md = out / "restart.md"
    if not md.exists():
        md.write_text("# Restart to serving (exec → listeners bound / first logon answered), medians\n\n"
                      "| date | journal | after a clean stop | after kill -9 | worst first logon |\n|---|---|---|---|---|\n")
    with open(md, "a") as fh:
        fh.write(line)
    print(line)
    # The start-up self-check (JOURNAL.md), from the switch's own journal.self_check log event.
    sc = out / "selfcheck.md"
    if not sc.exists():
        sc.write_text("# Start-up self-check of `msc serve` and one full verification (bench/restart_bench.py)\n\n"
                      "| date | journal | records read at start | self-check after a clean stop / after kill -9 "
                      "(medians) | whole journal verified |\n|---|---|---|---|---|\n")
    line = (f"| {time.strftime('%Y-%m-%d')} | {size / 1e9:.2f} GB, {records:,} records | "
            f"{med['clean']['selfcheck_records']:,.0f} / {med['kill9']['selfcheck_records']:,.0f} | "
            f"{med['clean']['selfcheck_s'] * 1000:.0f} ms / {med['kill9']['selfcheck_s'] * 1000:.0f} ms | "
            f"{verify_s:.1f} s ({full.records / verify_s:,.0f} records/s) |\n")
    with open(sc, "a") as fh:
        fh.write(line)
    print(line)


if __name__ == "__main__":
    main()
