#!/usr/bin/env python3
"""The benchmark load generator: N concurrent terminal sessions, a realistic message mix.

    python bench/loadgen.py switch  --port P --terminals 64 --duration 10 [--rate 1000]
    python bench/loadgen.py direct  --port STUB_PORT --terminals 64 --duration 10
    python bench/loadgen.py nats    --port NATS_PORT --terminals 64 --duration 10

Runs in its own process on uvloop and prints one JSON object. The same messages, sizes and
concurrency go to each target:

* ``switch`` — terminals log on to msc (stations X000, X001, …) and send the mix; a transaction is
  request → A → the answer delivered (acknowledged); AM and rejections end at their A/N.
* ``direct`` — the same requests, already normalized (``HEADER.*OIF.#TAF.TEXT``), straight to a
  stub: the Python round-trip limit on this machine.
* ``nats`` — each request published to a JetStream stream and its PubAck awaited: a durable
  broker's publish + acknowledge.

Closed loop (each terminal has one request outstanding) unless ``--rate`` asks for an open-loop
aggregate rate (for latency at a fixed load).

The open loop offers its rate whether or not the target keeps up, and ends in bounded time:
transaction *i* is due at ``start + i / rate`` (round-robin over the terminals); those due in the
measuring window (``--warmup`` s after the start, ``--duration`` s long) are followed to their end,
and their latency runs from when they were **due** (a generator that falls behind does not hide
the wait). After the window nothing more is sent; answers are awaited ``--grace`` s more, then
whatever is outstanding is given up. It reports what it offered and what it achieved:
``offered`` (due in the window), ``sent``, ``unsent`` (due while the terminal's connection was
down), ``answered`` (A and the answer, or an N), ``late`` (answered only after the window
closed), ``missing`` (no end by the window's end + grace), ``errors`` (connection lost);
``per_s`` (achieved: transactions ended during the window, per second, as in the closed loop),
``offered_per_s``; ``good_per_s`` (goodput: transactions *accepted* — not refused with an ``N`` — and
ended during the window, per second), ``accepted`` and ``p50_accepted_ms``/``p99_accepted_ms`` (the
latency of the window's accepted transactions alone, a refusal's quick ``N`` left out, one
accepted but not ended by the end of the grace counted as infinitely late: ``null`` beyond it);
``p50_ms``/``p99_ms``/``max_ms`` of the answered; ``p99_all_ms``, the p99 of
every offered transaction with the unanswered counted as infinitely late (``null`` when more
than 1 % went unanswered: the real p99 is then beyond ``grace``); ``send_lag_p99_ms`` (how late
the generator itself sent). The closed loop likewise waits at most ``--grace`` s for the
transactions in flight when its window closes, and both report ``connections_lost`` (terminals
whose connection the target closed during the run).

``--connect HOST:PORT[,HOST:PORT...]`` instead of ``--port`` (switch mode): the addresses of two
msc nodes, as terminals configured for two switching centres have. A terminal whose connection
is refused or lost goes to the next address (and round again), logs on again, and goes on; a
transaction in flight on the lost connection is counted as an error and not sent again (its fate
is unknown to the terminal). ``reconnects`` counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import struct
import sys
import time

from benchconfig import PASSWORD, mnemonic  # the stations and users the bench configuration made

HEAD = struct.Struct(">IBI")
# A free-text field (MIS/ is repeatable text, edits.DEFAULT_REPEATABLE) to give requests a realistic
# size; appended to the last identifier it would make that identifier malformed (E108).
PAD = ".MIS/ADDITIONAL DESCRIPTIVE DATA FOR A REALISTIC REQUEST SIZE"


# kind, weight, text builder(i) -> body after the header; expects an answer?
def mix(rnd: random.Random):
    n = rnd.randrange(10**6)
    name = f"PERSON{n % 5000}, TEST{n % 97}"
    choices = [
        ("QW", 28, f"QW.CA0130000.NAM/{name}.DOB/19{60 + n % 40}0{1 + n % 9}1{n % 10}.SEX/M.RAC/W{PAD}", True),
        ("QV", 24, f"QV.CA0130000.LIC/{n:07d}.LIS/CA.VIN/1HGCM8263{n % 100000:05d}{PAD}", True),
        ("DQ", 14, f"DQ.CA0130000.OLN/D{n:07d}.NAM/{name}{PAD}", True),
        ("RQ", 10, f"RQ.CA0130000.LIC/{n:07d}{PAD}", True),
        ("QH", 10, f"QH.CA0130000.NAM/{name}.DOB/19700101.PUR/C.ATN/DET {n % 300}{PAD}", True),
        ("AM", 5, f"AM.CA0130000.CA0190000.TXT ATTEMPT TO LOCATE VEHICLE {n} LAST SEEN NORTHBOUND", False),
        ("E301", 5, f"ZZ.CA0130000.NAM/{name}", False),
        ("E108", 4, f"QH.CA0130000.NAM/{name}", False),
    ]
    total = sum(c[1] for c in choices)
    r = rnd.uniform(0, total)
    for kind, w, text, answer in choices:
        r -= w
        if r <= 0:
            return kind, text, answer
    return choices[0][0], choices[0][2], True


class Conn(asyncio.Protocol):
    """One terminal (or one stub/raw connection): frames in, futures out."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport = None
        self.xid = 0
        self.acks: dict[int, asyncio.Future] = {}
        self.answers: dict[str, asyncio.Future] = {}
        self.banner = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for f in list(self.acks.values()) + list(self.answers.values()):
            if not f.done():
                f.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        out = []
        while len(buf) - pos >= 9:
            length, t, xid = HEAD.unpack_from(buf, pos)
            if len(buf) - pos < 4 + length:
                break
            payload = bytes(buf[pos + 9 : pos + 4 + length])
            pos += 4 + length
            if t == 77:  # M
                out.append(HEAD.pack(5, 65, xid))
                if payload.startswith(b"SYS.BANNER."):
                    if not self.banner.done():
                        self.banner.set_result(None)
                    continue
                header = payload[: payload.find(b".")].decode()
                f = self.answers.pop(header, None)
                if f is not None and not f.done():
                    f.set_result(payload)
            elif t in (65, 78):  # A, N
                f = self.acks.pop(xid, None)
                if f is not None and not f.done():
                    f.set_result((chr(t), payload))
            elif t == 72:  # H
                out.append(HEAD.pack(5, 72, xid))
        del buf[:pos]
        if out:
            self.transport.write(b"".join(out))

    def send(self, payload: bytes, header: str | None) -> tuple[asyncio.Future, asyncio.Future | None]:
        self.xid += 1
        loop = asyncio.get_running_loop()
        ack = loop.create_future()
        self.acks[self.xid] = ack
        ans = None
        if header is not None:
            ans = loop.create_future()
            self.answers[header] = ans
        self.transport.write(HEAD.pack(len(payload) + 5, 77, self.xid) + payload)
        return ack, ans


