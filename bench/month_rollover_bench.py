#!/usr/bin/env python3
"""The first commit of a month, measured: how long the event loop stalls at it with the month's
key made on demand (the journal before the fix: in ``_seal``, on the event loop) and made ahead
(``Journal.keys_ahead``: in a worker thread at the first tick of the month before).

    .venv/bin/python bench/month_rollover_bench.py [--rounds 48]

For each key ring store — the file (SQLite deployments) and PostgreSQL (a pair's: a durable
temporary cluster, tests/pg.py, loopback) — a journal (SQLite files, thread writer) with an
injected clock is walked through ``--rounds`` month ends; at each, the new month's first record is
appended while a ticker task measures the event loop's longest gap (1 ms ticks) and the append's
own latency. Then, on PostgreSQL, one more month end with the database frozen just before it
(SIGSTOP of the postmaster and every backend: connections stay open, nothing answers): a key
made on demand waits for the client's bound and the record fails (E501 for its batch); made
ahead, the key was made a month before and the record commits (the journal is in SQLite files
here: on a pair the journal's own commit would wait for the database too — this isolates the
key). Milliseconds, median and max over the rounds. Writes bench/results/month-rollover-<stamp>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import pg as pgmod  # noqa: E402

import msc.journal.journal as journal_mod  # noqa: E402
from msc.journal import Entry, Journal  # noqa: E402
from msc.keyring import KeyRing  # noqa: E402
from msc.storage.pgkeyring import PgKeyStore  # noqa: E402
from msc.storage.postgres import CALL_TIMEOUT_S, PgSettings  # noqa: E402


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def freezer(cluster: pgmod.PgCluster) -> tuple[Callable[[], None], Callable[[], None]]:
    """(freeze, thaw) of a database host: SIGSTOP/SIGCONT of the postmaster and every backend."""
    import signal

    frozen: list[int] = []

    def freeze() -> None:
        frozen[:] = sorted(set(pgmod._pids_with_cwd(cluster.data_dir)) | {cluster.pid or 0} - {0})
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw() -> None:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    return freeze, thaw


def month_start(i: int) -> float:
    """The first second of month ``i`` counted from January 2030."""
    return dt.datetime(2030 + i // 12, i % 12 + 1, 1, tzinfo=dt.UTC).timestamp()


async def stall_of(append: Awaitable[object]) -> tuple[float, float, bool]:
    """(the loop's longest gap while ``append`` runs, its own time — ms —, whether it committed)."""
    longest, done = 0.0, False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.005)
    t0 = time.perf_counter()
    ok = True
    try:
        await append
    except Exception:  # noqa: BLE001 - JournalError: the batch failed closed (E501)
        ok = False
    took = time.perf_counter() - t0
    done = True
    await task
    return longest * 1000, took * 1000, ok


async def walk(ring: KeyRing, directory: Path, rounds: int, *, ahead: bool,
               frozen: tuple[Callable[[], None], Callable[[], None]] | None = None) -> list[tuple[float, float, bool]]:
    """``rounds`` month ends (then one with ``frozen``'s first callable run just before it, its
    second after); the first record of each new month measured. Round 0's month was made at
    the journal's open either way, so it is left out."""
    journal_mod.TICK_S = 0.01
    clock = Clock(month_start(0) + 86400)
    j = Journal(directory, ring, clock=clock, writer="thread")
    if not ahead:
        j.keys_ahead = lambda: None  # type: ignore[method-assign]  # the journal before the fix
    await j.open()
    out = []
    try:
        for i in range(1, rounds + 1 + (frozen is not None)):
            await j.append(Entry(kind="RECEIVED", text=f"the last record of month {i - 1}"))
            if frozen is not None and i == rounds + 1:
                frozen[0]()
            clock.t = month_start(i) + 1
            if ahead and (frozen is None or i <= rounds):
                deadline = time.monotonic() + 60
                while not j.keys_ready() and time.monotonic() < deadline:  # the tick made the month after
                    await asyncio.sleep(0.005)
            out.append(await stall_of(j.append(Entry(kind="RECEIVED", text=f"the first record of month {i}"))))
    finally:
        if frozen is not None:
            frozen[1]()
        await j.close()
    return out


def row(name: str, results: list[tuple[float, float, bool]]) -> str:
    stalls, took = [r[0] for r in results], [r[1] for r in results]
    ok = sum(1 for r in results if r[2])
    return (f"| {name} | {statistics.median(stalls):.2f} | {max(stalls):.2f} | {statistics.median(took):.2f} | "
            f"{max(took):.2f} | {ok}/{len(results)} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=48)
    args = ap.parse_args()
    n = args.rounds
    load = os.getloadavg()
    lines = [f"# The first commit of a month — {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", "",
             f"`bench/month_rollover_bench.py --rounds {n}`; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
             f"on {os.cpu_count()} cores; PostgreSQL durable (fsync on), loopback; CALL_TIMEOUT_S {CALL_TIMEOUT_S:g} s.",
             "", "The event loop's longest gap during the month's first append, and the append's latency (ms), over "
                 f"{n} month ends:", "",
             "| key ring, month's key | loop stall: median | max | append: median | max | committed |",
             "|---|---|---|---|---|---|"]
    frozen_lines = ["", "One more month end with PostgreSQL frozen (SIGSTOP of every process) just before it:", "",
                    "| key ring, month's key | loop stall (ms) | append (ms) | committed |", "|---|---|---|---|"]
    with pgmod.PgCluster.create(durable=True) as cluster:
        tmp = Path(tempfile.mkdtemp(prefix="msc-rollover-bench-"))
        for k, (store, ahead) in enumerate([(s, a) for s in ("file", "PostgreSQL") for a in (False, True)]):
            home = tmp / f"run{k}"
            home.mkdir(mode=0o700)
            if store == "file":
                ring = KeyRing(home / "keys", home / "master.key")
            else:
                cluster.create_database(f"rollover{k}")
                pg = PgSettings(f"postgresql://postgres@127.0.0.1:{cluster.port}/rollover{k}", cluster.password)
                ring = KeyRing(home / "keys", home / "master.key", PgKeyStore(pg))
            ring.init()
            how = "made ahead (worker thread)" if ahead else "made on demand (event loop)"
            frozen = freezer(cluster) if store == "PostgreSQL" else None
            results = asyncio.run(walk(ring, home / "journal", n, ahead=ahead, frozen=frozen))
            ring.close()
            lines.append(row(f"{store}, {how}", results[:n]))
            if frozen is not None:
                stall, took, ok = results[n]
                frozen_lines.append(f"| {store}, {how} | {stall:.2f} | {took:.2f} | {'yes' if ok else 'no (E501)'} |")
            assert all(not math.isnan(r[0]) for r in results)
    text = "\n".join(lines + frozen_lines) + "\n"
    out = ROOT / "bench" / "results" / f"month-rollover-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.md"
    out.write_text(text)
    print(text)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
