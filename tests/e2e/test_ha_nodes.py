"""Two real ``msc serve`` nodes with ``[node]`` and a lease in a real PostgreSQL (issue 16 items 2
and 5): one active, one standby with its listeners closed and ``/readyz`` 503 ``standby``; a
clean stop hands over at once; a SIGSTOPped active loses the lease to the standby (epoch + 1)
and, continued, commits nothing and exits 75 (its supervisor starts it again, as a standby).

What waits for the PostgreSQL journal (issue 16 item 1, another branch): here each node has its
own SQLite journal, queues and OSNs, so this is the lifecycle only — "commits nothing" is checked
in the stopped node's own journal, and the database's half of the fence (msc_fence in each
commit transaction) is tested in tests/integration/test_ha_lease_pg.py. The kill -9 failover
with 0 acknowledged lost and continuing OSNs needs the shared journal.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.keyring import KeyRing
from tests import pg as pgmod
from tests.conftest import free_port, make_config
from tests.e2e.conftest import Proc, start_stub
from tests.e2e.test_terminal_failover import QUERY, scripted

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(pgmod.missing_reason() is not None, reason=pgmod.missing_reason() or "")]

#: Short enough for a test, long enough that a loaded 2-core machine renews in time.
TTL = 3
_db = itertools.count(1)


def wait_until(cond, what: str, timeout: float = 30.0, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"{what}: the node exited ({proc.p.returncode}):\n{proc.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class Pair:
    """Nodes A and B: the same configuration but for [node] name, on one stub, one lease database."""

    def __init__(self, tmp: Path, pg, procs: list[Proc]) -> None:
        self.tmp, self.procs = tmp, procs
        up = free_port()
        start_stub(procs, tmp, up)
        db = f"hanodes{next(_db)}"
        pg.create_database(db)
        dsn = f"postgresql://postgres@127.0.0.1:{pg.port}/{db}?passfile={pg.passfile}"
        self.ports = {n: free_port() for n in "AB"}
        self.metrics = {n: free_port() for n in "AB"}
        self.cfg = {}
        for n in "AB":
            cfg = make_config(tmp / n, upstream_ports=[up], port=self.ports[n], metrics_port=self.metrics[n])
            cfg.write_text(cfg.read_text() + f'\n[node]\nname = "node-{n.lower()}"\nlease_ttl_s = {TTL}\n'
                                              f'lease_dsn = "{dsn}"\n')
            self.cfg[n] = cfg
        self.proc: dict[str, Proc] = {}

    def start(self, n: str, expect: str) -> Proc:
        """Start node n; wait until its ready file says ``expect`` (standby, or ready)."""
        ready = self.tmp / n / "ready"
        ready.unlink(missing_ok=True)
        p = Proc("serve", "--config", str(self.cfg[n]), "--ready-file", str(ready), log=self.tmp / n / "serve.err")
        self.procs.append(p)
        self.proc[n] = p
        wait_until(lambda: ready.exists() and ready.read_text().strip() == expect, f"{n} {expect}", proc=p)
        return p

    def readyz(self, n: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics[n]}/readyz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except OSError:
            return 0, {}

    def metric(self, n: str, line: str) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics[n]}/metrics", timeout=5) as r:
            return line in r.read().decode().splitlines()

    def accepts(self, n: str) -> bool:
        with socket.socket() as s:
            s.settimeout(2)
            return s.connect_ex(("127.0.0.1", self.ports[n])) == 0

    def active(self, n: str) -> dict | None:
        code, doc = self.readyz(n)
        return doc if code == 200 and doc.get("node", {}).get("role") == "active" else None

    def addr(self, *names: str) -> str:
        return ",".join(f"127.0.0.1:{self.ports[n]}" for n in names)

    def journal(self, n: str) -> list:
        s = load(self.cfg[n])
        return list(search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file), Query()))


@pytest.fixture
def pair(tmp_path, pg_server, procs):
    return Pair(tmp_path, pg_server, procs)


def test_the_standby_keeps_its_listeners_closed_and_takes_over_at_the_actives_clean_stop(pair):
    a = pair.start("A", "ready")
    doc = wait_until(lambda: pair.active("A"), "A active")
    assert doc["status"] == "ready" and doc["node"] == {"name": "node-a", "role": "active", "epoch": 1}
    assert pair.metric("A", 'msc_node_role{role="active"} 1.0') and pair.metric("A", "msc_node_lease_epoch 1.0")

    pair.start("B", "standby")
    code, doc = wait_until(lambda: (lambda r: r if r[1].get("node", {}).get("holder") else None)(pair.readyz("B")),
                           "B sees the holder")
    assert code == 503
    assert doc == {"status": "standby", "reasons": {"role": "standby"},
                   "node": {"name": "node-b", "role": "standby", "epoch": 0, "holder": "node-a"}}
    assert not pair.accepts("B")  # no listener: a load balancer and a two-address client skip it
    assert pair.metric("B", 'msc_node_role{role="standby"} 1.0')
    assert pair.metric("B", 'msc_node_role{role="active"} 0.0')

    r = scripted(pair.addr("A", "B"), QUERY, expect=1, timeout=15)
    assert r.returncode == 0, r.stderr
    assert f"Connected to msc at {pair.addr('A')}." in r.stderr

    # A SIGHUP to the standby (its configuration changed) is applied once it has taken over.
    cfg_b = pair.cfg["B"]
    cfg_b.write_text(cfg_b.read_text().replace("idle_logoff_s = 1800", "idle_logoff_s = 1700"))
    pair.proc["B"].p.send_signal(signal.SIGHUP)
    wait_until(lambda: "config.reload_deferred" in pair.proc["B"].log.read_text(), "B defers the reload")
    assert pair.readyz("B")[0] == 503

    t0 = time.monotonic()
    assert a.stop() == 0  # SIGTERM: drain, journal closed, lease released
    doc = wait_until(lambda: pair.active("B"), "B active")
    took = time.monotonic() - t0
    assert doc["node"]["epoch"] == 2
    assert pair.accepts("B") and not pair.accepts("A")
    assert "lease.released" in a.log.read_text()
    wait_until(lambda: any(r.text.startswith("CONFIG RELOAD OK") for r in pair.journal("B")), "B applies the reload")
    r = scripted(pair.addr("A", "B"), QUERY, expect=1, timeout=15)
    assert r.returncode == 0, r.stderr
    assert f"Connected to msc at {pair.addr('B')}." in r.stderr
    print(f"clean handover: B serving {took:.2f} s after A's SIGTERM (lease ttl {TTL} s)")


def test_a_sigstopped_active_loses_the_lease_and_continued_it_commits_nothing_and_exits_75(pair):
    a = pair.start("A", "ready")
    wait_until(lambda: pair.active("A"), "A active")
    r = scripted(pair.addr("A", "B"), QUERY, expect=1, timeout=15)  # traffic at A: records to compare
    assert r.returncode == 0, r.stderr
    b = pair.start("B", "standby")

    os.kill(a.p.pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        doc = wait_until(lambda: pair.active("B"), "B takes over from the stopped A", timeout=60, proc=b)
        took = time.monotonic() - stopped
        assert doc["node"]["epoch"] == 2
        # A connection and a message to the stopped A wait in its kernel backlog: continued, A
        # must neither journal their session nor answer them.
        late = socket.create_connection(("127.0.0.1", pair.ports["A"]), timeout=5)
        late.sendall(b"\x00\x00\x00\x05HELLO")
    finally:
        resumed = time.time()
        os.kill(a.p.pid, signal.SIGCONT)
    try:
        assert a.p.wait(30) == 75
    finally:
        late.close()
    log = a.log.read_text()
    assert "node.stepped_down" in log and "the lease was not renewed in time" in log
    records = pair.journal("A")
    assert records, "A journaled its start and the query"
    after = [rec for rec in records if rec.ts / 1e6 >= resumed]
    assert after == [], f"A committed {len(after)} record(s) after it was continued: {[r.text for r in after]}"
    assert not any("STOP node" in rec.text or rec.text.startswith("STOP ") for rec in records)  # no clean stop

    assert pair.active("B") and b.p.poll() is None
    r = scripted(pair.addr("A", "B"), QUERY, expect=1, timeout=15)
    assert r.returncode == 0, r.stderr
    # Its supervisor starts A again: a standby now, behind node-b.
    pair.start("A", "standby")
    code, doc = wait_until(lambda: (lambda r: r if r[1].get("node", {}).get("holder") else None)(pair.readyz("A")),
                           "A sees the holder")
    assert code == 503 and doc["node"]["holder"] == "node-b"
    print(f"SIGSTOP of the active: B serving {took:.2f} s later (lease ttl {TTL} s)")

    # kill -9 of B (no release, no STOP record): A takes over once B's lease expires, epoch 3.
    killed = time.monotonic()
    b.p.kill()
    b.p.wait(10)
    doc = wait_until(lambda: pair.active("A"), "A takes over from the killed B", timeout=60, proc=pair.proc["A"])
    assert doc["node"]["epoch"] == 3 and pair.accepts("A")
    r = scripted(pair.addr("B", "A"), QUERY, expect=1, timeout=15)
    assert r.returncode == 0, r.stderr
    print(f"kill -9 of the active: A serving {time.monotonic() - killed:.2f} s later")


def test_a_node_that_cannot_reach_the_lease_database_stays_standby_and_says_why(tmp_path, procs, pg_server):
    cfg = make_config(tmp_path / "C", port=free_port(), metrics_port=(mport := free_port()))
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/msc?passfile={pg_server.passfile}"
    cfg.write_text(cfg.read_text() + f'\n[node]\nname = "node-c"\nlease_ttl_s = {TTL}\nlease_dsn = "{dead}"\n')
    ready = tmp_path / "C" / "ready"
    c = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "C" / "serve.err")
    procs.append(c)
    wait_until(lambda: ready.exists() and ready.read_text().strip() == "standby", "C standby", proc=c)

    def said_why():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/readyz", timeout=5)
        except urllib.error.HTTPError as e:
            doc = json.loads(e.read())
            return doc if "lease_error" in doc["node"] else None
        return None

    doc = wait_until(said_why, "C says why it is not active", proc=c)
    assert doc["status"] == "standby" and "lease database" in doc["node"]["lease_error"]
    assert "holder" not in doc["node"]
    assert c.stop() == 0  # SIGTERM of a standby: a clean exit
    assert c.log.read_text().count("lease.unavailable") == 1  # logged when it began, not at every poll