class Stats:
    def __init__(self) -> None:
        self.reconnects = 0
        self.lat: list[float] = []
        self.kinds: dict[str, int] = {}
        self.rejects: dict[str, int] = {}
        self.errors = 0
        self.messages = 0
        self.counting = False
        # Open loop only (the transactions due in the measuring window, followed to their end):
        self.ended = 0  # transactions of any time ended during the window (the achieved rate)
        self.offered = 0
        self.sent = 0
        self.unsent = 0
        self.late = 0
        self.lag: list[float] = []  # s each counted transaction was sent after it was due
        self.good = 0  # transactions of any time *accepted* (not refused) and ended during the window
        self.lat_ok: list[float] = []  # latency of the window's accepted transactions (no N)
        self.acked = 0  # the window's transactions answered A (accepted), ended or not

    def done(self, kind: str, seconds: float, code: str | None, messages: int = 1, *,
             member: bool | None = None) -> None:
        """One transaction finished; ``messages`` durable messages it carried (request, answer).

        ``member``: in the open loop, whether it was due in the measuring window (counted
        whenever it ends); ``None`` in the closed loop (counted if it ends in the window)."""
        if member is not None:
            self.ended += self.counting
            self.good += self.counting and code is None
            if not self.counting and member:
                self.late += 1
            if member and code is None:
                self.lat_ok.append(seconds)
        if not (self.counting if member is None else member):
            return
        self.lat.append(seconds)
        self.messages += messages
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if code:
            self.rejects[code] = self.rejects.get(code, 0) + 1


