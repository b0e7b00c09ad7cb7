#!/usr/bin/env python3
"""Bounded under abuse (issue 14): what an attacker on the network costs the real ``msc serve``.

Three scenarios, each against a fresh switch (its own data directory, a clets stub, scrypt at the
production cost 15), each measured in one run so that the figures compare within it:

``flood``  one connection that never logs on sends refused messages as fast as it can (and
           reconnects whenever it is closed), 32 KiB of ``A`` and then 32 KiB of ``0xFF``; a
           canary terminal sends a QV every 20 ms meanwhile. Phases: canary alone, canary + ASCII
           flood, canary + 0xFF flood. Per phase: journal growth (bytes of the journal files, per
           minute), the canary's p50/p99, the switch's and the journal writer's RSS.
``idle``   2,000 connections that never log on (from 100 loopback addresses) on the plain
           listener and 2,000 TCP connections that never start the TLS handshake on the TLS
           listener; a real terminal connects, logs on, queries and logs off on each listener
           throughout. Per connection: when it was closed, against its deadline.
``logon``  50 connections guessing passwords as fast as the switch answers, from one address and
           from 50 addresses; a legitimate operator logs on (and off) every 0.25 s meanwhile.
           The legitimate LOGON's round trip: p50/p99, alone and under each flood — on a switch
           with the defaults and, in the same run (the kinds and switches interleaved), on one
           with the logon gate lifted (``max_logon_checks`` 64, no per-address failure rate):
           what the gate is worth, measured beside it; and one with ``logon_throttle_delay_s = 0``
           (an address past its failure rate answered E307 at once). The guessers run in a process of their
           own at nice 10 (``--guessers-nice``): on 2 cores a load generator beside the switch
           takes the switch's CPU, which an attacker on the network cannot.

It speaks the wire protocol itself (PROTOCOL.md §1), so it also runs against an older msc on
``PYTHONPATH`` (``--legacy`` leaves out the configuration keys that version does not know).
Writes ``bench/results/abuse-<stamp>.json`` and ``.md``.

    python bench/abuse_bench.py [--scenarios flood,idle,logon] [--phase-s 60] [--legacy] [--no-gate-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD = struct.Struct(">IBI")
RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "abuse horse battery staple"
MSC = [sys.executable, "-m", "msc"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(t: str, xid: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(len(payload) + 5, ord(t), xid) + payload


def pct(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return round(values[0] * 1000, 1) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- the switch under test ----------------------------------------------------------------------

def write_config(d: Path, *, port: int, tls_port: int, metrics_port: int, stub_port: int, legacy: bool,
                 tls_dir: Path | None, switch_extra: str = "") -> Path:
    from msc.config.model import UserEntry, UsersFile
    from msc.keyring import KeyRing
    from msc.mnemonics import userfile
    from msc.mnemonics.passwords import hash_password

    new = ""  # issue 14's settings at their defaults (logon_timeout_s 60, tls_handshake_timeout_s 10 …)
    tls = ""
    if tls_dir is not None:
        tls = f'''
[[listener]]
name = "tls"
bind = "127.0.0.1:{tls_port}"
rate_limit = 200{new}
tls = {{ cert = "{tls_dir}/server.crt", key = "{tls_dir}/server.key" }}
'''
    stations = "\n".join(f'''[[station]]
mnemonic = "AB{i:02d}"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
addresses = ["127.0.0.1"]
authorizations = ["cjis"]
''' for i in range(8))
    cfg = d / "msc.toml"
    cfg.write_text(f'''[switch]
name = "ABUSE-MSC"
data_dir = "data"
password_cost = 15
{switch_extra}
[[listener]]
name = "terminals"
bind = "127.0.0.1:{port}"
rate_limit = 200{new}
{tls}
[metrics]
bind = "127.0.0.1:{metrics_port}"

[journal]
dir = "data/journal"
key_file = "data/keys/master.key"
verify_interval_s = 0

[[upstream]]
name = "clets"
endpoints = ["127.0.0.1:{stub_port}"]

[[route]]
mke = ["QW", "QV"]
upstream = "clets"
category = "cjis"

[[agency]]
ori = "CA0130000"
name = "Bench County"

{stations}
[[pool]]
name = "MDTS"                          # mobile terminals: any loopback address may try to log on
ori = "CA0130000"
serves = ["CA0130000"]
mnemonics = ["MD01", "MD02", "MD03", "MD04"]
addresses = ["127.0.0.0/8"]
authorizations = ["cjis"]
''')
    today = dt.date.today()
    h = hash_password(PASSWORD, ln=15)
    users = tuple(UserEntry(id=f"OP{i:04d}", name=f"OPERATOR, NUMBER{i}", ori="CA0130000", role="full", password=h,
                            certified_until=today + dt.timedelta(days=365)) for i in range(8))
    userfile.write(d / "users.toml", UsersFile(user=users))
    KeyRing(d / "data" / "keys", d / "data" / "keys" / "master.key").init()
    return cfg


def make_tls(d: Path) -> Path:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    tls = d / "tls"
    tls.mkdir()
    (tls / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tls / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return tls


class Switch:
    def __init__(self, tmp: Path, *, legacy: bool, tls: bool, switch_extra: str = "") -> None:
        self.dir = tmp
        self.port, self.tls_port, self.metrics_port, self.stub_port = free_port(), free_port(), free_port(), free_port()
        tls_dir = make_tls(tmp) if tls else None
        self.cfg = write_config(tmp, port=self.port, tls_port=self.tls_port, metrics_port=self.metrics_port,
                                stub_port=self.stub_port, legacy=legacy, tls_dir=tls_dir, switch_extra=switch_extra)
        self.stub = subprocess.Popen([*MSC, "stub", "--role", "clets", "--listen", f"127.0.0.1:{self.stub_port}"],
                                     stdout=subprocess.DEVNULL, stderr=open(tmp / "stub.err", "w"))
        ready = tmp / "ready"
        self.serve = subprocess.Popen([*MSC, "serve", "--config", str(self.cfg), "--ready-file", str(ready)],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.err", "w"))
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((tmp / "serve.err").read_text()[-3000:])
            time.sleep(0.05)

    @property
    def journal(self) -> Path:
        return self.dir / "data" / "journal"

    def rss(self) -> dict:
        kids = children(self.serve.pid)
        return {"switch_mb": rss_mb(self.serve.pid), "writer_mb": max((rss_mb(k) for k in kids), default=0.0)}

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        for p in (self.serve, self.stub):
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


# -- clients -----------------------------------------------------------------------------------

class Conn:
    """A minimal client: frames in, frames out, answers H."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.buf = b""
        self.xid = 0

    @classmethod
    async def open(cls, port: int, *, source: str | None = None, tls: ssl.SSLContext | None = None) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls, local_addr=(source, 0) if source else None,
                                             server_hostname="127.0.0.1" if tls else None)
        return cls(r, w)

    async def frame(self, timeout: float = 30) -> tuple[str, int, bytes]:
        while True:
            if len(self.buf) >= 9:
                length, t, xid = HEAD.unpack_from(self.buf)
                if len(self.buf) >= 4 + length:
                    f = chr(t), xid, self.buf[9:4 + length]
                    self.buf = self.buf[4 + length:]
                    if f[0] == "H":
                        self.w.write(frame("H", xid))
                        continue
                    return f
            data = await asyncio.wait_for(self.r.read(65536), timeout)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    async def banner(self) -> None:
        t, xid, p = await self.frame()
        assert t == "M" and p.startswith(b"SYS.BANNER"), p
        self.w.write(frame("A", xid))

    async def send(self, text: str, timeout: float = 30) -> tuple[str, bytes]:
        self.xid += 1
        self.w.write(frame("M", self.xid, text.encode()))
        while True:
            t, xid, p = await self.frame(timeout)
            if t in "AN" and xid == self.xid:
                return t, p
            if t == "M":
                self.w.write(frame("A", xid))
                self.last_output = p

    async def output(self, timeout: float = 30) -> bytes:
        while True:
            t, xid, p = await self.frame(timeout)
            if t == "M" and not p.startswith(b"SYS."):
                self.w.write(frame("A", xid))
                return p

    def close(self) -> None:
        self.w.close()


