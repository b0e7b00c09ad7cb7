"""SECURITY.md's hostile-input list against a real `msc serve`, one attack at a time.

Each attack must end in a reject code or a closed connection — never a crash — while a canary
terminal keeps sending a query every 20 ms and getting its answer, and the process's memory must
stay bounded. The upstream attacks use a fake upstream that sends garbage or never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import struct
import time

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import start_serve, start_stub
from tests.waiting import HANG_S
from tests.wire import WireClient, frame

pytestmark = pytest.mark.timeout(300)

MAX_CONNECTIONS = 60
BAD_UPSTREAM = '''
[[upstream]]
name = "bad"
endpoints = ["127.0.0.1:{port}"]
timeout_s = 1.5
heartbeat_s = 30
ack_timeout_s = 0.5

[[route]]
mke = ["GQ"]
upstream = "bad"
category = "cjis"
'''


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class FakeUpstream:
    """Accepts msc's link; in 'garbage' mode answers each request with random bytes, in 'mute'
    mode acknowledges nothing and never answers."""

    def __init__(self) -> None:
        self.mode = "mute"
        self.connections = 0

    async def handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            while await reader.read(65536):
                if self.mode == "garbage":
                    writer.write(os.urandom(64) + b"\xff\xff\xff\xff")
        except ConnectionError:
            pass


class Canary:
    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        c = await WireClient.connect(self.port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        i = 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                f = await c.send(f"ICS1C{i % 999999}.QV.CA0130000.LIC/CAN{i}")
                if f.type != "A":
                    self.failures.append(f.text)
                else:
                    await c.output()
                    self.latencies.append(time.perf_counter() - t0)
            except (TimeoutError, ConnectionError) as exc:
                self.failures.append(repr(exc))
            i += 1
            await asyncio.sleep(0.02)
        c.close()


async def connect_raw(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def read_to_close(reader: asyncio.StreamReader, timeout: float = HANG_S) -> tuple[bytes, bool]:
    """What the peer sent, and whether msc closed the connection (False: nothing came for
    ``timeout`` seconds and it is still open)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            data += chunk
    except ConnectionError:
        pass
    except TimeoutError:
        return data, False
    return data, True


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = HANG_S) -> bytes:
    return (await read_to_close(reader, timeout))[0]


def naks(data: bytes) -> list[str]:
    out, pos = [], 0
    while len(data) - pos >= 9:
        length, t, _xid = struct.unpack_from(">IBI", data, pos)
        if t == ord("N"):
            out.append(data[pos + 9 : pos + 4 + length].decode("ascii", "replace").split(" ")[0])
        pos += 4 + length
    return out


@pytest.fixture
def switch(tmp_path, procs):
    up, port, bad_port = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port(),
                      max_connections=MAX_CONNECTIONS, read_timeout_s=1, rate_limit=50,
                      extra=BAD_UPSTREAM.format(port=bad_port))
    # (The brute force's 20 LOGONs past their address's rate are answered 0.1 s after each, not
    # logon_throttle_delay_s's default 1 s: the test waits for each answer in turn.)
    text = cfg.read_text().replace("[switch]\n", "[switch]\nqueue_max = 300\nlogon_throttle_delay_s = 0.1\n", 1)
    cfg.write_text(text)
    start_stub(procs, tmp_path, up)
    serve = start_serve(procs, tmp_path, cfg)
    return serve, port, bad_port


async def oversized_length(port: int) -> None:
    r, w = await connect_raw(port)
    w.write(frame("A", 0) + b"\x7f\xff\xff\xffM\x00\x00\x00\x01")
    assert "E101" in naks(await read_until_closed(r))


async def slowloris(port: int) -> None:
    conns = [await connect_raw(port) for _ in range(40)]
    for _r, w in conns:
        w.write(struct.pack(">IBI", 1000, ord("M"), 1) + b"ICS1.QW")  # a frame that never completes
    results = await asyncio.gather(*(read_to_close(r, timeout=HANG_S) for r, _w in conns))
    # Closed after read_timeout_s (E101) — or at once, when more than max_pending_per_address
    # (32) connections of one address have not logged on, the oldest (E307, issue 14) — by msc,
    # not left hanging.
    assert all(closed for _d, closed in results), sum(not closed for _d, closed in results)
    codes = [naks(d) for d, _closed in results]
    assert all("E101" in c or "E307" in c for c in codes), codes
    assert sum("E101" in c for c in codes) == 32