def addresses(args) -> list[tuple[str, int]]:
    """``--connect a:1,b:2`` (or ``--port P``: 127.0.0.1:P) as [(host, port), ...]."""
    if not args.connect:
        return [("127.0.0.1", args.port)]
    out = []
    for a in args.connect.split(","):
        host, _, port = a.strip().rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


async def open_terminal(port: int | list[tuple[str, int]], i: int, mode: str, at: int = 0) -> tuple[Conn, str]:
    """Connect (to ``port`` on 127.0.0.1, or to the address ``at`` of a list) and log on."""
    loop = asyncio.get_running_loop()
    host, port = ("127.0.0.1", port) if isinstance(port, int) else port[at % len(port)]
    _t, c = await loop.create_connection(Conn, host, port)
    mne = mnemonic(i)
    if mode == "switch":
        await asyncio.wait_for(c.banner, 30)
        c.transport.write(HEAD.pack(5, 65, 0))
        ack, _ = c.send(f"{mne}.LOGON.BN0001.-.{PASSWORD}".encode(), None)
        kind, payload = await asyncio.wait_for(ack, 60)
        if kind != "A":
            raise RuntimeError(f"logon refused for {mne}: {payload!r}")
    return c, mne


async def one_txn(c: Conn, mne: str, seq: int, rnd: random.Random, mode: str, stats: Stats, *,
                  due: float | None = None, member: bool | None = None) -> None:
    """Send one transaction of the mix and wait for its end (30 s each for the A/N and the answer).

    ``due`` (open loop): when it was due — its latency runs from then; ``member``: see
    :meth:`Stats.done`. A transaction cancelled while waiting (the open loop's grace ran out)
    just stops: the caller counts it as missing."""
    kind, body, answer = mix(rnd)
    header = f"{mne}{seq % 1000000:06d}"[:10]
    if mode == "direct":
        payload = f"{header}.*BN0001.#7F000001.{body}".encode()
        answer = answer or False
    else:
        payload = f"{header}.{body}".encode()
    t0 = time.perf_counter()
    if due is not None:
        if member:
            stats.lag.append(t0 - due)
        t0 = due
    ack, ans = c.send(payload, header if answer and not kind.startswith("E") else None)
    try:
        k, p = await asyncio.wait_for(ack, 30)
        code = None if k == "A" else p.split(b" ", 1)[0].decode()
        if member and code is None:
            stats.acked += 1
        messages = 1
        if ans is not None:
            if k == "A":
                await asyncio.wait_for(ans, 30)
                messages = 2
            else:
                c.answers.pop(header, None)
        stats.done(kind, time.perf_counter() - t0, code, messages, member=member)
    except (TimeoutError, ConnectionError):
        if member is None or member:
            stats.errors += 1
    finally:
        c.answers.pop(header, None)


async def measure(args, stats: Stats, stop: asyncio.Event, workers: list[asyncio.Task]) -> float:
    """Warm up, count for ``args.duration`` seconds, stop the workers; returns the counted seconds.

    The workers get ``args.grace`` s to finish what they have in flight (a transaction that ends
    after the window is not counted anyway), then they are cancelled: a target that has stopped
    answering cannot keep the run going."""
    await asyncio.sleep(args.warmup)
    stats.counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.counting = False
    elapsed = time.perf_counter() - t0
    stop.set()
    await finish(workers, args.grace)
    return elapsed


async def finish(tasks, grace: float) -> int:
    """Wait up to ``grace`` s for ``tasks``, cancel the rest; returns how many were cancelled."""
    tasks = [t for t in tasks if not t.done()]
    if not tasks:
        return 0
    _done, pending = await asyncio.wait(tasks, timeout=grace)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return len(pending)