async def canary(port: int, stop: asyncio.Event, out: list[float], failures: list[str]) -> None:
    c = await Conn.open(port)
    await c.banner()
    t, p = await c.send(f"AB00.LOGON.OP0000.-.{PASSWORD}")
    assert t == "A", p
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            t, p = await c.send(f"AB00C{i % 99999}.QV.CA0130000.LIC/CAN{i}", timeout=10)
            if t != "A":
                failures.append(p.decode(errors="replace"))
            else:
                await c.output(timeout=10)
                out.append(time.perf_counter() - t0)
        except (TimeoutError, ConnectionError) as exc:
            failures.append(repr(exc))
            return
        i += 1
        await asyncio.sleep(0.02)
    c.close()


async def flooder(port: int, stop: asyncio.Event, payload: bytes, stats: dict) -> None:
    """One connection at a time that never logs on and writes refused messages as fast as the
    socket takes them; reconnects when closed."""
    while not stop.is_set():
        try:
            c = await Conn.open(port, source="127.0.0.9")
        except OSError:
            await asyncio.sleep(0.01)
            continue
        stats["connections"] += 1

        async def drain_reads(c: Conn = c) -> None:
            try:
                while await c.r.read(65536):
                    pass
            except (ConnectionError, OSError):
                pass

        reader = asyncio.create_task(drain_reads())
        xid = 0
        try:
            while not stop.is_set() and not reader.done():
                xid += 1
                c.w.write(frame("M", xid, payload))
                stats["messages"] += 1
                stats["bytes"] += len(payload)
                await c.w.drain()
        except (ConnectionError, OSError):
            pass
        c.close()
        reader.cancel()