async def random_bytes(port: int) -> None:
    rnd = random.Random(7)
    for _ in range(30):
        r, w = await connect_raw(port)
        w.write(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 4096))))
        data = await read_until_closed(r, timeout=HANG_S)
        codes = set(naks(data))
        assert codes <= {"E101", "E102", "E103", "E104", "E105", "E106", "E107", "E108", "E201", "E307"}, codes
        w.close()


async def non_ascii(port: int) -> None:
    c = await WireClient.connect(port)
    await c.banner()
    assert (await c.send(b"ICS1.QW.CA0130000.NAM/M\xc3\xbcLLER")).code == "E102"
    c.close()


async def too_many_connections(port: int) -> None:
    held = []
    refused = 0
    for _ in range(MAX_CONNECTIONS + 20):
        r, w = await connect_raw(port)
        held.append((r, w))
    # Beyond max_connections a new connection takes the slot of the oldest that has not logged on
    # (which gets its banner, then E307 and is closed: issue 14), or is refused at once (E307).
    # The others stay open: read every connection until 20 were told E307 (a hang's bound, not a
    # second: a loaded machine sends the refusals late), the canary's slot and the excess.
    datas = [bytearray() for _ in held]

    async def read_into(r: asyncio.StreamReader, into: bytearray) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await r.read(65536):
                into += chunk

    readers = [asyncio.create_task(read_into(r, d)) for (r, _w), d in zip(held, datas, strict=True)]
    deadline = time.monotonic() + HANG_S
    while sum("E307" in naks(bytes(d)) for d in datas) < 20 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    refused = sum("E307" in naks(bytes(d)) for d in datas)
    assert refused >= 20  # the canary and the excess: everything beyond max_connections refused
    for t in readers:
        t.cancel()
    for _r, w in held:
        w.close()
    await asyncio.sleep(0.3)
    c = await WireClient.connect(port)  # capacity comes back
    await c.banner()
    c.close()


async def never_reads(port: int) -> None:
    import socket as s

    raw = s.create_connection(("127.0.0.1", port))
    raw.setsockopt(s.SOL_SOCKET, s.SO_RCVBUF, 4096)
    raw.sendall(struct.pack(">IBI", 5, ord("A"), 0))
    for i in range(1, 3001):
        p = f"ECC2N{i}.*EC0001.#0A000001.QV.CA0130100.LIC/{'Q' * 60}{i}".encode()
        raw.sendall(struct.pack(">IBI", len(p) + 5, ord("M"), i) + p)
        if i % 200 == 0:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    raw.close()


async def flood(port: int) -> None:
    c = await WireClient.connect(port, auto_ack=True)
    await c.banner()
    assert (await c.logon("ICS2", "TS0002", PASSWORD)).type == "A"
    futs = []
    for i in range(2000):
        c.xid += 1
        fut = asyncio.get_running_loop().create_future()
        c.answers[c.xid] = fut
        c.send_raw(frame("M", c.xid, f"ICS2F{i}.QV.CA0130000.LIC/F{i}".encode()))
        futs.append(fut)
    answers = await asyncio.wait_for(asyncio.gather(*futs), 60)
    codes = [a.code for a in answers if a.type == "N"]
    assert codes and set(codes) <= {"E307"}  # beyond its rate the flood is told to slow down
    assert sum(a.type == "A" for a in answers) > 0
    c.close()


async def brute_force(port: int) -> None:
    codes = []
    for attempt in range(30):
        # From another address, through the pool (its addresses are 127.0.0.0/8; a terminal
        # station's LOGON from an address not its own is E210 before any password is checked).
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        c = WireClient(r, w)
        await c.banner()
        codes.append((await c.logon("ECMDT", "TS0002", f"guess-{attempt}")).code)
        c.close()
    # Locked after five; a locked account answers like a wrong password (issue 13: no oracle),
    # so the lock shows in that the right password is refused now. After ten failures in a
    # minute the address's logons are refused unchecked (issue 14: E307).
    assert codes == ["E202"] * 10 + ["E307"] * 20, codes
    c = await WireClient.connect(port)
    await c.banner()
    assert (await c.logon("ICS2", "TS0002", PASSWORD)).code == "E202"
    c.close()