async def run_tcp(args, mode: str) -> dict:
    stats = Stats()
    conns = []
    sem = asyncio.Semaphore(64)
    addrs = addresses(args) if mode == "switch" else [("127.0.0.1", args.port)]
    at = [0] * args.terminals  # the address each terminal is connected to (index into addrs)
    stop = asyncio.Event()

    async def open_one(i, first: int = 0):
        """Connect terminal i to the first address that takes it, from ``first`` on, round again."""
        k = first
        while True:
            try:
                async with sem:
                    c = await asyncio.wait_for(open_terminal(addrs, args.first + i, mode, k), 10)
                at[i] = k % len(addrs)
                return c
            except (TimeoutError, OSError, ConnectionError, RuntimeError):
                if len(addrs) == 1 and not stats.counting and k == first:
                    raise  # one address and not yet running: a setup error, not a failover
                k += 1
                if stop.is_set():
                    raise
                if (k - first) % len(addrs) == 0:
                    await asyncio.sleep(0.05)

    conns = list(await asyncio.gather(*(open_one(i) for i in range(args.terminals))))
    reopening: dict[int, asyncio.Task] = {}

    async def reopen(k: int) -> None:
        conns[k] = await open_one(k, at[k] + 1)
        stats.reconnects += 1

    def alive(k: int) -> bool:
        """Terminal k's connection is up; if not, its reconnection (to the next address) is started."""
        if not conns[k][0].closed.done():
            return True
        if len(addrs) > 1 and k not in reopening and not stop.is_set():
            t = asyncio.get_running_loop().create_task(reopen(k))
            reopening[k] = t
            t.add_done_callback(lambda _t, k=k: reopening.pop(k, None))
        return False

    async def closed_loop(k):
        rnd = random.Random(k)
        seq = 0
        while not stop.is_set():
            if not alive(k):
                if len(addrs) == 1:
                    return
                try:
                    await reopening[k] if k in reopening else asyncio.sleep(0)
                except (TimeoutError, OSError, ConnectionError, RuntimeError):
                    return
                continue
            c, mne = conns[k]
            await one_txn(c, mne, seq, rnd, mode, stats)
            seq += 1

    async def open_loop() -> float:
        """Offer ``args.rate`` transactions/s on schedule, whatever the target does; returns the
        window's length. Bounded: the schedule ends with the window, the wait ``grace`` s later."""
        loop = asyncio.get_running_loop()
        rnd = random.Random(1)
        interval = 1.0 / args.rate
        tasks: set[asyncio.Task] = set()
        # Transactions first..end-1 are the window's (whole numbers: offered is exactly rate × duration).
        first = math.ceil(args.warmup * args.rate - 1e-9)
        end = first + max(1, round(args.duration * args.rate))
        start = time.perf_counter()
        window = (start + first * interval, start + end * interval)
        seq = 0
        while seq < end:
            due = start + seq * interval
            now = time.perf_counter()
            stats.counting = window[0] <= now < window[1]
            if due > now:
                await asyncio.sleep(due - now)
                continue
            # Due now or overdue (the generator fell behind): send it, and yield to the loop
            # after each one so answers are read and the deadlines below still run.
            member = seq >= first
            stats.offered += member
            k = seq % len(conns)
            if alive(k):
                c, mne = conns[k]
                stats.sent += member
                t = loop.create_task(one_txn(c, mne, seq, rnd, mode, stats, due=due, member=member))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            else:
                stats.unsent += member  # its terminal's connection is down (or reconnecting)
            seq += 1
            await asyncio.sleep(0)
        while time.perf_counter() < window[1]:  # the window's last answers still count as in it
            await asyncio.sleep(window[1] - time.perf_counter())
        stats.counting = False
        stop.set()
        members = [t for t in tasks]
        await finish(members, args.grace)
        return window[1] - window[0]

    if args.rate:
        elapsed = await open_loop()
    else:
        elapsed = await measure(args, stats, stop, [asyncio.create_task(closed_loop(k)) for k in range(len(conns))])
    for t in list(reopening.values()):
        t.cancel()
    stats_lost = sum(1 for c, _ in conns if c.closed.done())
    for c, _ in conns:
        c.transport.close()
    return summarize(args, mode, stats, elapsed, connections_lost=stats_lost)


async def run_nats(args) -> dict:
    import nats

    stats = Stats()
    nc = await nats.connect(f"nats://127.0.0.1:{args.port}", max_reconnect_attempts=0)
    js = nc.jetstream()
    try:
        await js.delete_stream("MSCBENCH")
    except Exception:
        pass
    await js.add_stream(name="MSCBENCH", subjects=["msc.>"], storage="file")
    stop = asyncio.Event()

    async def publisher(k):
        rnd = random.Random(k)
        seq = 0
        mne = mnemonic(args.first + k)
        while not stop.is_set():
            kind, body, _answer = mix(rnd)
            payload = f"{mne}{seq % 1000000:06d}.*BN0001.#7F000001.{body}".encode()
            t0 = time.perf_counter()
            try:
                await js.publish(f"msc.{mne}", payload, timeout=30)
                stats.done(kind, time.perf_counter() - t0, None)
            except Exception:
                stats.errors += 1
            seq += 1

    elapsed = await measure(args, stats, stop, [asyncio.create_task(publisher(k)) for k in range(args.terminals)])
    await nc.close()
    return summarize(args, "nats", stats, elapsed)