# -- scenarios ----------------------------------------------------------------------------------

FLOOD_PHASES = [("canary alone", None), ("canary + ASCII flood", b"A" * (32768 - 5)),
                ("canary + 0xFF flood", b"\xff" * (32768 - 5))]


def attributable(journal: Path, taf: str) -> tuple[int, int]:
    """Records of the flooding address, and their stored bytes (sealed blob, leaf, index tokens)."""
    import sqlite3

    n = size = 0
    for db in journal.glob("????-??.db"):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            a, b = conn.execute("SELECT count(*), coalesce(sum(length(blob) + length(leaf) + "
                                "coalesce(length(tokens), 0)), 0) FROM records WHERE taf = ?", (taf,)).fetchone()
            n, size = n + a, size + b
    return n, size


async def flood_phase(sw: Switch, payload: bytes | None, phase_s: float) -> dict:
    stop = asyncio.Event()
    lat: list[float] = []
    fails: list[str] = []
    stats = {"connections": 0, "messages": 0, "bytes": 0}
    tasks = [asyncio.create_task(canary(sw.port, stop, lat, fails))]
    await asyncio.sleep(2)  # the canary logged on and warm
    lat.clear()
    t0 = time.monotonic()
    if payload is not None:
        tasks.append(asyncio.create_task(flooder(sw.port, stop, payload, stats)))
    peak = {"switch_mb": 0.0, "writer_mb": 0.0}
    while time.monotonic() - t0 < phase_s:
        await asyncio.sleep(1)
        for k, v in sw.rss().items():
            peak[k] = max(peak[k], v)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"seconds": round(time.monotonic() - t0, 1), "canary_answers": len(lat), "canary_p50_ms": pct(lat, 50),
            "canary_p99_ms": pct(lat, 99), "canary_failures": fails[:5], "flood": stats, "peak_rss": peak}


