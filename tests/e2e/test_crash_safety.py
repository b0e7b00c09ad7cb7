"""kill -9 of `msc serve` under load loses no record of a message whose A was sent."""

from __future__ import annotations

import asyncio
import signal

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.journal.verify import verify
from msc.keyring import KeyRing
from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import start_serve, start_stub
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(120)


async def _load(port: int, acked: list[str], stop: asyncio.Event, n_clients: int = 8) -> None:
    async def one(i: int) -> None:
        try:
            c = await WireClient.connect(port)
            await c.banner()
            assert (await c.logon("ICS1" if i == 0 else "ICS2", "TS0001" if i == 0 else "TS0002", PASSWORD)).type == "A"
        except (TimeoutError, ConnectionError, OSError, AssertionError):
            return
        k = 0
        while not stop.is_set():
            text = f"{'ICS1' if i == 0 else 'ICS2'}C{i}N{k}.QV.CA0130000.LIC/K{i}X{k}"
            k += 1
            try:
                f = await c.send(text)
            except (TimeoutError, ConnectionError, OSError):
                return
            if f.type == "A":
                acked.append(text)

    # Two sessions can log on at once here (ICS1, ICS2); more run on the same two stations.
    await asyncio.gather(*(one(i) for i in range(2)))


def test_kill_9_under_load_loses_no_acknowledged_record(tmp_path, procs):
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    start_stub(procs, tmp_path, up)
    serve = start_serve(procs, tmp_path, cfg)
    acked: list[str] = []

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(_load(port, acked, stop))
        while len(acked) < 300:
            await asyncio.sleep(0.01)
        serve.p.send_signal(signal.SIGKILL)  # no chance to flush anything
        serve.p.wait()
        stop.set()
        await asyncio.wait_for(task, HANG_S)

    asyncio.run(scenario())
    assert len(acked) >= 300
    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    received = {r.text for r in search(s.journal_dir, ring, Query(kind="RECEIVED"))}
    lost = [t for t in acked if t not in received]
    assert lost == [], f"{len(lost)} acknowledged messages missing from the journal"
    res = verify(s.journal_dir, ring, name=s.config.switch.name)
    assert res.ok, res.problems
