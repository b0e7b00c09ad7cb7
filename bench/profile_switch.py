#!/usr/bin/env python3
"""Where `msc serve` spends its CPU under load: py-spy samples, summarised.

    .venv/bin/python bench/profile_switch.py [--terminals 64] [--seconds 20]

Starts a stub (0 ms) and the real `msc serve` (synchronous = full) as `make bench` does, drives
--terminals closed-loop terminals with bench/loadgen.py, and samples the switch and its journal
writer process with py-spy (`--subprocesses --nonblocking`, so sampling does not stop the switch).
Writes bench/results/profile-<stamp>.md: self time by function and by area (protocol, journal,
routing, server, event loop, sockets …), and inclusive time of the top functions. The collapsed
stacks go to bench/results/profile-<stamp>.folded.gz for a flame graph (flamegraph.pl, speedscope).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import PY, ROOT, Msc, in_service, pg_storage  # noqa: E402

AREAS = (  # (label, substring of the frame's file) — first match wins
    ("protocol (parse, format, framing)", "msc/protocol/"),
    ("journal: writer, seal, index", "msc/journal/"),
    ("routing and delivery", "msc/routing/"),
    ("authorization, sessions, pools", "msc/mnemonics/"),
    ("server (connections, switch)", "msc/server/"),
    ("metrics, logs", "msc/ops/"),
    ("prometheus-client", "prometheus_client"),
    ("structlog", "structlog"),
    ("cryptography (AES-GCM, HMAC)", "cryptography"),
    ("sqlite3", "sqlite3"),
    ("msgspec", "msgspec"),
    ("event loop: uvloop native (epoll, socket I/O) and asyncio", "asyncio/"),
    ("event loop: uvloop native (epoll, socket I/O) and asyncio", "uvloop/"),
    ("multiprocessing / pipes", "multiprocessing"),
)


LINE = re.compile(r":\d+\)$")
OTHER = "other (stdlib, interpreter)"


def area(frame: str) -> str:
    for label, needle in AREAS:
        if needle in frame:
            return label
    return OTHER


def summarise(folded: list[str], top: int = 25) -> tuple[str, int]:
    self_fn: collections.Counter[str] = collections.Counter()
    self_area: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    per_pid: collections.Counter[str] = collections.Counter()
    writer_pids: set[str] = set()
    total = 0
    for line in folded:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        # py-spy names a frame "function (file:line)"; a function's lines are summed together.
        frames = [LINE.sub(")", f) for f in stack.split(";")]
        proc = ""
        while frames and frames[0].startswith("process "):  # a child is "process parent;process child;…"
            proc = frames.pop(0)
        if proc:
            pid = proc.split(":", 1)[0]
            per_pid[pid] += count
            if "msc.journal.writerproc" in proc:
                writer_pids.add(pid)
        if not frames:
            continue
        total += count
        self_fn[frames[-1]] += count
        # Self time in the stdlib or the interpreter belongs to the innermost msc/library frame above it.
        self_area[next((a for a in map(area, reversed(frames)) if a != OTHER), OTHER)] += count
        for f in set(frames):
            incl[f] += count

    def pct(c: int) -> str:
        return f"{100 * c / total:.1f} %" if total else "-"

    out = [f"{total:,} samples.", "", "## By process", "", "| process | share |", "|---|---|"]
    per_proc = collections.Counter({"msc serve (event loop, its threads)": 0, "journal writer process (commit, indexer)": 0})
    for pid, c in per_pid.items():
        per_proc["journal writer process (commit, indexer)" if pid in writer_pids else "msc serve (event loop, its threads)"] += c
    out += [f"| {p} | {pct(c)} |" for p, c in per_proc.most_common()]
    out += ["", "## Self time by area", "", "| area | share |", "|---|---|"]
    out += [f"| {a} | {pct(c)} |" for a, c in self_area.most_common()]
    out += ["", f"## Self time, top {top} functions", "", "| function | share |", "|---|---|"]
    out += [f"| `{f}` | {pct(c)} |" for f, c in self_fn.most_common(top)]
    out += ["", f"## Inclusive time, top {top} msc functions", "", "| function | share |", "|---|---|"]
    out += [f"| `{f}` | {pct(c)} |" for f, c in incl.most_common() if "msc/" in f][:top]
    return "\n".join(out) + "\n", total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--terminals", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--open-rate", type=float, default=0,
                    help="offer this many transactions/s (open loop) instead of the closed loop")
    ap.add_argument("--postgresql", choices=("local", "sync-standby"),
                    help="msc on PostgreSQL (a throw-away cluster, tests/pg.py; in service as run_bench's) "
                         "instead of SQLite")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        extra, what = "", "SQLite, synchronous = full"
        if args.postgresql:
            from tests import pg

            if reason := pg.missing_reason():
                sys.exit(f"PostgreSQL: {reason}")
            if args.postgresql == "sync-standby":
                primary, _standby = stack.enter_context(pg.primary_with_standby(durable=True))
            else:
                primary = stack.enter_context(pg.PgCluster.create(durable=True, name="profile"))
            in_service(primary)
            extra = pg_storage(Path(tempfile.mkdtemp(prefix="msc-profile-pg-")), primary, "profile", "msc")
            what = f"PostgreSQL ({args.postgresql})"
        profile(args, extra, what)


def profile(args: argparse.Namespace, extra: str, what: str) -> None:
    spy = Path(PY).parent / "py-spy"
    if not spy.exists():
        sys.exit("py-spy is not installed: run `make bench` once (it installs the bench extras)")
    work = Path(tempfile.mkdtemp(prefix="msc-profile-"))
    m = Msc(work / "msc", sync="full", latency_ms=0, stations=args.terminals + 10, extra=extra)
    raw = work / "stacks.folded"
    try:
        load = subprocess.Popen([PY, str(ROOT / "bench" / "loadgen.py"), "switch", "--port", str(m.port),
                                 "--terminals", str(args.terminals), "--duration", str(args.seconds + 4),
                                 "--warmup", "2"] + (["--rate", str(args.open_rate)] if args.open_rate else []),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(3)
        subprocess.run([str(spy), "record", "--pid", str(m.pid), "--subprocesses", "--nonblocking", "--format", "raw",
                        "--rate", str(args.rate), "--duration", str(args.seconds), "--output", str(raw)],
                       check=True, capture_output=True, timeout=args.seconds + 120)
        stdout, _ = load.communicate(timeout=120)
    finally:
        m.stop()
    lines = raw.read_text().splitlines()
    shutil.rmtree(work, ignore_errors=True)
    tps = stdout.strip().splitlines()[-1] if stdout.strip() else "{}"
    body, total = summarise(lines)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    md = (f"# Profile of `msc serve` {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n\n"
          f"{args.terminals} terminals, {f'{args.open_rate:g}/s offered' if args.open_rate else 'closed loop'}, stub 0 ms, "
          f"{what}; py-spy {args.rate} Hz for "
          f"{args.seconds} s (`bench/profile_switch.py`). Load generator result: `{tps}`\n\n{body}")
    (out / f"profile-{stamp}.md").write_text(md)
    with gzip.open(out / f"profile-{stamp}.folded.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    print(md)


if __name__ == "__main__":
    main()