def scenario_flood(tmp: Path, phase_s: float, legacy: bool, runner) -> dict:
    """Each phase on a fresh switch: the journal's size is read after the stop (the WAL then is
    checkpointed into the files, so the size is what the records really cost)."""
    out = {}
    for name, payload in FLOOD_PHASES:
        d = tmp / name.replace(" ", "-").replace("+", "")
        d.mkdir()
        sw = Switch(d, legacy=legacy, tls=False)
        try:
            j0 = dir_bytes(sw.journal)
            res = runner(flood_phase(sw, payload, phase_s))
            try:
                res["metrics"] = [line for line in sw.metrics().splitlines() if line.startswith(
                    ("msc_connections_closed_total", "msc_refusals_total", "msc_unauthenticated_events_total",
                     "msc_journal_records_total"))]
            except OSError:
                pass
        finally:
            sw.stop()
        grew = dir_bytes(sw.journal) - j0
        n, size = attributable(sw.journal, "7F000009")
        res.update({"journal_growth_bytes": grew, "journal_mb_per_min": round(grew / 1e6 / res["seconds"] * 60, 3),
                    "flooder_records": n, "flooder_record_bytes": size,
                    "flooder_kb_per_min": round(size / 1e3 / res["seconds"] * 60, 1)})
        out[name] = res
        print(f"  {name}: journal +{grew / 1e6:.2f} MB in {res['seconds']:.0f} s ({res['journal_mb_per_min']} MB/min); "
              f"the flooder's own records: {n}, {size / 1e3:.1f} kB; canary p50/p99 {res['canary_p50_ms']}/"
              f"{res['canary_p99_ms']} ms ({res['canary_answers']} answers, {len(res['canary_failures'])} failures); "
              f"flood {res['flood']}; peak RSS {res['peak_rss']}", flush=True)
    # The canary's own records grow the journal in proportion to its answers (more when it is
    # faster): what the flood added is the growth beyond the canary's bytes per answer.
    alone = out["canary alone"]
    per_answer = alone["journal_growth_bytes"] / max(1, alone["canary_answers"])
    for name, _p in FLOOD_PHASES[1:]:
        r = out[name]
        beyond = r["journal_growth_bytes"] - per_answer * r["canary_answers"]
        r["growth_beyond_canary_mb_per_min"] = round(beyond / r["seconds"] * 60 / 1e6, 3)
    return out


async def legit_logons(port: int, stop: asyncio.Event, lat: list[float], fails: list[str], *, station: str,
                       user: str, tls: ssl.SSLContext | None = None, every: float = 0.25) -> None:
    """Connect, acknowledge the banner, LOG ON (timed), query, log off, close; again."""
    while not stop.is_set():
        try:
            c = await Conn.open(port, tls=tls)
            await c.banner()
            t0 = time.perf_counter()
            t, p = await c.send(f"{station}.LOGON.{user}.-.{PASSWORD}", timeout=30)
            if t != "A":
                fails.append(p.decode(errors="replace"))
            else:
                lat.append(time.perf_counter() - t0)
                t, p = await c.send(f"{station}Q.QV.CA0130000.LIC/LEGIT", timeout=30)
                if t == "A":
                    await c.output(timeout=30)
                await c.send(f"{station}.LOGOFF", timeout=30)
            c.close()
        except (TimeoutError, ConnectionError, OSError) as exc:
            fails.append(repr(exc))
        await asyncio.sleep(every)


async def hold_idle(port: int, source: str, closed_after: list, *, send_banner_ack: bool) -> None:
    """A connection that never logs on: acknowledges the banner (or not), answers heartbeats;
    records when (and with which N xid 0) it was closed."""
    t0 = time.monotonic()
    try:
        c = await Conn.open(port, source=source)
    except OSError as exc:
        closed_after.append(("connect-failed", repr(exc), None))
        return
    last = None
    try:
        if send_banner_ack:
            await c.banner()
        while True:
            t, xid, p = await c.frame(timeout=600)
            if t == "N" and xid == 0:
                last = p.decode(errors="replace")
    except (ConnectionError, OSError, AssertionError, asyncio.IncompleteReadError):
        pass
    except TimeoutError:
        closed_after.append(("never", None, None))
        return
    closed_after.append(("closed", time.monotonic() - t0, last))
    c.close()


async def hold_tls_stalled(port: int, source: str, closed_after: list) -> None:
    """A TCP connection to a TLS listener that never sends its ClientHello."""
    t0 = time.monotonic()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError as exc:
        closed_after.append(("connect-failed", repr(exc), None))
        return
    try:
        while await asyncio.wait_for(r.read(65536), 600):
            pass
    except (ConnectionError, OSError):
        pass
    except TimeoutError:
        closed_after.append(("never", None, None))
        return
    closed_after.append(("closed", time.monotonic() - t0, None))
    w.close()


