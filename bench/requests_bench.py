"""Cost of the request lifecycle (msc.routing.requests) per request, in-process.

Each round runs N requests through open → match → first part → window end → remembered, and,
in the same run, the same N through the structures the router used before multi-part answers
(a FIFO deque per header and per link; the first answer closed the request; nothing
remembered). Every figure is a ratio within one run (PERFORMANCE.md). Writes
bench/results/requests-<time>.json and .md.

    python bench/requests_bench.py [--requests 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import deque
from pathlib import Path

from msc.routing.requests import Pending, RequestTable

RESULTS = Path(__file__).resolve().parent / "results"


def requests(n: int) -> list[Pending]:
    # Distinct headers (clients with a ref per message), 64 mnemonics.
    return [Pending(txn=str(i), header=f"T{i % 64:03d}{i // 64 % 1000000:06d}", mnemonic=f"T{i % 64:03d}",
                    endpoint="E", user="U", taf=None, ori=None, mke="QW", category="cjis", upstream="clets")
            for i in range(n)]


def lifecycle(n: int, rate: float) -> float:
    """µs per request through RequestTable at ``rate`` requests/s of simulated time."""
    t = [0.0]
    table = RequestTable(late_answer_s=3600, clock=lambda: t[0])
    ps = requests(n)
    sweep_every = max(1, int(rate * 0.25))  # the router sweeps every 0.25 s
    start = time.perf_counter()
    for i, p in enumerate(ps):
        t[0] = i / rate
        table.opened(p, 30)
        m = table.match(p.header)
        table.part(m.pending)
        if i % sweep_every == 0:
            table.expire()
    t[0] += 60
    table.expire()
    return (time.perf_counter() - start) / n * 1e6


def before(n: int, rate: float) -> float:
    """µs per request through the previous router's structures."""
    waiting: dict[str, deque] = {}
    by_link: deque = deque()
    ps = requests(n)
    sweep_every = max(1, int(rate * 0.25))
    start = time.perf_counter()
    for i, p in enumerate(ps):
        now = i / rate
        p.sent_at = now
        waiting.setdefault(p.header, deque()).append(p)
        by_link.append(p)
        q = waiting[p.header]
        first = q[0]
        first.done = True
        q.remove(first)
        if not q:
            del waiting[p.header]
        if i % sweep_every == 0:
            while by_link and (by_link[0].done or now - by_link[0].sent_at >= 30):
                by_link.popleft()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=7000.0, help="simulated requests per second")
    a = ap.parse_args()
    rows = []
    for _ in range(a.rounds):
        rows.append({"before_us": before(a.requests, a.rate), "lifecycle_us": lifecycle(a.requests, a.rate)})
    b = statistics.median(r["before_us"] for r in rows)
    lc = statistics.median(r["lifecycle_us"] for r in rows)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    out = {"requests": a.requests, "rounds": a.rounds, "rate": a.rate, "rows": rows,
           "median_before_us": b, "median_lifecycle_us": lc, "ratio": lc / b}
    (RESULTS / f"requests-{stamp}.json").write_text(json.dumps(out, indent=2))
    md = (f"# Request lifecycle cost ({stamp})\n\n{a.requests} requests × {a.rounds} rounds at a simulated "
          f"{a.rate:g}/s, one process.\n\n| structure | median µs/request |\n|---|---|\n"
          f"| before multi-part answers (deques, first answer closes) | {b:.2f} |\n"
          f"| RequestTable (windows, remembered for late parts) | {lc:.2f} |\n\n"
          f"Ratio {lc / b:.1f}× — per request, {lc - b:.1f} µs more; at {a.rate:g} requests/s that is "
          f"{(lc - b) * a.rate / 1e4:.1f} % of one core.\n")
    (RESULTS / f"requests-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
