"""Store-and-forward across kill -9: queued outputs come back, in order, after a restart."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.keyring import KeyRing
from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import Proc, wait_for, wait_port
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(120)


def test_queued_outputs_survive_kill_9_and_arrive_in_order(tmp_path, procs):
    up, port, ctl = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--control", f"127.0.0.1:{ctl}",
                      "--latency-ms", "300", log=tmp_path / "stub.err"))
    wait_port(up)

    def serve() -> Proc:
        ready = tmp_path / "ready"
        ready.unlink(missing_ok=True)
        p = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "serve.err")
        procs.append(p)
        wait_for(ready, p)
        return p

    def queued() -> list:
        return [r for r in search(s.journal_dir, ring, Query(kind="QUEUED", mnemonic="ICS1"))]

    first = serve()

    async def before_crash():
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        for i in range(3):
            assert (await c.send(f"ICS1K{i}.QV.CA0130000.LIC/KILL{i}")).type == "A"
        c.close()

    asyncio.run(before_crash())
    deadline = time.monotonic() + HANG_S
    while len(queued()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", ctl)) as sc:
        sc.sendall(b"ICS1.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W424242\n")
        assert sc.makefile().readline().strip() == "A"
    while len(queued()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(queued()) == 4
    first.p.send_signal(signal.SIGKILL)
    first.p.wait()
    serve()

    async def after_restart():
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        outs = [await c.output() for _ in range(4)]
        c.close()  # each output was acknowledged as it came; their DELIVERED records are waited on below
        return outs

    outs = asyncio.run(after_restart())
    assert [o.text.split(".")[0] for o in outs] == ["ICS1K0", "ICS1K1", "ICS1K2", "ICS1"]
    xids = [o.xid for o in outs]
    assert xids == sorted(xids) and len(set(xids)) == 4
    assert outs[3].text == "ICS1.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W424242"
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        delivered = {r.osn for r in search(s.journal_dir, ring, Query(kind="DELIVERED", mnemonic="ICS1"))}
        if set(xids) <= delivered:
            break
        time.sleep(0.1)
    assert set(xids) <= delivered
    queued_osns = {r.osn: r.seq for r in queued()}
    delivered_seq = {r.osn: r.seq for r in search(s.journal_dir, ring, Query(kind="DELIVERED", mnemonic="ICS1"))}
    for x in xids:
        assert queued_osns[x] < delivered_seq[x]  # QUEUED, then DELIVERED