async def scenario_idle(sw: Switch, n: int, legacy: bool) -> dict:
    cctx = ssl.create_default_context(cafile=str(sw.dir / "tls" / "server.crt"))
    stop = asyncio.Event()
    lat_plain: list[float] = []
    lat_tls: list[float] = []
    fails_plain: list[str] = []
    fails_tls: list[str] = []
    legit = [asyncio.create_task(legit_logons(sw.port, stop, lat_plain, fails_plain, station="AB01", user="OP0001",
                                              every=0.5)),
             asyncio.create_task(legit_logons(sw.tls_port, stop, lat_tls, fails_tls, station="AB02", user="OP0002",
                                              tls=cctx, every=0.5))]
    idle: list = []
    stalled: list = []
    t0 = time.monotonic()
    holders = []
    for i in range(n):
        src = f"127.0.1.{1 + i % 100}"
        holders.append(asyncio.create_task(hold_idle(sw.port, src, idle, send_banner_ack=i % 2 == 0)))
        holders.append(asyncio.create_task(hold_tls_stalled(sw.tls_port, src, stalled)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    opened = time.monotonic() - t0
    timeout = 90 if not legacy else 40  # the deadlines are 60 s and 10 s
    done, pending = await asyncio.wait(holders, timeout=timeout)
    for t in pending:
        t.cancel()
    stop.set()
    await asyncio.gather(*legit, return_exceptions=True)

    def summary(rows: list) -> dict:
        closed = [s for kind, s, _n in rows if kind == "closed"]
        naks: dict = {}
        for kind, _s, nak in rows:
            if kind == "closed":
                naks[nak or "(no N: closed)"] = naks.get(nak or "(no N: closed)", 0) + 1
        return {"closed": len(closed), "connect_failed": sum(k == "connect-failed" for k, _s, _n in rows),
                "open_at_end": n - len(closed), "closed_with": naks,
                "closed_within_s": {"p50": round(statistics.median(closed), 2) if closed else None,
                                    "max": round(max(closed), 2) if closed else None}}

    out = {"connections_each": n, "opened_in_s": round(opened, 2), "idle_plain": summary(idle),
           "stalled_tls": summary(stalled),
           "legit_plain": {"logons": len(lat_plain), "p50_ms": pct(lat_plain, 50), "p99_ms": pct(lat_plain, 99),
                           "failures": len(fails_plain), "first_failures": fails_plain[:3]},
           "legit_tls": {"logons": len(lat_tls), "p50_ms": pct(lat_tls, 50), "p99_ms": pct(lat_tls, 99),
                         "failures": len(fails_tls), "first_failures": fails_tls[:3]},
           "rss": sw.rss()}
    print(f"  {json.dumps(out)}", flush=True)
    return out


async def guesser(port: int, stop: asyncio.Event, source: str, stats: dict, k: int) -> None:
    i = 0
    while not stop.is_set():
        try:
            c = await Conn.open(port, source=source)
            await c.banner()
            while not stop.is_set():
                i += 1
                # Real user IDs and unknown ones, through the pool (a station admits its address only).
                uid = f"OP000{3 + k % 5}" if i % 2 else f"ZZ{k:02d}{i % 100:02d}"
                t, p = await c.send(f"MDTS.LOGON.{uid}.-.guess-{k}-{i}", timeout=60)
                code = p.split(b" ", 1)[0].decode(errors="replace") if t == "N" else "A"
                stats[code] = stats.get(code, 0) + 1
        except (TimeoutError, ConnectionError, OSError, AssertionError):
            stats["closed"] = stats.get("closed", 0) + 1
            await asyncio.sleep(0.05)


#: The guessers' own process runs at this nice value (--guessers-nice): on a 2-core machine a load
#: generator beside the switch takes the switch's CPU, which an attacker on the network cannot;
#: niced, it gets the cores the switch leaves idle, and is still paced by the switch's answers.
GUESSERS_NICE = 10


def _guessers_main(port: int, sources: list[str], nice: int, stop, conn) -> None:
    """A child process: the guessers until ``stop`` (a multiprocessing Event) is set; sends the
    answers' tally through ``conn``."""
    if nice:
        os.nice(nice)

    async def run() -> dict:
        halt = asyncio.Event()
        stats: dict = {}
        tasks = [asyncio.create_task(guesser(port, halt, src, stats, k)) for k, src in enumerate(sources)]
        conn.send("started")
        while not stop.is_set():
            await asyncio.sleep(0.05)
        halt.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return stats

    conn.send(asyncio.run(run()))


class Guessers:
    """The guessers in a process of their own (:func:`_guessers_main`)."""

    async def start(self, port: int, sources: list[str], nice: int) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.stop_ev = ctx.Event()
        self.parent, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_guessers_main, args=(port, sources, nice, self.stop_ev, child), daemon=True)
        self.proc.start()
        assert await asyncio.get_running_loop().run_in_executor(None, self.parent.recv) == "started"

    async def stop(self, stats: dict) -> None:
        """Stop them; add their tally of answers to ``stats``."""
        self.stop_ev.set()
        tally = await asyncio.get_running_loop().run_in_executor(None, self.parent.recv)
        self.proc.join(30)
        for k, v in tally.items():
            stats[k] = stats.get(k, 0) + v


LOGON_KINDS = (("alone", None), ("50 guessers, one address", ["127.0.2.1"] * 50),
               ("50 guessers, 50 addresses", [f"127.0.3.{i + 1}" for i in range(50)]))


#: The logon gate lifted (the "before" of the same code, in the same run): checks as many as
#: there are guessers, no queue to speak of, no per-address failure rate.
NO_GATE = "max_logon_checks = 64\nlogon_queue = 100000\nlogon_failures_per_address = 1000000\n"


async def scenario_logon(switches: dict[str, Switch], phase_s: float, rounds: int = 3,
                         nice: int = GUESSERS_NICE) -> dict:
    """The kinds (and switches: the gate lifted, the defaults) interleaved, ``rounds`` times
    phase_s / rounds each, so that the machine's load drifting (other work on it) affects every
    kind alike; the figures are per switch and kind over all rounds."""
    names = [f"{label}: {name}" if len(switches) > 1 else name for label in switches for name, _s in LOGON_KINDS]
    lat: dict[str, list[float]] = {name: [] for name in names}
    fails: dict[str, list[str]] = {name: [] for name in names}
    stats: dict[str, dict] = {name: {} for name in names}
    for _r in range(rounds):
        for label, sw in switches.items():
            for kind, sources in LOGON_KINDS:
                name = f"{label}: {kind}" if len(switches) > 1 else kind
                stop = asyncio.Event()
                guessers = Guessers() if sources else None
                if guessers is not None:
                    await guessers.start(sw.port, sources, nice)  # the phase starts with the flood on
                legit = asyncio.create_task(legit_logons(sw.port, stop, lat[name], fails[name], station="AB01",
                                                         user="OP0001"))
                await asyncio.sleep(phase_s / rounds)
                stop.set()
                await legit
                if guessers is not None:
                    await guessers.stop(stats[name])
    out = {}
    for name in names:
        v = lat[name]
        out[name] = {"logons": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99),
                     "max_ms": round(max(v) * 1000, 1) if v else None,
                     "failures": len(fails[name]), "first_failures": fails[name][:3], "guesses": stats[name]}
        print(f"  {name}: {json.dumps(out[name])}", flush=True)
    for label, sw in switches.items():
        try:
            out[f"metrics {label}"] = [line for line in sw.metrics().splitlines() if line.startswith(
                ("msc_logon_throttled_total", "msc_logon_failures_total", "msc_lockouts_total"))]
        except OSError:
            pass
    return out


