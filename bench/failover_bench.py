#!/usr/bin/env python3
"""How long a half-dead primary takes to be found, and what its operators see (PROTOCOL.md §4
"Link health"), with real processes: `msc serve` and two `msc stub` (the primary plays half dead).

    .venv/bin/python bench/failover_bench.py [--settings default,test]

For each setting (heartbeat_s, ack_timeout_s) and each case:

* start   — the primary is half dead (`--half-dead`) from the start: serve ready → secondary up;
* traffic — a terminal sends a QV every 100 ms; the primary turns half dead (`/half-dead on`):
            → secondary up, → first answer from the secondary; fates of the requests meanwhile;
* idle    — no traffic; the primary turns half dead: → secondary up (found by its heartbeat).

"Secondary up" is read from /metrics (msc_upstream_up{endpoint="secondary"}), polled every
20 ms. Writes bench/results/failover-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
SETTINGS = {"default": (30.0, None), "test": (1.0, 0.5)}  # heartbeat_s, ack_timeout_s (None: default)


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


def ctl(port: int, command: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"/{command}\n".encode())
        return s.makefile().readline().strip()


def secondary_up(mport: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
        return 'msc_upstream_up{endpoint="secondary",upstream="clets"} 1.0' in r.read().decode()


async def until(predicate, timeout: float) -> float:
    t0 = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.02)
    return time.monotonic()


class Terminal:
    def __init__(self, reader, writer) -> None:
        self.r, self.w = reader, writer
        self.xid = 0
        self.answers: dict[int, asyncio.Future] = {}
        self.outputs: asyncio.Queue = asyncio.Queue()
        self.banner = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            head = await self.r.readexactly(9)
            length, t, xid = HEAD.unpack(head)
            payload = await self.r.readexactly(length - 5)
            if t == ord("M"):
                if not payload.startswith(b"SYS."):
                    self.w.write(HEAD.pack(5, ord("A"), xid))
                    self.outputs.put_nowait((time.monotonic(), payload.decode("ascii", "replace")))
                else:
                    self.w.write(HEAD.pack(5, ord("A"), xid))
                    if not self.banner.done():
                        self.banner.set_result(None)
            elif t in (ord("A"), ord("N")):
                fut = self.answers.pop(xid, None)
                if fut is not None and not fut.done():
                    fut.set_result((chr(t), payload.decode("ascii", "replace")))
            elif t == ord("H"):
                self.w.write(HEAD.pack(5, ord("H"), xid))

    async def send(self, text: str):
        self.xid += 1
        fut = asyncio.get_running_loop().create_future()
        self.answers[self.xid] = fut
        self.w.write(HEAD.pack(len(text) + 5, ord("M"), self.xid) + text.encode())
        return await asyncio.wait_for(fut, 30)


async def terminal(port: int) -> Terminal:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    t = Terminal(r, w)
    await asyncio.wait_for(t.banner, 30)  # acknowledged by the reader
    kind, payload = await t.send(f"{benchconfig.mnemonic(0)}.LOGON.BN0001.-.{benchconfig.PASSWORD}")
    assert kind == "A", payload
    return t


def start(tmp: Path, hb: float, ack: float | None, primary_half_dead: bool):
    p_port, p_ctl, s_port, s_ctl, port, mport = (free_port() for _ in range(6))
    cfg = benchconfig.write(tmp, port=port, metrics_port=mport, upstream_ports=[p_port, s_port], stations=1,
                            heartbeat_s=hb)
    if ack is not None:
        cfg.write_text(cfg.read_text().replace("max_in_flight = 100000", f"max_in_flight = 100000\nack_timeout_s = {ack}"))
    procs = []
    for port_, ctl_, extra in ((p_port, p_ctl, ["--half-dead"] if primary_half_dead else []), (s_port, s_ctl, [])):
        procs.append(subprocess.Popen([*MSC, "stub", "--role", "clets", "--listen", f"127.0.0.1:{port_}", "--control",
                                       f"127.0.0.1:{ctl_}", "--heartbeat-s", str(hb), *extra],
                                      stderr=subprocess.DEVNULL))
        wait_port(port_)
    ready = tmp / "ready"
    procs.append(subprocess.Popen([*MSC, "serve", "--config", str(cfg), "--ready-file", str(ready)],
                                  stderr=open(tmp / "serve.err", "w")))
    while not ready.exists():
        time.sleep(0.01)
    return procs, port, mport, p_ctl


def stop(procs) -> None:
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


async def case_start(hb, ack) -> dict:
    with tempfile.TemporaryDirectory() as d:
        procs, _port, mport, _c = start(Path(d), hb, ack, True)
        t0 = time.monotonic()  # serve is ready: its links have started
        try:
            t1 = await until(lambda: secondary_up(mport), 120)
        finally:
            stop(procs)
    return {"secondary_up_s": round(t1 - t0, 3)}


async def case_traffic(hb, ack) -> dict:
    with tempfile.TemporaryDirectory() as d:
        procs, port, mport, p_ctl = start(Path(d), hb, ack, False)
        try:
            t = await terminal(port)
            fates = {"answered": 0, "E302": 0, "refused E302": 0, "other": 0}
            stop_ev = asyncio.Event()
            first_after: list[float] = []
            t_fault = [0.0]

            async def loop():
                i = 0
                while not stop_ev.is_set():
                    kind, payload = await t.send(f"{benchconfig.mnemonic(0)}{i:05d}.QV.CA0130000.LIC/FO{i}")
                    if kind == "N":
                        fates["refused E302" if payload.startswith("E302") else "other"] += 1
                    i += 1
                    await asyncio.sleep(0.1)

            async def drain():
                while True:
                    at, text = await t.outputs.get()
                    key = text.split(".", 2)[1]
                    if key == "QV":
                        fates["answered"] += t_fault[0] > 0
                        if t_fault[0] and at > t_fault[0] and not first_after:
                            first_after.append(at)
                    elif text.split(".", 2)[2].startswith("E302"):
                        fates["E302"] += 1
                    else:
                        fates["other"] += 1

            tasks = [asyncio.create_task(loop()), asyncio.create_task(drain())]
            await asyncio.sleep(1.0)
            t_fault[0] = time.monotonic()
            assert ctl(p_ctl, "half-dead on") == "OK"
            t1 = await until(lambda: secondary_up(mport), 120)
            await until(lambda: bool(first_after), 60)
            await asyncio.sleep(1.0)
            stop_ev.set()
            for task in tasks:
                task.cancel()
        finally:
            stop(procs)
    return {"secondary_up_s": round(t1 - t_fault[0], 3), "first_answer_after_fault_s": round(first_after[0] - t_fault[0], 3),
            "fates_after_fault": fates}


async def case_idle(hb, ack) -> dict:
    with tempfile.TemporaryDirectory() as d:
        procs, _port, mport, p_ctl = start(Path(d), hb, ack, False)
        try:
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            assert ctl(p_ctl, "half-dead on") == "OK"
            t1 = await until(lambda: secondary_up(mport), 180)
        finally:
            stop(procs)
    return {"secondary_up_s": round(t1 - t0, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default="default,test")
    args = ap.parse_args()
    results = {}
    for name in args.settings.split(","):
        hb, ack = SETTINGS[name]
        eff = ack if ack is not None else min(10.0, 2 * hb)
        r = {"heartbeat_s": hb, "ack_timeout_s": eff}
        for case, fn in (("start", case_start), ("traffic", case_traffic), ("idle", case_idle)):
            r[case] = asyncio.run(fn(hb, ack))
            print(name, case, r[case], flush=True)
        results[name] = r
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"failover-{stamp}.json").write_text(json.dumps(results, indent=1))
    lines = [f"# Half-dead primary: detection and failover ({stamp})", "",
             "`.venv/bin/python bench/failover_bench.py` — real `msc serve` and two `msc stub`; the primary plays "
             "half dead (accepts and reads, never answers). Times from the fault (or from serve ready) to "
             "`msc_upstream_up{endpoint=\"secondary\"} 1`, polled every 20 ms.", "",
             "| setting | heartbeat_s | ack_timeout_s | half dead from the start | under traffic | first answer after | idle "
             "| bound (3 × heartbeat_s) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['heartbeat_s']:g} | {r['ack_timeout_s']:g} | {r['start']['secondary_up_s']:.2f} s | "
                     f"{r['traffic']['secondary_up_s']:.2f} s | {r['traffic']['first_answer_after_fault_s']:.2f} s | "
                     f"{r['idle']['secondary_up_s']:.2f} s | {3 * r['heartbeat_s']:g} s |")
    lines += ["", "Fates of the requests sent under traffic from the fault on (every one has exactly one):", ""]
    for name, r in results.items():
        lines.append(f"- {name}: {r['traffic']['fates_after_fault']}")
    (out / f"failover-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