async def impersonation_and_spoofing(port: int) -> None:
    c = await WireClient.connect(port)
    await c.banner()
    # TS0002 is locked by the brute force above; use the practitioner-free path: an ltfa operator.
    assert (await c.logon("ICS2", "LT0001", PASSWORD)).type == "A"
    assert (await c.send("ICS1.QW.CA0130000.NAM/X.DOB/19800101")).code == "E210"  # another station's mnemonic
    assert (await c.send("ICS2.*TS0001.QW.CA0130000.NAM/X.DOB/19800101")).code == "E104"  # OIF spoofing
    assert (await c.send("ICS2.#0A0A0A0A.QW.CA0130000.NAM/X.DOB/19800101")).code == "E105"  # TAF spoofing
    c.close()


async def bad_upstream(port: int, fake: FakeUpstream) -> None:
    c = await WireClient.connect(port)
    await c.banner()
    assert (await c.logon("ICS2", "LT0001", PASSWORD)).type == "A"
    # A mute upstream (it accepts the connection and never answers, not even the handshake H)
    # is never used: requests for it are refused at once (PROTOCOL.md §4 "Link health").
    fake.mode = "mute"
    assert (await c.send("ICS2M1.GQ.CA0130000.NAM/X")).code == "E302"
    fake.mode = "garbage"  # garbage: msc closes the link (E101), refuses the request, and redials
    n = fake.connections
    assert (await c.send("ICS2M2.GQ.CA0130000.NAM/Y")).code == "E302"
    for _ in range(400):
        if fake.connections > n + 1:
            break
        await asyncio.sleep(0.05)
    assert fake.connections > n + 1
    c.close()


def test_hostile_inputs_end_in_codes_or_closes_and_others_keep_being_served(switch):
    serve, port, bad_port = switch
    fake = FakeUpstream()

    async def scenario():
        server = await asyncio.start_server(fake.handle, "127.0.0.1", bad_port)
        canary = Canary(port)
        task = asyncio.create_task(canary.run())
        await asyncio.sleep(0.5)
        rss0 = rss_mb(serve.p.pid)
        report = {}
        only = os.environ.get("MSC_ATTACKS")
        for name, attack in (("oversized length", oversized_length), ("slowloris", slowloris),
                             ("random bytes", random_bytes), ("non-ASCII text", non_ascii),
                             ("too many connections", too_many_connections), ("never reads", never_reads),
                             ("flood", flood), ("LOGON brute force", brute_force),
                             ("impersonation and OIF/TAF spoofing", impersonation_and_spoofing)):
            if only and attack.__name__ not in only.split(","):
                continue
            before = len(canary.latencies)
            await attack(port)
            report[name] = len(canary.latencies) - before
        await bad_upstream(port, fake)
        await asyncio.sleep(0.5)
        canary.stop.set()
        await task
        server.close()
        return canary, rss0, rss_mb(serve.p.pid), report

    canary, rss0, rss1, report = asyncio.run(scenario())
    assert serve.p.poll() is None, "msc serve died"
    print(f"\ncanary: {len(canary.latencies)} answers, max {max(canary.latencies, default=0) * 1000:.1f} ms; "
          f"RSS {rss0:.0f} -> {rss1:.0f} MB; answers during each attack {report}")
    # The canary was served throughout: every one of its queries was accepted and answered (none
    # refused, none left without its answer), also while each attack that holds the switch for a
    # while went on. How fast is measured in bench/, not asserted here.
    assert canary.failures == [], canary.failures[:5]
    assert canary.latencies
    # (The flood is answered E307 as fast as it comes: over before the canary's next query.)
    held = {"slowloris", "too many connections", "never reads"}
    assert all(report[name] > 0 for name in held & report.keys()), report
    assert rss1 - rss0 < 150, (rss0, rss1)  # bounded: queues, frames and connections all have limits
    serve.p.send_signal(signal.SIGTERM)
    assert serve.p.wait(30) == 0