def _dig(d: dict, *keys: str):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return "—"
        d = d[k]
    return d


def markdown(doc: dict) -> str:
    """The figures the issue asks for, as a table (the JSON beside it has everything)."""
    out = [f"# Bounded under abuse — {doc['when']} {doc['label']}", "",
           f"msc from `{doc['msc']}`; load average {doc['load_average_start']} → {doc['load_average_end']} "
           "(2 cores shared with other work: compare within the run).", ""]
    sc = doc["scenarios"]
    if "flood" in sc:
        out += ["## One connection flooding refused messages before logon (reconnecting when closed)", "",
                "| phase | journal growth MB/min | beyond the canary's own | the flooder's records (stored kB/min) "
                "| canary p50 / p99 ms | canary answers | flood messages (connections) | peak RSS switch / writer MB |",
                "|---|---|---|---|---|---|---|---|"]
        for name, r in sc["flood"].items():
            if not isinstance(r, dict):
                continue
            g = lambda *keys, r=r: _dig(r, *keys)  # noqa: E731 (older results lack some figures)
            out.append(f"| {name} | {g('journal_mb_per_min')} | {g('growth_beyond_canary_mb_per_min')} | "
                       f"{g('flooder_records')} ({g('flooder_kb_per_min')}) | {g('canary_p50_ms')} / {g('canary_p99_ms')} | "
                       f"{g('canary_answers')} | {g('flood', 'messages')} ({g('flood', 'connections')}) | "
                       f"{g('peak_rss', 'switch_mb')} / {g('peak_rss', 'writer_mb')} |")
        out.append("")
    if "idle" in sc:
        r = sc["idle"]
        out += [f"## {r['connections_each']} idle connections + {r['connections_each']} stalled TLS handshakes", "",
                "| kind | closed | closed with | closed within s (p50 / max) |", "|---|---|---|---|"]
        for k in ("idle_plain", "stalled_tls"):
            v = r[k]
            out.append(f"| {k} | {v['closed']} of {r['connections_each']} | {v['closed_with']} | "
                       f"{v['closed_within_s']['p50']} / {v['closed_within_s']['max']} |")
        out += ["", "| terminal logging on throughout | logons | failures | LOGON p50 / p99 ms |", "|---|---|---|---|"]
        for k in ("legit_plain", "legit_tls"):
            v = r[k]
            out.append(f"| {k} | {v['logons']} | {v['failures']} | {v['p50_ms']} / {v['p99_ms']} |")
        out.append("")
    if "logon" in sc:
        out += [f"## Logon flood (scrypt cost 15), kinds interleaved; guessers at nice {doc.get('guessers_nice', 0)}", "",
                "| kind | legitimate logons | failures | LOGON p50 / p99 / max ms | guesses answered |",
                "|---|---|---|---|---|"]
        for name, v in sc["logon"].items():
            if not isinstance(v, dict):
                continue  # the metrics lines
            out.append(f"| {name} | {v['logons']} | {v['failures']} | {v['p50_ms']} / {v['p99_ms']} / {v['max_ms']} | "
                       f"{v['guesses']} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default="flood,idle,logon")
    ap.add_argument("--phase-s", type=float, default=60, help="seconds per flood/logon phase")
    ap.add_argument("--connections", type=int, default=2000, help="idle and stalled-TLS connections, each")
    ap.add_argument("--legacy", action="store_true", help="configuration without issue 14's keys (older msc)")
    ap.add_argument("--guessers-nice", type=int, default=GUESSERS_NICE,
                    help="logon: the guessers' process's nice value (0: the same priority as the switch)")
    ap.add_argument("--no-gate-baseline", action="store_true",
                    help="logon: measure only the defaults, not also a switch with the logon gate lifted")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import msc

    doc: dict = {"msc": str(Path(msc.__file__).parent), "label": args.label, "legacy_config": args.legacy,
                 "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "phase_s": args.phase_s,
                 "load_average_start": os.getloadavg(), "scenarios": {}}
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    for name in args.scenarios.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{name}:", flush=True)
            if name == "flood":
                doc["scenarios"][name] = scenario_flood(Path(tmp), args.phase_s, args.legacy, runner)
                continue
            if name == "logon":
                configs = {"gate lifted": NO_GATE, "no throttle delay": "logon_throttle_delay_s = 0\n", "defaults": ""}
                if args.legacy or args.no_gate_baseline:
                    configs = {"defaults": ""}
                switches: dict[str, Switch] = {}
                try:
                    for label, extra in configs.items():
                        (Path(tmp) / label).mkdir()
                        switches[label] = Switch(Path(tmp) / label, legacy=args.legacy, tls=False, switch_extra=extra)
                    doc["guessers_nice"] = args.guessers_nice
                    doc["scenarios"][name] = runner(scenario_logon(switches, args.phase_s, nice=args.guessers_nice))
                finally:
                    for sw in switches.values():
                        sw.stop()
                continue
            sw = Switch(Path(tmp), legacy=args.legacy, tls=name == "idle")
            try:
                if name == "idle":
                    res = runner(scenario_idle(sw, args.connections, args.legacy))
                else:
                    raise SystemExit(f"unknown scenario {name}")
                try:
                    metrics = sw.metrics()
                    res["metrics"] = [line for line in metrics.splitlines() if line.startswith(
                        ("msc_connections_closed_total", "msc_refusals_recorded_total", "msc_logon_throttled_total",
                         "msc_journal_records_total", "msc_listener_connections"))]
                except OSError:
                    pass
            finally:
                sw.stop()
            doc["scenarios"][name] = res
    doc["load_average_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"abuse-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    (RESULTS / f"abuse-{stamp}.md").write_text(markdown(doc))
    print(f"written to {path} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