def quantile_ms(values: list[float], p: float, n: int | None = None) -> float | None:
    """The ``p`` quantile of ``values`` (seconds, sorted) in ms, among ``n`` ≥ len(values)
    observations of which the others are infinitely large: ``None`` if it falls among those."""
    n = len(values) if n is None else n
    if not n:
        return None
    i = min(n - 1, int(p * n))
    return round(values[i] * 1000, 3) if i < len(values) else None


def summarize(args, mode: str, stats: Stats, elapsed: float, *, connections_lost: int = 0) -> dict:
    lat = sorted(stats.lat)
    out = {"mode": mode, "terminals": args.terminals, "rate": args.rate or None, "seconds": round(elapsed, 2),
           "transactions": len(lat), "per_s": round(len(lat) / elapsed, 1),
           "messages": stats.messages, "messages_per_s": round(stats.messages / elapsed, 1),
           "p50_ms": quantile_ms(lat, 0.5), "p99_ms": quantile_ms(lat, 0.99),
           "max_ms": round(lat[-1] * 1000, 3) if lat else None, "kinds": stats.kinds, "rejects": stats.rejects,
           "errors": stats.errors, "reconnects": stats.reconnects, "connections_lost": connections_lost}
    if args.rate:
        missing = stats.sent - len(lat) - stats.errors
        lag = sorted(stats.lag)
        ok = sorted(stats.lat_ok)
        out.update(per_s=round(stats.ended / elapsed, 1), offered=stats.offered,
                   offered_per_s=round(stats.offered / elapsed, 1), sent=stats.sent, unsent=stats.unsent,
                   answered=len(lat), late=stats.late, missing=missing, grace_s=args.grace,
                   p99_all_ms=quantile_ms(lat, 0.99, stats.offered),
                   good_per_s=round(stats.good / elapsed, 1), accepted=len(ok),
                   p50_accepted_ms=quantile_ms(ok, 0.5, max(stats.acked, len(ok))),
                   p99_accepted_ms=quantile_ms(ok, 0.99, max(stats.acked, len(ok))),
                   send_lag_p99_ms=quantile_ms(lag, 0.99), send_lag_max_ms=round(lag[-1] * 1000, 3) if lag else None)
    return out


async def idle_sessions(args) -> dict:
    """Open and log on N terminals, hold them, report when done (memory per idle session)."""
    sem = asyncio.Semaphore(128)

    async def one(i):
        async with sem:
            return await open_terminal(args.port, args.first + i, "switch")

    t0 = time.perf_counter()
    conns = await asyncio.gather(*(one(i) for i in range(args.terminals)))
    print(json.dumps({"idle_sessions": len(conns), "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    await asyncio.sleep(args.duration)
    for c, _ in conns:
        c.transport.close()
    return {"idle_sessions": len(conns)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("switch", "direct", "nats", "idle"))
    ap.add_argument("--port", type=int, help="the target's port on 127.0.0.1")
    ap.add_argument("--connect", metavar="HOST:PORT[,HOST:PORT...]",
                    help="switch mode: msc's addresses, the next one tried when a connection is refused or lost")
    ap.add_argument("--terminals", type=int, default=16)
    ap.add_argument("--first", type=int, default=0, help="index of the first station used")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--rate", type=float, default=0, help="open-loop aggregate rate (transactions/s)")
    ap.add_argument("--grace", type=float, default=5,
                    help="s to wait after the window for the answers still outstanding, then given up (missing)")
    args = ap.parse_args()
    if args.port is None and not (args.connect and args.mode in ("switch", "idle")):
        ap.error("--port is required (--connect: switch mode only)")
    if args.port is None:
        args.port = addresses(args)[0][1]
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    if args.mode == "nats":
        result = uvloop.run(run_nats(args))
    elif args.mode == "idle":
        result = uvloop.run(idle_sessions(args))
    else:
        result = uvloop.run(run_tcp(args, args.mode))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
