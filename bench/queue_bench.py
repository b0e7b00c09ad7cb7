#!/usr/bin/env python3
"""Queue bounds under bursts, and the memory they cost (issue 14 item 4), with real processes:
`msc serve` and an `msc stub` whose control port pushes the burst.

    .venv/bin/python bench/queue_bench.py [--queue-max 10000] [--factor 3] [--am-count 3000]
                                          [--am-size 30000] [--burst-size 0]

Two cases, each on a fresh switch:

* burst — the stub pushes ``factor × queue_max`` unsolicited messages (``BURST``, back to back,
  without waiting for answers) to one mnemonic whose terminal is logged off. Read from
  /metrics every 20 ms during the burst: the fullest queue (``msc_delivery_queue_depth_max``,
  or ``msc_delivery_queued`` on a switch that does not have it). Counted: the stub's answers
  (``A`` / ``E307``). Then the terminal logs on and acknowledges everything; RSS of `msc serve`
  (its main process; the journal writer process apart) before the burst, at its peak, when the
  queue is full, and after the queue drained.
* am — a terminal sends ``am-count`` administrative messages of ``am-size`` bytes to another
  terminal that is logged off, then logs off itself; RSS before, after, after the recipient
  drained its queue.

"Before" is measured after a warm-up (a few hundred messages delivered), so that lazily
imported code and first-use caches are not counted as the burst's. Writes
bench/results/queues-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

import benchconfig  # noqa: E402

MSC = [sys.executable, "-m", "msc"]
HEAD = struct.Struct(">IBI")
TERMINAL, RECIPIENT = benchconfig.mnemonic(0), benchconfig.mnemonic(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in open(f"/proc/{pid}/task/{tid}/children").read().split()]
    return out


def metrics(mport: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+|NaN)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def fullest(m: dict[str, float]) -> float:
    """The deepest queue: the per-endpoint maximum if the switch reports it, else the total."""
    return m.get("msc_delivery_queue_depth_max", m.get("msc_delivery_queued", 0.0))


async def ctl(port: int, command: str, timeout: float = 600) -> str:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(command.encode() + b"\n")
    await w.drain()
    line = await asyncio.wait_for(r.readline(), timeout)
    w.close()
    return line.decode().strip()


class Terminal:
    """A terminal that acknowledges every output (``ack``) and counts them."""

    def __init__(self, reader, writer) -> None:
        self.r, self.w = reader, writer
        self.xid = 0
        self.answers: dict[int, asyncio.Future] = {}
        self.received = 0
        self.received_bytes = 0
        self.banner = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                length, t, xid = HEAD.unpack(await self.r.readexactly(9))
                payload = await self.r.readexactly(length - 5)
                if t == ord("M"):
                    self.w.write(HEAD.pack(5, ord("A"), xid))
                    if payload.startswith(b"SYS."):
                        if not self.banner.done():
                            self.banner.set_result(None)
                    else:
                        self.received += 1
                        self.received_bytes += len(payload)
                elif t in (ord("A"), ord("N")):
                    fut = self.answers.pop(xid, None)
                    if fut is not None and not fut.done():
                        fut.set_result((chr(t), payload.decode("ascii", "replace")))
                elif t == ord("H"):
                    self.w.write(HEAD.pack(5, ord("H"), xid))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send_nowait(self, text: str) -> asyncio.Future:
        self.xid += 1
        fut = asyncio.get_running_loop().create_future()
        self.answers[self.xid] = fut
        self.w.write(HEAD.pack(len(text) + 5, ord("M"), self.xid) + text.encode())
        return fut

    async def send(self, text: str):
        return await asyncio.wait_for(self.send_nowait(text), 60)

    async def close(self) -> None:
        await self.send(f"{self.mnemonic}.LOGOFF")
        self.w.close()
        self.task.cancel()


async def terminal(port: int, mnemonic: str) -> Terminal:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    t = Terminal(r, w)
    t.mnemonic = mnemonic
    await asyncio.wait_for(t.banner, 30)
    kind, payload = await t.send(f"{mnemonic}.LOGON.BN0001.-.{benchconfig.PASSWORD}")
    assert kind == "A", payload
    return t


class Switch:
    def __init__(self, tmp: Path, queue_max: int) -> None:
        self.up, self.ctl, self.port, self.mport = (free_port() for _ in range(4))
        cfg = benchconfig.write(tmp, port=self.port, metrics_port=self.mport, upstream_ports=[self.up], stations=2)
        cfg.write_text(cfg.read_text().replace("queue_max = 100000", f"queue_max = {queue_max}"))
        self.procs = [subprocess.Popen([*MSC, "stub", "--role", "clets", "--listen", f"127.0.0.1:{self.up}",
                                        "--control", f"127.0.0.1:{self.ctl}", "--resend-s", "0"],
                                       stderr=subprocess.DEVNULL)]
        wait_port(self.up)
        wait_port(self.ctl)
        ready = tmp / "ready"
        self.serve = subprocess.Popen([*MSC, "serve", "--config", str(cfg), "--ready-file", str(ready)],
                                      stderr=open(tmp / "serve.err", "w"))
        self.procs.append(self.serve)
        while not ready.exists():
            if self.serve.poll() is not None:
                raise RuntimeError((tmp / "serve.err").read_text())
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.serve.pid

    def writer_rss(self) -> float:
        return sum(rss_mb(c) for c in children(self.pid))

    async def trims(self) -> dict:
        m = await asyncio.to_thread(metrics, self.mport)
        return {"trims": m.get("msc_memory_trims_total", 0.0),
                "trimmed_mb": round(m.get("msc_memory_trimmed_bytes_total", 0.0) / 2**20, 1),
                "read_back": m.get("msc_delivery_read_back_total", 0.0)}

    async def queued(self) -> float:
        return (await asyncio.to_thread(metrics, self.mport)).get("msc_delivery_queued", 0.0)

    async def until_queued(self, n: float, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while await self.queued() != n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue did not reach {n}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def warm_up(sw: Switch) -> None:
    """Messages of each kind the case will use, delivered and acknowledged: first-use costs paid."""
    t = await terminal(sw.port, RECIPIENT)
    for _ in range(100):
        assert (await ctl(sw.ctl, f"NOTIFY AM {RECIPIENT} CA0130000")) == "A"
    sender = await terminal(sw.port, TERMINAL)
    for i in range(100):
        kind, text = await sender.send(f"{TERMINAL}W{i}.AM.CA0130000.{RECIPIENT}.TXT WARM UP {'W' * 2000}")
        assert kind == "A", text
    while t.received < 200:
        await asyncio.sleep(0.05)
    await sw.until_queued(0)
    await sender.close()
    await t.close()
    await asyncio.sleep(1.0)


async def settle_rss(pid: int, seconds: float = 7.0) -> float:
    """RSS ``seconds`` from now: the switch looks every 5 s whether a burst left freed memory to
    give back (msc.memory), so a figure taken sooner may not include it."""
    await asyncio.sleep(seconds)
    return rss_mb(pid)


async def case_burst(tmp: Path, queue_max: int, factor: int, size: int) -> dict:
    sw = Switch(tmp, queue_max)
    try:
        await warm_up(sw)
        rss0, writer0 = await settle_rss(sw.pid), sw.writer_rss()
        count = factor * queue_max
        line = (f"NOTIFY AM {RECIPIENT} CA0130000" if size <= 0 else
                f"{RECIPIENT}.AM.CA0130000.TXT BURST {'B' * size}")
        peak = {"depth": 0.0, "rss": rss0}
        done = asyncio.Event()

        async def watch():
            while not done.is_set():
                m = await asyncio.to_thread(metrics, sw.mport)
                peak["depth"] = max(peak["depth"], fullest(m))
                peak["rss"] = max(peak["rss"], rss_mb(sw.pid))
                await asyncio.sleep(0.02)

        w = asyncio.create_task(watch())
        t0 = time.monotonic()
        result = await ctl(sw.ctl, f"BURST {count} {line}")
        burst_s = time.monotonic() - t0
        await asyncio.sleep(0.3)
        done.set()
        await w
        tally = dict(kv.split("=") for kv in result.split()[2:])
        accepted = int(tally.get("A", 0))
        queued = await sw.queued()
        rss_full = await settle_rss(sw.pid)
        t1 = time.monotonic()
        t = await terminal(sw.port, RECIPIENT)
        while t.received < accepted:
            await asyncio.sleep(0.05)
        await sw.until_queued(0)
        drain_s = time.monotonic() - t1
        await t.close()
        rss_after = await settle_rss(sw.pid)
        rss_after_30 = await settle_rss(sw.pid, 23.0)
        return {"queue_max": queue_max, "burst": count, "message_bytes": size or "notification", "answers": tally,
                "burst_s": round(burst_s, 2), "peak_queue_depth": peak["depth"], "queued_after_burst": queued,
                "delivered": t.received, "drain_s": round(drain_s, 2),
                "rss_before_mb": round(rss0, 1), "rss_peak_mb": round(peak["rss"], 1),
                "rss_queue_full_mb": round(rss_full, 1), "rss_after_drain_mb": round(rss_after, 1),
                "rss_after_vs_before": round(rss_after / rss0 - 1, 4), "rss_after_30s_mb": round(rss_after_30, 1),
                "writer_rss_before_mb": round(writer0, 1), "writer_rss_after_mb": round(sw.writer_rss(), 1),
                **await sw.trims()}
    finally:
        sw.stop()


async def case_am(tmp: Path, queue_max: int, count: int, size: int) -> dict:
    sw = Switch(tmp, queue_max)
    try:
        await warm_up(sw)
        rss0 = await settle_rss(sw.pid)
        sender = await terminal(sw.port, TERMINAL)
        body = "A" * size
        t0 = time.monotonic()
        codes: dict[str, int] = {}
        futs = []
        for i in range(count):
            futs.append(sender.send_nowait(f"{TERMINAL}{i:05d}.AM.CA0130000.{RECIPIENT}.TXT {i} {body}"))
            if len(futs) >= 200:
                for kind, text in await asyncio.gather(*futs):
                    k = "A" if kind == "A" else text.split(" ")[0]
                    codes[k] = codes.get(k, 0) + 1
                futs = []
        for kind, text in await asyncio.gather(*futs):
            k = "A" if kind == "A" else text.split(" ")[0]
            codes[k] = codes.get(k, 0) + 1
        send_s = time.monotonic() - t0
        await sender.close()
        await sw.until_queued(codes.get("A", 0))
        rss_queued = await settle_rss(sw.pid)
        t1 = time.monotonic()
        t = await terminal(sw.port, RECIPIENT)
        while t.received < codes.get("A", 0):
            await asyncio.sleep(0.05)
        await sw.until_queued(0)
        drain_s = time.monotonic() - t1
        await t.close()
        rss_after = await settle_rss(sw.pid)
        rss_after_30 = await settle_rss(sw.pid, 23.0)
        per_1000 = (rss_queued - rss0) / max(codes.get("A", 1), 1) * 1000
        return {"messages": count, "bytes_each": size, "answers": codes, "send_s": round(send_s, 2),
                "drain_s": round(drain_s, 2), "rss_before_mb": round(rss0, 1),
                "rss_queued_sender_gone_mb": round(rss_queued, 1), "mb_per_1000_queued": round(per_1000, 2),
                "rss_after_drain_mb": round(rss_after, 1), "rss_after_vs_before": round(rss_after / rss0 - 1, 4),
                "rss_after_30s_mb": round(rss_after_30, 1), "delivered": t.received, **await sw.trims()}
    finally:
        sw.stop()


def markdown(res: dict) -> str:
    b, a = res.get("burst"), res.get("am")
    out = [f"# Queue bounds under bursts — {res['stamp']}", "", f"`{res['command']}` (commit {res['commit']})", ""]
    if b:
        out += ["## Upstream burst to one logged-off mnemonic", "",
                "| queue_max | burst | answers | peak queue | RSS before | peak | queue full | after drain | after/before |",
                "|---|---|---|---|---|---|---|---|---|",
                f"| {b['queue_max']} | {b['burst']} | {b['answers']} | {b['peak_queue_depth']:.0f} | "
                f"{b['rss_before_mb']} MB | {b['rss_peak_mb']} MB | {b['rss_queue_full_mb']} MB | "
                f"{b['rss_after_drain_mb']} MB | {b['rss_after_vs_before']:+.1%} |", "",
                f"Burst answered in {b['burst_s']} s; {b['delivered']} delivered in {b['drain_s']} s after logon. "
                f"Journal writer process: {b['writer_rss_before_mb']} → {b['writer_rss_after_mb']} MB.", ""]
    if a:
        out += ["## Administrative messages queued for a logged-off terminal", "",
                "| messages × bytes | answers | RSS before | queued, sender gone | per 1,000 queued | after drain | after/before |",
                "|---|---|---|---|---|---|---|",
                f"| {a['messages']} × {a['bytes_each']} | {a['answers']} | {a['rss_before_mb']} MB | "
                f"{a['rss_queued_sender_gone_mb']} MB | {a['mb_per_1000_queued']} MB | {a['rss_after_drain_mb']} MB | "
                f"{a['rss_after_vs_before']:+.1%} |", "",
                f"Sent in {a['send_s']} s; {a['delivered']} delivered in {a['drain_s']} s after logon.", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue-max", type=int, default=10000)
    ap.add_argument("--factor", type=int, default=3, help="burst = factor x queue_max")
    ap.add_argument("--burst-size", type=int, default=0, help="bytes of text per burst message (0: a generated AM)")
    ap.add_argument("--am-count", type=int, default=3000)
    ap.add_argument("--am-size", type=int, default=30000)
    ap.add_argument("--cases", default="burst,am")
    ap.add_argument("--tag", default="", help="added to the result file names (e.g. before/after)")
    args = ap.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    res = {"stamp": stamp, "commit": commit, "command": " ".join(["bench/queue_bench.py", *sys.argv[1:]])}
    cases = args.cases.split(",")
    if "burst" in cases:
        with tempfile.TemporaryDirectory() as d:
            res["burst"] = asyncio.run(case_burst(Path(d), args.queue_max, args.factor, args.burst_size))
            print(json.dumps(res["burst"]), flush=True)
    if "am" in cases:
        with tempfile.TemporaryDirectory() as d:
            res["am"] = asyncio.run(case_am(Path(d), max(args.queue_max, args.am_count), args.am_count, args.am_size))
            print(json.dumps(res["am"]), flush=True)
    out = ROOT / "bench" / "results"
    name = f"queues-{stamp}{'-' + args.tag if args.tag else ''}"
    (out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
