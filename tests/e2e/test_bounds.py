"""Bounded under abuse (issue 14), against the real ``msc serve`` as an attacker on the network
would try it: a flood before logon, connections and TLS handshakes that never finish, a logon
flood. The assertions are bounds and outcomes — records per address, connections closed, who got
in — never timings; ``bench/abuse_bench.py`` measures the same attacks at the issue's sizes.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import shutil
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.keyring import KeyRing
from msc.mnemonics.state import StateStore
from msc.server.session import taf_for
from tests.conftest import PASSWORD, USERS, free_port, make_config
from tests.e2e.conftest import start_serve, start_stub
from tests.e2e.test_hostile import Canary, rss_mb
from tests.tlsutil import PKI
from tests.waiting import HANG_S
from tests.wire import WireClient, frame

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def many_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def metrics(mport: int) -> dict[tuple, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=HANG_S) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def metric(m: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, *ls), v in m.items() if n == name and want <= set(ls))


def journal(cfg: Path, **q) -> list:
    s = load(cfg)
    return list(search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file), Query(**q)))


def writer_rss(pid: int) -> float:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    return max((rss_mb(int(p)) for p in out), default=0.0)


async def connect_from(port: int, source: str, **kw) -> WireClient:
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), **kw)
    return WireClient(r, w)


# -- 1. a flood before logon ---------------------------------------------------------------------

#: What one connection that never logs on floods with (it reconnects whenever it is closed).
FLOODS = {
    "32 KiB of A": lambda i: b"A" * 32763,
    "32 KiB of 0xFF": lambda i: b"\xff" * 32763,
    "random bytes": lambda i: random.Random(i).randbytes(random.Random(i).randint(1, 32763)),
    "queries before logon": lambda i: f"ICS1Q{i % 99999}.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101".encode(),
    "LOGONs for a station not its own": lambda i: f"ICS1.LOGON.TS0001.-.guess {i}".encode(),
}
FLOOD_S = 3.0
FLOODER = "127.0.0.9"


async def flood(port: int, make, seconds: float) -> dict:
    stats = {"connections": 0, "messages": 0, "closed_for_refusals": 0}
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        c = await connect_from(port, FLOODER)
        stats["connections"] += 1
        try:
            while not c.closed.done() and time.monotonic() < end:
                i += 1
                c.writer.write(frame("M", i, make(i)))
                stats["messages"] += 1
                await c.writer.drain()
                await asyncio.sleep(0)  # let its reader see msc's N frames (drain need not yield)
        except (ConnectionError, OSError):
            pass
        if not c.closed.done():
            c.close()
        await c.wait_closed()
        if any(f.type == "N" and f.xid == 0 and f.text.startswith("E307 TOO MANY REFUSED") for f in c.received):
            stats["closed_for_refusals"] += 1

    return stats


def test_a_flood_before_logon_costs_the_journal_a_bounded_few_records(tmp_path, procs):
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport)
    start_stub(procs, tmp_path, up)
    serve = start_serve(procs, tmp_path, cfg)

    async def scenario():
        canary = Canary(port)
        task = asyncio.create_task(canary.run())
        await asyncio.sleep(0.5)
        rss0, wrss0 = rss_mb(serve.p.pid), writer_rss(serve.p.pid)
        t0 = time.monotonic()
        stats = {name: await flood(port, make, FLOOD_S) for name, make in FLOODS.items()}
        rss = (rss_mb(serve.p.pid), writer_rss(serve.p.pid))
        await asyncio.sleep(0.3)
        canary.stop.set()
        await task
        return canary, stats, t0, (rss0, wrss0), rss

    canary, stats, t0, rss0, rss1 = asyncio.run(scenario())
    assert canary.failures == [], canary.failures[:5]
    assert serve.stop() == 0
    until_stop = time.monotonic() - t0  # the last summary is written at the stop
    for name, s in stats.items():
        assert s["messages"] > s["connections"] >= 1, (name, s)
        # Each connection is closed at its 10th refusal (or ends with the flood's time).
        assert s["closed_for_refusals"] >= s["connections"] - 1, (name, s)
    mine = [r for r in journal(cfg) if r.taf == taf_for(FLOODER)]
    summaries = [r for r in mine if r.code == "SUMMARY"]
    own = [r for r in mine if r.code != "SUMMARY"]
    # The address's budget: 30 records at once and 30 a minute more; then one summary a minute
    # (and one at the stop) that counts the rest.
    # (By this test's clock up to the stop: a record the budget allowed may be written after the
    # flood, and the budget refills meanwhile — a slow machine gets no more than its time allows.)
    assert len(own) <= 30 + until_stop / 2 + 1, (len(own), until_stop)
    assert 1 <= len(summaries) <= until_stop / 60 + 2, (len(summaries), until_stop)
    for r in own:
        assert len(r.text) <= 400, r.text[:100]  # compact: no 32 KiB (or 128 KiB of \xff) texts
    counted = sum(int(s.text.split("REFUSED ")[1].split(" MESSAGES")[0]) for s in summaries if "REFUSED " in s.text)
    recorded = sum(r.kind == "REJECTED" for r in own)
    # Every refusal is in a record or a count: ten per connection closed for them, at most ten for
    # the last connection of each kind (what a doomed connection sent after its tenth is not read).
    closed = sum(s["closed_for_refusals"] for s in stats.values())
    connections = sum(s["connections"] for s in stats.values())
    assert 10 * closed <= recorded + counted <= 10 * connections, (recorded, counted, closed, connections)
    # What they cost on disk: the sealed records of the flooding address, as stored.
    stored = 0
    for db in load(cfg).journal_dir.glob("????-??.db"):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            stored += conn.execute("SELECT coalesce(sum(length(blob) + length(leaf) + coalesce(length(tokens), 0)), 0) "
                                   "FROM records WHERE taf = ?", (taf_for(FLOODER),)).fetchone()[0]
    assert stored < 100_000, stored  # the issue saw 751 MB in 10.7 s
    assert rss1[0] - rss0[0] < 100 and rss1[1] - rss0[1] < 100, (rss0, rss1)


# -- 2. connections and TLS handshakes that never finish ---------------------------------------------

IDLE = 300  # each kind; from 10 addresses (at most 32 not logged on per address by default)
LOGON_TIMEOUT = 2.0
TLS_TIMEOUT = 1.0


async def hold(port: int, source: str, *, ack: bool) -> tuple[float | None, list[str]]:
    """Connect, (acknowledge the banner,) answer heartbeats, never log on: when was it closed?"""
    t0 = time.monotonic()
    c = await connect_from(port, source)
    if ack:
        try:
            await c.banner()
        except (TimeoutError, AssertionError):
            pass
    try:
        await c.wait_closed(30)
    except TimeoutError:
        c.close()
        return None, []
    return time.monotonic() - t0, [f.text for f in c.received if f.type == "N" and f.xid == 0]


async def stall_tls(port: int, source: str) -> float | None:
    """A TCP connection to the TLS listener that never sends a ClientHello."""
    t0 = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        while await asyncio.wait_for(r.read(4096), 30):
            pass
    except TimeoutError:
        w.close()
        return None
    except (ConnectionError, OSError):
        pass
    w.close()
    return time.monotonic() - t0


async def keep_logging_on(port: int, station: str, user: str, stop: asyncio.Event, tls=None,
                          once: bool = False) -> tuple[int, list]:
    """Connect, LOGON, LOGOFF, close, again until ``stop`` (``once``: one round whatever it says)."""
    ok, failures = 0, []
    while once or not stop.is_set():
        try:
            c = await WireClient.connect(port, ssl=tls)
            await c.banner()
            f = await c.logon(station, user, PASSWORD)
            if f.type == "A":
                ok += 1
                assert (await c.send(f"{station}.LOGOFF")).type == "A"
            else:
                failures.append(f.text)
            c.close()
        except (TimeoutError, ConnectionError, OSError) as exc:
            failures.append(repr(exc))
        if once:
            break
        await asyncio.sleep(0.1)
    return ok, failures


def test_idle_connections_and_stalled_tls_handshakes_end_at_their_deadlines_and_never_keep_a_terminal_out(
        tmp_path, procs):
    pki = PKI(tmp_path / "pki")
    pki.issue("server", "localhost", server=True)
    up, port, tls_port, mport = free_port(), free_port(), free_port(), free_port()
    tls_listener = f'''
[[listener]]
name = "tls"
bind = "127.0.0.1:{tls_port}"
max_connections = 200
logon_timeout_s = {LOGON_TIMEOUT}
tls_handshake_timeout_s = {TLS_TIMEOUT}
tls = {{ cert = "{pki.dir}/server.crt", key = "{pki.dir}/server.key" }}
'''
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport, max_connections=200,
                      listener_extra=f"logon_timeout_s = {LOGON_TIMEOUT}", extra=tls_listener)
    start_stub(procs, tmp_path, up)
    serve = start_serve(procs, tmp_path, cfg)
    cctx = ssl.create_default_context(cafile=str(pki.ca_path))
    cctx.check_hostname = False

    async def scenario():
        stop = asyncio.Event()
        terminals = [asyncio.ensure_future(keep_logging_on(port, "ICS1", "TS0001", stop)),
                     asyncio.ensure_future(keep_logging_on(tls_port, "ICS2", "TS0002", stop, tls=cctx))]
        attackers = []
        for i in range(IDLE):
            src = f"127.0.1.{1 + i % 10}"
            attackers.append(asyncio.ensure_future(hold(port, src, ack=i % 2 == 0)))
            attackers.append(asyncio.ensure_future(stall_tls(tls_port, src)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        results = await asyncio.gather(*attackers)
        during = metrics(mport)
        await asyncio.sleep(0.5)
        stop.set()
        return [await t for t in terminals], results, during, metrics(mport)

    terminals, results, during, after = asyncio.run(scenario())
    idle, stalled = results[0::2], results[1::2]
    # Every one closed by msc (none left for the client to give up on after 30 s), each saying
    # why: its logon deadline, or a newer connection took its slot. (How soon after the deadline
    # is measured by bench/abuse_bench.py's idle scenario, not asserted here.)
    assert all(t is not None for t, _naks in idle), sum(t is None for t, _ in idle)
    assert all(naks in (["E201 NO LOGON WITHIN 2 S"], ["E307 TOO MANY CONNECTIONS"]) for _t, naks in idle)
    assert all(t is not None for t in stalled), sum(t is None for t in stalled)
    # The terminals logged on throughout, on both listeners, and were never refused.
    for ok, failures in terminals:
        assert failures == [] and ok >= 3, (ok, failures[:3])
    closed = lambda reason: metric(after, "msc_connections_closed_total", reason=reason)  # noqa: E731
    assert closed("logon_timeout") > 0 and closed("tls_handshake_timeout") > 0
    # Each attacker's close is counted once, with its reason (deadlines and eviction above)
    # (the terminals' own connections log off and are not counted).
    assert metric(after, "msc_connections_closed_total") >= 2 * IDLE, after
    assert closed("evicted") > 0  # 300 > 200: the oldest gave way
    assert closed("refused") == 0  # never: no slot was held by 200 logged-on sessions
    assert metric(after, "msc_listener_connections", state="pending") == 0
    assert metric(after, "msc_listener_connections", state="tls_handshake") == 0
    assert serve.stop() == 0


# -- 3. a logon flood ----------------------------------------------------------------------------------

#: What the guessers try: real IDs and IDs that do not exist, in every shape.
GUESSED_IDS = ["EC0001", "EC0002", "NOSUCH", "ZZ9999", "ec0001", "123456", "EC000", "ABCDEFG", "*UNKNOWN*"]


async def guesser(port: int, source: str, k: int, stop: asyncio.Event, codes: list) -> None:
    i = 0
    while not stop.is_set():
        try:
            c = await connect_from(port, source)
            await c.banner()
            while not stop.is_set() and not c.closed.done():
                i += 1
                f = await c.logon("ECMDT", GUESSED_IDS[(k + i) % len(GUESSED_IDS)], f"guess {k} {i}")
                codes.append(f.code or f.type)
            c.close()
        except (TimeoutError, ConnectionError, OSError, AssertionError):
            codes.append("closed")
            await asyncio.sleep(0.05)


def test_a_logon_flood_lets_every_real_logon_through_and_leaves_no_state_for_unknown_ids(tmp_path, procs):
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport, password_cost=12)
    start_stub(procs, tmp_path, up)
    serve = start_serve(procs, tmp_path, cfg)

    async def scenario():
        # The operator's terminal logged on before (its address is known: it goes first, and one
        # check slot is kept for it). A first logon from a new address waits with the guessers,
        # fewest failures first, at the lower priority (tests/unit/test_bounds.py): on a machine
        # loaded enough it may be told E307 LOGON BUSY, TRY AGAIN, which is the bound working.
        assert await keep_logging_on(port, "ICS1", "TS0001", asyncio.Event(), once=True) == (1, [])
        stop = asyncio.Event()
        codes: list[str] = []
        sources = ["127.0.2.1"] * 25 + [f"127.0.3.{i + 1}" for i in range(25)]  # one address, and 25
        guessers = [asyncio.ensure_future(guesser(port, s, k, stop, codes)) for k, s in enumerate(sources)]
        legit = asyncio.ensure_future(keep_logging_on(port, "ICS1", "TS0001", stop))
        peak = 0.0
        for _ in range(40):
            await asyncio.sleep(0.2)
            peak = max(peak, metric(metrics(mport), "msc_logon_checks", state="running"))
        stop.set()
        await asyncio.gather(*guessers)
        return await legit, codes, peak, metrics(mport)

    (ok, failures), codes, peak, m = asyncio.run(scenario())
    assert failures == [] and ok >= 5, (ok, failures[:3])  # every real logon got through
    # E108: an ID that is not one by the grammar (not 1-6 letters and digits) is refused unchecked.
    assert set(codes) <= {"E202", "E307", "E108", "closed"}, set(codes)
    assert codes.count("E202") > 0 and codes.count("E307") > 0
    assert metric(m, "msc_logon_throttled_total", reason="address") > 0
    assert 1 <= peak <= max(1, min(4, os.cpu_count() or 1))  # max_logon_checks' default
    assert serve.stop() == 0
    rows = set(StateStore(load(cfg).state_db).users())
    assert rows <= {"*UNKNOWN*"} | {u[0] for u in USERS}, rows
    # Every checked guess has its records (AC-7); the unchecked ones are E307 and no attempt.
    failed = [r for r in journal(cfg, kind="SESSION") if r.text.startswith("LOGON FAILED")]
    # (an answer may be lost with a connection msc closed: at most one per such close)
    assert codes.count("E202") <= len(failed) <= codes.count("E202") + codes.count("closed")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_the_alerts_on_these_bounds_fire():
    r = subprocess.run(["promtool", "test", "rules", str(ROOT / "tests" / "promtool" / "bounds_alerts.test.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

