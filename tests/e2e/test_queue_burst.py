"""Hostile suite, issue 14 item 4, against a real `msc serve` and `msc stub`: an upstream burst of
3 × queue_max unsolicited messages to a logged-off mnemonic. The queue never exceeds its bound,
the excess is refused upstream with E307, and once the terminal has drained the queue the
switch's RSS is back within 10 % of its pre-burst figure. Bounds and outcomes only; the timed
figures at the issue's sizes are bench/queue_bench.py's (bench/results/queues-*.md).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.request

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import start_serve, start_stub, wait_port
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(300)

QUEUE_MAX = 500


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=HANG_S) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


async def control(port: int, command: str, timeout: float = 120) -> str:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(command.encode() + b"\n")
    await w.drain()
    line = await asyncio.wait_for(r.readline(), timeout)
    w.close()
    return line.decode().strip()


async def until(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def drain(port: int, count: int) -> list[str]:
    """Log ICS2 on, take and acknowledge ``count`` outputs, log off."""
    c = await WireClient.connect(port)
    await c.banner()
    assert (await c.logon("ICS2", "TS0002", PASSWORD)).type == "A"
    texts = [(await c.output(timeout=30)).text for _ in range(count)]
    assert (await c.send("ICS2.LOGOFF")).type == "A"
    c.close()
    return texts


@pytest.fixture
def burst_switch(tmp_path, procs):
    up, ctl, port, mport = free_port(), free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport,
                      switch_extra=f"queue_max = {QUEUE_MAX}")
    start_stub(procs, tmp_path, up, "--control", f"127.0.0.1:{ctl}", "--resend-s", "0")
    wait_port(ctl)
    serve = start_serve(procs, tmp_path, cfg)
    return serve, port, mport, ctl


def test_an_upstream_burst_of_three_times_queue_max_is_bounded_refused_e307_and_memory_returns(burst_switch):
    serve, port, mport, ctl = burst_switch
    line = "ICS2.AM.CA0130000.TXT BURST " + "B" * 400

    async def scenario():
        # Warm-up: the same kind of traffic queued and drained once, so that first-use costs
        # (imports, caches) are not counted as the burst's.
        assert await control(ctl, f"BURST 200 {line}") == "BURST 200 A=200"
        await drain(port, 200)
        await until(lambda: metrics(mport)["msc_delivery_queued"] == 0, 30)
        rss0 = rss_mb(serve.p.pid)
        peak = 0.0
        done = asyncio.Event()

        async def watch():
            nonlocal peak
            while not done.is_set():
                m = await asyncio.to_thread(metrics, mport)
                peak = max(peak, m["msc_delivery_queue_depth_max"])
                await asyncio.sleep(0.01)

        w = asyncio.create_task(watch())
        result = await control(ctl, f"BURST {3 * QUEUE_MAX} {line}")
        done.set()
        await w
        m = await asyncio.to_thread(metrics, mport)
        peak = max(peak, m["msc_delivery_queue_depth_max"])
        texts = await drain(port, QUEUE_MAX)
        await until(lambda: metrics(mport)["msc_delivery_queued"] == 0, 60)
        # The switch looks every 5 s whether a burst left freed memory to give back.
        rss1 = await until(lambda: (r := rss_mb(serve.p.pid)) <= rss0 * 1.10 and r, 60, interval=0.5)
        return result, peak, m, texts, rss0, rss1

    result, peak, m, texts, rss0, rss1 = asyncio.run(scenario())
    print(f"\nburst {3 * QUEUE_MAX} to queue_max {QUEUE_MAX}: {result}; peak depth {peak:.0f}; "
          f"RSS {rss0:.1f} -> {rss1:.1f} MB after the drain")
    assert result == f"BURST {3 * QUEUE_MAX} A={QUEUE_MAX} E307={2 * QUEUE_MAX}"
    assert peak <= QUEUE_MAX
    assert m["msc_delivery_queued"] == QUEUE_MAX and m["msc_delivery_queue_limit"] == QUEUE_MAX
    assert m['msc_delivery_refused_total{path="unsolicited"}'] == 2 * QUEUE_MAX
    assert m["msc_delivery_held_bytes"] == 0  # the queued texts wait in the journal
    assert len(texts) == QUEUE_MAX and all("BURST" in t for t in texts)
    assert rss1 <= rss0 * 1.10
    serve.p.send_signal(signal.SIGTERM)
    assert serve.p.wait(30) == 0


@pytest.mark.skipif(__import__("shutil").which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_the_queue_bound_alerts_fire_on_a_full_queue_refusals_and_a_paused_upstream():
    """config/prometheus/alerts.yml against tests/promtool/queue_alerts.test.yml."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["promtool", "test", "rules", str(root / "tests" / "promtool" / "queue_alerts.test.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
