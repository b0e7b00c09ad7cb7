#!/usr/bin/env python3
"""`make ha-soak`: two msc nodes on PostgreSQL under Patroni, a fault every minute or two (issue 16 item 6).

    .venv/bin/python bench/ha_soak.py --minutes 10 [--fault-every 60] [--lease-ttl 2]

On loopback, as in config/patroni/ (each member its own address, 127.0.0.11–13, ports chosen free):

* **3 etcd** members and **3 PostgreSQL** nodes under **Patroni**, built from the example files in
  config/patroni/ (data in a temporary directory; synchronous replication, strict; Patroni's
  timings shortened for a soak: ``--patroni-ttl`` 10 s, loop_wait 2 s, retry_timeout 3 s — the
  example's 30/10/10 would make each PostgreSQL failover last ~30 s). The servers run as the
  ``postgres`` account when this runs as root (PostgreSQL refuses root).
* **2 ``msc serve`` nodes** (``node-a``, ``node-b``: the same configuration and keys but for
  ``[node] name`` and their ports) with ``[storage] backend = "postgresql"`` on the multi-host
  URI of the three PostgreSQL nodes (``target_session_attrs=read-write``), the lease in the same
  database. Each is kept running by a supervisor loop, as systemd's ``Restart=always`` with
  ``RestartSec=1`` (the shipped unit) would: a killed node comes back, a node that lost the lease
  exits 75 and comes back, both as the standby.
* Clients with **both addresses** (``msc terminal --connect a,b``): ``--terminals`` load
  terminals in closed loop and a ring of probe terminals, one probe every ``--probe-interval``
  (100 ms) on a fixed schedule; availability by time as in ``bench/soak.py`` (the time without a
  successful probe, by answer time; :func:`soak.unserved`).
* **Faults** in turn, one every ``--fault-every`` seconds: ``kill -9`` of the active msc node;
  ``kill -9`` of the PostgreSQL primary's host — its Patroni, postmaster and backends at once
  (a postmaster killed alone is restarted in place by its Patroni: no failover); it is started
  again ``--rejoin-after`` seconds after a new primary is promoted and rejoins as a replica
  (pg_rewind); SIGSTOP of the active msc node until the other node serves (or 60 s), then
  SIGCONT: it must commit nothing and exit 75.
* Per fault (:func:`outage`): time to the other msc node's ``/readyz`` 200 ("other serving"),
  "service back" — the moment from which probes succeed for 5 s without a new gap — and the time
  without a successful probe in between; for a PostgreSQL fault also the promotion (a member's
  Patroni ``GET /primary`` 200) and service back after it.
* At the end (clean stop of both nodes): every message a client got an ``A`` for is in the shared
  journal (**acknowledged but lost must be 0**); every output's (mnemonic, OSN) appears once
  (**duplicated OSNs must be 0**); every output created was delivered or ended UNDELIVERED; the
  journal verifies (``msc.journal.verify`` on the PostgreSQL reader).

``--lease-only`` runs the same with each node's own SQLite journal and only the lease in the
Patroni cluster (the lifecycle before the journal moved to PostgreSQL): lost messages are then
looked for in both journals, and OSNs are per node (duplicates across nodes are expected there).

Writes bench/results/ha-soak-<stamp>.json and .md. Not part of ``make test`` (minutes, 3 etcd,
3 PostgreSQL; `make ha-deps` installs Debian's patroni, etcd-server, etcd-client, postgresql).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402
from tests import pg as pgmod  # noqa: E402

import benchconfig  # noqa: E402
import soak  # noqa: E402

PY = sys.executable
PATRONI_DIR = ROOT / "config" / "patroni"
ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
#: How often the timeline threads look at each node's /readyz and each member's /primary (s).
POLL_S = 0.1
#: What to stop however the run ends (an error, Ctrl-C, SIGTERM): nothing is left running.
CLEANUP: list = []
#: Set when the run is being torn down: every wait in a thread gives up at once.
ABORT = threading.Event()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 0.5) -> int:
    """The HTTP status of a GET, 0 when nothing answered in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return 0


def wait_for(cond, what: str, timeout: float = 120.0, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline or ABORT.is_set():
            raise RuntimeError(f"{what}: not within {timeout} s")
        ABORT.wait(poll)


# --- etcd + Patroni ------------------------------------------------------------------------------


class PatroniCluster:
    """3 etcd members and 3 Patroni-managed PostgreSQL nodes on 127.0.0.11–13, from config/patroni/."""

    def __init__(self, base: Path, *, ttl: int, loop_wait: int, retry_timeout: int, durable: bool) -> None:
        self.base = base
        self.account = pgmod._server_user()  # None: this process's own user (not root)
        self.bindir = pgmod.find_bindir()
        if self.bindir is None:
            raise RuntimeError(pgmod.missing_reason() or "no PostgreSQL")
        self.ttl, self.loop_wait, self.retry_timeout, self.durable = ttl, loop_wait, retry_timeout, durable
        self.etcd_ports = [(free_port(a), free_port(a)) for a in ADDRS]  # (client, peer)
        self.pg_ports = [free_port(a) for a in ADDRS]
        self.api_ports = [free_port(a) for a in ADDRS]
        self.passwords = {k: secrets.token_urlsafe(18) for k in ("superuser", "replication", "rewind")}
        self.msc_password = secrets.token_urlsafe(18)
        self.etcd: list[subprocess.Popen] = []
        self.patroni: list[subprocess.Popen | None] = [None, None, None]
        self.scope = f"msc-soak-{secrets.token_hex(3)}"

    # files

    def _etcd_config(self, i: int) -> Path:
        doc = yaml.safe_load((PATRONI_DIR / f"etcd{i + 1}.yml").read_text())
        c, p = self.etcd_ports[i]
        a = ADDRS[i]
        doc.update({"data-dir": str(self.base / f"etcd{i + 1}"),
                    "listen-client-urls": f"http://{a}:{c}", "advertise-client-urls": f"http://{a}:{c}",
                    "listen-peer-urls": f"http://{a}:{p}", "initial-advertise-peer-urls": f"http://{a}:{p}",
                    "initial-cluster": ",".join(f"etcd{j + 1}=http://{ADDRS[j]}:{self.etcd_ports[j][1]}"
                                                for j in range(3)),
                    "initial-cluster-token": self.scope})
        path = self.base / f"etcd{i + 1}.yml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def member_dir(self, i: int) -> Path:
        return self.base / f"pg{i + 1}"

    def data_dir(self, i: int) -> Path:
        return self.member_dir(i) / "data"

    def _patroni_config(self, i: int) -> Path:
        doc = yaml.safe_load((PATRONI_DIR / f"pg{i + 1}.yml").read_text())
        a, d = ADDRS[i], self.member_dir(i)
        doc["scope"] = self.scope
        doc["restapi"] = {"listen": f"{a}:{self.api_ports[i]}", "connect_address": f"{a}:{self.api_ports[i]}"}
        doc["etcd3"] = {"hosts": ",".join(f"{ADDRS[j]}:{self.etcd_ports[j][0]}" for j in range(3))}
        dcs = doc["bootstrap"]["dcs"]
        dcs.update({"ttl": self.ttl, "loop_wait": self.loop_wait, "retry_timeout": self.retry_timeout})
        params = dcs["postgresql"]["parameters"]
        params.update({"shared_buffers": "32MB", "max_connections": 60, "wal_keep_size": "64MB"})
        if not self.durable:  # full_page_writes stays on: pg_rewind (the old primary's rejoin) needs it
            params.update({"fsync": "off"})
        pgc = doc["postgresql"]
        pgc.update({"listen": f"{a}:{self.pg_ports[i]}", "connect_address": f"{a}:{self.pg_ports[i]}",
                    "data_dir": str(d / "data"), "pgpass": str(d / "pgpass"), "bin_dir": str(self.bindir)})
        pgc["parameters"] = {"unix_socket_directories": str(d)}
        path = self.base / f"pg{i + 1}.yml"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o644)
        return path

    # processes

    def start(self) -> None:
        self.base.chmod(0o755)  # the postgres account reads its config file here
        for i in range(3):
            self.etcd.append(subprocess.Popen(["etcd", "--config-file", str(self._etcd_config(i))],
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=open(self.base / f"etcd{i + 1}.log", "w"),
                                              preexec_fn=pgmod._die_with_parent))
        endpoints = ",".join(f"{ADDRS[j]}:{self.etcd_ports[j][0]}" for j in range(3))
        wait_for(lambda: subprocess.run(["etcdctl", f"--endpoints={endpoints}", "endpoint", "health"],
                                        capture_output=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
                                        ).returncode == 0, "etcd healthy", 60, 0.2)
        for i in range(3):
            d = self.member_dir(i)
            d.mkdir(mode=0o700)
            if self.account is not None:
                os.chown(d, self.account.uid, self.account.gid)
            self._patroni_config(i)
        self.start_member(0)
        wait_for(lambda: self.primary() == 0, "pg1 bootstrapped as the leader", 120, 0.2)
        for i in (1, 2):
            self.start_member(i)
        wait_for(self.healthy, "a leader, a synchronous standby and a replica, all running", 180, 0.2)
        self._create_msc_database()

    def start_member(self, i: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PATRONI_"))}
        env.update({"PATRONI_SUPERUSER_PASSWORD": self.passwords["superuser"],
                    "PATRONI_REPLICATION_PASSWORD": self.passwords["replication"],
                    "PATRONI_REWIND_PASSWORD": self.passwords["rewind"], "LC_ALL": "C", "TZ": "UTC"})
        kw: dict = {}
        if self.account is not None:
            env.update({"HOME": str(self.member_dir(i)), "USER": self.account.name, "LOGNAME": self.account.name})
            kw = {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}
        log = open(self.base / f"pg{i + 1}.patroni.log", "a")
        self.patroni[i] = subprocess.Popen(["patroni", str(self.base / f"pg{i + 1}.yml")], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=log, env=env, cwd=self.member_dir(i),
                                           preexec_fn=pgmod._die_with_parent, **kw)

    def api(self, i: int, path: str, timeout: float = 0.5) -> int:
        return http_status(f"http://{ADDRS[i]}:{self.api_ports[i]}/{path}", timeout)

    def cluster(self) -> list[dict]:
        for i in range(3):
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://{ADDRS[i]}:{self.api_ports[i]}/cluster", timeout=1) as r:
                    return json.loads(r.read())["members"]
        return []

    def primary(self) -> int | None:
        for i in range(3):
            if self.patroni[i] is not None and self.api(i, "primary") == 200:
                return i
        return None

    def healthy(self) -> bool:
        members = self.cluster()
        roles = {m.get("role") for m in members}
        return (len(members) == 3 and all(m.get("state") in ("running", "streaming") for m in members)
                and {"leader", "sync_standby"} <= roles)

    def _psql(self, i: int, sql: str, db: str = "postgres") -> str:
        env = {"PGPASSWORD": self.passwords["superuser"], "PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        r = subprocess.run([str(self.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                            "-h", ADDRS[i], "-p", str(self.pg_ports[i]), "-U", "postgres", "-d", db, "-c", sql],
                           capture_output=True, text=True, env=env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql on pg{i + 1}: {r.stderr.strip()}")
        return r.stdout.strip()

    def _create_msc_database(self) -> None:
        i = self.primary()
        assert i is not None
        # The password goes over the wire as SQL only to the primary, on loopback; never in a file here
        # but the 0600 password file msc reads ([storage] password_file).
        self._psql(i, f"CREATE ROLE msc LOGIN PASSWORD '{self.msc_password}'")
        self._psql(i, "CREATE DATABASE msc OWNER msc")

    def dsn(self) -> str:
        hosts = ",".join(f"{ADDRS[j]}:{self.pg_ports[j]}" for j in range(3))
        # No connect_timeout: asyncpg does not know it and passes it on as a server setting (FATAL).
        return f"postgresql://msc@{hosts}/msc?target_session_attrs=read-write"

    def kill_host(self, i: int) -> None:
        """``kill -9`` of member i's whole host: Patroni, the postmaster and every backend at once."""
        pids = pgmod._pids_with_cwd(self.data_dir(i))
        p = self.patroni[i]
        if p is not None:
            pids.append(p.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if p is not None:
            p.wait()
        self.patroni[i] = None
        wait_for(lambda: not pgmod._pids_with_cwd(self.data_dir(i)), f"pg{i + 1}'s processes gone", 60, 0.05)

    def stop(self) -> None:
        for p in self.patroni:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in self.patroni:
            if p is not None:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        for i in range(3):
            for pid in pgmod._pids_with_cwd(self.data_dir(i)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for p in self.etcd:
            p.kill()
            p.wait()
        self.patroni, self.etcd = [None, None, None], []


# --- the two msc nodes ---------------------------------------------------------------------------


class MscNode:
    """One ``msc serve`` node and its supervisor (Restart=always, RestartSec=1)."""

    def __init__(self, name: str, cfg: Path, port: int, mport: int) -> None:
        self.name, self.cfg, self.port, self.mport = name, cfg, port, mport
        self.dir = cfg.parent
        self.proc: subprocess.Popen | None = None
        self.exits: list[dict] = []  # {"t": time.time(), "status": n}
        self.stopping = False
        self.restart_s = 1.0

    async def supervise(self) -> None:
        while not self.stopping:
            self.proc = subprocess.Popen([PY, "-m", "msc", "serve", "--config", str(self.cfg), "--ready-file",
                                          str(self.dir / "ready"), "--log-level", "warning"],
                                         stdin=subprocess.DEVNULL, stderr=open(self.dir / "serve.err", "a"),
                                         preexec_fn=pgmod._die_with_parent)
            while self.proc.poll() is None:
                await asyncio.sleep(0.05)
            self.exits.append({"t": time.time(), "status": self.proc.returncode})
            if not self.stopping:
                await asyncio.sleep(self.restart_s)

    def readyz(self) -> int:
        return http_status(f"http://127.0.0.1:{self.mport}/readyz", 0.5)

    def signal(self, sig: int) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.pid
        return None

    def kill(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 90)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Timeline:
    """Threads that look at each msc node's /readyz and each member's /primary every POLL_S:
    when each started and stopped serving (or being the primary)."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, str, bool]] = []  # (time, who, up)
        self.state: dict[str, bool] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def watch(self, who: str, probe) -> None:
        def run() -> None:
            while not self.stop.is_set():
                up = bool(probe())
                with self.lock:
                    if self.state.get(who) != up:
                        self.state[who] = up
                        self.changes.append((time.time(), who, up))
                self.stop.wait(POLL_S)
        threading.Thread(target=run, name=f"watch-{who}", daemon=True).start()

    def first_up(self, who: str | set[str], after: float) -> float | None:
        names = {who} if isinstance(who, str) else who
        with self.lock:
            return next((t for t, w, up in self.changes if w in names and up and t >= after), None)

    def up_now(self, who: str) -> bool:
        with self.lock:
            return self.state.get(who, False)


def write_configs(work: Path, args, cluster: PatroniCluster | None, up1: int, up2: int,
                  n_stations: int) -> list[tuple[str, Path, int, int]]:
    """node-a's directory (config, users) copied for node-b, its key ring shared: both nodes must have the
    journal's keys and the same users; only [node] name and the ports differ."""
    out = []
    a = work / "node-a"
    port, mport = free_port(), free_port()
    extra = f'\n[node]\nname = "node-a"\nlease_ttl_s = {args.lease_ttl}\n'
    pwfile = work / "pg.password"
    if cluster is not None:
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cluster.msc_password + "\n")
        if args.lease_only:
            extra += f'lease_dsn = "{cluster.dsn()}"\nlease_password_file = "{pwfile}"\n'
        else:
            extra += f'\n[storage]\nbackend = "postgresql"\ndsn = "{cluster.dsn()}"\npassword_file = "{pwfile}"\n'
    cfg = benchconfig.write(a, port=port, metrics_port=mport, upstream_ports=[up1, up2], stations=n_stations,
                            timeout_s=5, heartbeat_s=1, extra=extra)
    out.append(("node-a", cfg, port, mport))
    b = work / "node-b"
    shutil.copytree(a, b)
    if not args.lease_only:
        # One key ring for the one journal (OPERATIONS.md "Running two nodes"): a month's key is made by
        # the node that first writes in that month, so a copy taken now would lack it — share the
        # directory. (Two SQLite journals need two rings: a ring remembers the journal it served.)
        shutil.rmtree(b / "data" / "keys")
        (b / "data" / "keys").symlink_to(a / "data" / "keys")
    port_b, mport_b = free_port(), free_port()
    text = (b / "msc.toml").read_text()
    text = (text.replace(f"127.0.0.1:{port}\"", f"127.0.0.1:{port_b}\"")
            .replace(f"127.0.0.1:{mport}\"", f"127.0.0.1:{mport_b}\"").replace('name = "node-a"', 'name = "node-b"'))
    (b / "msc.toml").write_text(text)
    out.append(("node-b", b / "msc.toml", port_b, mport_b))
    return out


async def ha_soak(args) -> dict:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # then main()'s clean-up
    work = Path(args.workdir or tempfile.mkdtemp(prefix="msc-ha-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    cluster = PatroniCluster(work / "patroni", ttl=args.patroni_ttl, loop_wait=args.patroni_loop_wait,
                             retry_timeout=args.patroni_retry_timeout, durable=args.durable)
    (work / "patroni").mkdir()
    CLEANUP.append(cluster.stop)
    t_setup = time.monotonic()
    await asyncio.to_thread(cluster.start)
    setup_s = time.monotonic() - t_setup
    print(f"Patroni cluster up in {setup_s:.1f} s: {cluster.dsn()}", flush=True)

    up1, up2 = free_port(), free_port()
    n_probe = int(args.probe_timeout / args.probe_interval) + 2
    nodes_cfg = write_configs(work, args, cluster, up1, up2, args.terminals + n_probe + 1)
    nodes = [MscNode(n, cfg, p, m) for n, cfg, p, m in nodes_cfg]
    ports = [n.port for n in nodes]

    def stub(p: int, name: str) -> subprocess.Popen:
        return subprocess.Popen([PY, "-m", "msc", "stub", "--role", "clets", "--listen", f"127.0.0.1:{p}",
                                 "--heartbeat-s", "1"], stdin=subprocess.DEVNULL, stderr=open(work / f"{name}.err", "a"),
                                preexec_fn=pgmod._die_with_parent)

    stubs = [stub(up1, "stub1"), stub(up2, "stub2")]
    CLEANUP.insert(0, lambda: [p.kill() for p in stubs])
    CLEANUP.insert(0, lambda: [n.kill() for n in nodes])
    timeline = Timeline()
    for n in nodes:
        timeline.watch(n.name, lambda n=n: n.readyz() == 200)
    for i in range(3):
        timeline.watch(f"pg{i + 1}", lambda i=i: cluster.patroni[i] is not None and cluster.api(i, "primary") == 200)
    sup_tasks = [asyncio.create_task(nodes[0].supervise())]
    await asyncio.to_thread(wait_for, lambda: timeline.up_now("node-a"), "node-a serving", 120)
    sup_tasks.append(asyncio.create_task(nodes[1].supervise()))
    await asyncio.to_thread(wait_for, lambda: nodes[1].readyz() == 503, "node-b standby", 120)

    acked: list[str] = []
    answers: dict[str, str] = {}
    events: list[dict] = []
    probes: list[tuple[float, float, bool]] = []
    stop = asyncio.Event()

    async def load(i: int) -> None:
        t = soak.Terminal(ports, benchconfig.mnemonic(i), acked, answers)
        k = 0
        while not stop.is_set():
            await t.transact(f"{benchconfig.mnemonic(i)}{k % 1000000:06d}", f"QV.CA0130000.LIC/S{i}X{k}", 10)
            k += 1
            await asyncio.sleep(args.think)

    async def probe() -> None:
        ring = [soak.Terminal(ports, benchconfig.mnemonic(args.terminals + j), acked, answers, retry_s=0.02)
                for j in range(n_probe)]
        inflight: set[asyncio.Task] = set()

        async def one(k: int) -> None:
            t = ring[k % n_probe]
            m = benchconfig.mnemonic(args.terminals + k % n_probe)
            t0 = time.time()
            try:
                ok = await asyncio.wait_for(t.transact(f"{m}P{(k // n_probe) % 100000:05d}",
                                                       f"QW.CA0130000.NAM/PROBE {k}.DOB/19800101", args.probe_timeout),
                                            args.probe_timeout)
            except TimeoutError:
                ok = False
            probes.append((t0, time.time(), ok))

        start = time.monotonic()
        k = 0
        while not stop.is_set():
            task = asyncio.create_task(one(k))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            k += 1
            await asyncio.sleep(max(0.0, start + k * args.probe_interval - time.monotonic()))
        await asyncio.gather(*inflight, return_exceptions=True)

    def active() -> MscNode | None:
        return next((n for n in nodes if timeline.up_now(n.name)), None)

    async def fault(kind: str, ev: dict) -> dict:
        if kind in ("kill9-active", "sigstop-active"):
            a = await asyncio.to_thread(wait_for, active, "an active msc node before the fault", 120)
            other = next(n for n in nodes if n is not a)
            ev["node"] = a.name
            ev["t"] = time.time()
            pid = a.signal(signal.SIGKILL if kind == "kill9-active" else signal.SIGSTOP)
            ev["pid"] = pid
            if kind == "sigstop-active":
                n_exits = len(a.exits)
                try:
                    served = await asyncio.to_thread(
                        lambda: wait_for(lambda: timeline.first_up(other.name, ev["t"]), "the other node serving", 60))
                finally:  # continued in any case: a node left stopped would spoil the rest of the run
                    ev["continued_after_s"] = round(time.time() - ev["t"], 3)
                    a.signal(signal.SIGCONT)
                with contextlib.suppress(RuntimeError):
                    await asyncio.to_thread(wait_for, lambda: len(a.exits) > n_exits, "the stopped node's exit", 60,
                                            0.05)
                ev["exit_status_after_sigcont"] = a.exits[-1]["status"] if len(a.exits) > n_exits else None
                ev["other_serving_s"] = round(served - ev["t"], 3)
            else:  # the killed node's own restart may win the lease (its supervisor starts it in 1 s)
                served = await asyncio.to_thread(
                    lambda: wait_for(lambda: timeline.first_up({n.name for n in nodes}, ev["t"]), "a node serving",
                                     120))
                ev["other_serving_s"] = round(served - ev["t"], 3)
                ev["served_by"] = next((w for t, w, up in timeline.changes if up and t == served and w.startswith("node-")),
                                       None)
        elif kind == "kill9-pg-primary":
            await asyncio.to_thread(wait_for, lambda: cluster.primary() is not None, "a PostgreSQL primary", 120)
            i = cluster.primary()
            if i is None:
                ev["skipped"] = "no primary"
                return ev
            ev["member"] = f"pg{i + 1}"
            ev["t"] = time.time()
            await asyncio.to_thread(cluster.kill_host, i)
            others = {f"pg{j + 1}" for j in range(3) if j != i}
            promoted = await asyncio.to_thread(lambda: wait_for(lambda: timeline.first_up(others, ev["t"]),
                                                                 "a new primary", 180))
            ev["promoted_s"] = round(promoted - ev["t"], 3)

            async def rejoin() -> None:
                await asyncio.sleep(args.rejoin_after)
                cluster.start_member(i)
                with contextlib.suppress(RuntimeError):
                    await asyncio.to_thread(wait_for, lambda: cluster.api(i, "replica") == 200,
                                            f"pg{i + 1} rejoined as a replica", 180, 0.5)
                    ev["rejoined_s"] = round(time.time() - ev["t"], 3)

            ev["_rejoin"] = asyncio.create_task(rejoin())
        return ev

    async def schedule() -> None:
        kinds = [k for k in args.faults.split(",") if k]
        t0 = time.monotonic()
        n = 0
        while not stop.is_set():
            at = t0 + (n + 1) * args.fault_every
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, at - time.monotonic()))
                return
            except TimeoutError:
                pass
            if stop.is_set():  # a long fault (a node that would not exit) ran past the end
                return
            kind = kinds[n % len(kinds)]
            n += 1
            ev: dict = {"fault": kind}
            try:
                await fault(kind, ev)
            except RuntimeError as e:
                ev.setdefault("t", time.time())
                ev["error"] = str(e)
            events.append(ev)
            print(f"{time.strftime('%H:%M:%S')} {kind}: " + ", ".join(f"{k}={v}" for k, v in ev.items()
                                                                       if not k.startswith("_") and k != "t"), flush=True)

    t_start = time.time()
    tasks = [asyncio.create_task(load(i)) for i in range(args.terminals)]
    tasks += [asyncio.create_task(probe())]
    sched = asyncio.create_task(schedule())
    await asyncio.sleep(args.minutes * 60)
    t_end = time.time()
    stop.set()
    await sched
    await asyncio.gather(*tasks, return_exceptions=True)
    for ev in events:
        if "_rejoin" in ev:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ev.pop("_rejoin"), 240)
    # Both nodes running, one serving; let every terminal take what is queued for it, then stop cleanly.
    await asyncio.to_thread(wait_for, active, "an active msc node at the end", 180)
    ts = [soak.Terminal(ports, benchconfig.mnemonic(i), [], answers) for i in range(args.terminals + n_probe)]
    for t in ts:
        await t.ensure()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not all(a.split(".", 1)[0] in answers for a in acked):
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    for t in ts:
        if t.c is not None:
            t.c.close()
    standby_first = sorted(nodes, key=lambda n: timeline.up_now(n.name))
    for n in standby_first:
        await n.stop()
    for s in stubs:
        s.kill()
    for tk in sup_tasks:
        tk.cancel()
    timeline.stop.set()

    checks = await asyncio.to_thread(check_journal, args, nodes, acked)
    await asyncio.to_thread(cluster.stop)

    probes.sort()
    probes = [p for p in probes if p[0] < t_end]
    spans, slip = soak.unserved(probes, args.probe_interval, t_start, t_end)
    duration = t_end - t_start
    unserved_s = sum(b - a for a, b in spans)
    rows = []
    for ev in events:
        if "t" not in ev:
            continue
        back, spent = outage(spans, ev["t"], args.probe_interval)
        row = {k: v for k, v in ev.items() if not k.startswith("_") and k != "t"}
        row.update({"at_s": round(ev["t"] - t_start, 1), "service_back_s": round(back - ev["t"], 3),
                    "unserved_s": round(spent, 3),
                    "probes_failed": sum(1 for s, _, good in probes if ev["t"] <= s < back and not good)})
        if "promoted_s" in ev:
            promoted = ev["t"] + ev["promoted_s"]
            row["msc_serving_after_promotion_s"] = round(max(0.0, back - promoted), 3)
        rows.append(row)

    summary = summarize(rows, duration)
    return {"bench": "ha-soak", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "minutes": args.minutes, "mode": "lease-only (SQLite journal per node)" if args.lease_only
            else "shared PostgreSQL journal", "terminals": args.terminals, "fault_every_s": args.fault_every,
            "lease_ttl_s": args.lease_ttl, "patroni": {"ttl": args.patroni_ttl, "loop_wait": args.patroni_loop_wait,
                                                       "retry_timeout": args.patroni_retry_timeout,
                                                       "fsync": args.durable, "setup_s": round(setup_s, 1)},
            "probe_interval_s": args.probe_interval, "probe_timeout_s": args.probe_timeout,
            "cpus": os.cpu_count(), "load_avg_end": os.getloadavg(),
            "duration_s": round(duration, 3), "unserved_s": round(unserved_s, 3),
            "probe_schedule_slip_s": round(slip, 3), "availability": round(1 - unserved_s / duration, 6),
            "unserved_spans": [{"at_s": round(a - t_start, 2), "s": round(b - a, 3)} for a, b in spans],
            "probes": len(probes), "probes_ok": sum(1 for p in probes if p[2]),
            "faults": rows, "summary": summary,
            "node_exits": {n.name: collections.Counter(str(e["status"]) for e in n.exits) for n in nodes},
            "messages_acknowledged": len(acked),
            "requests_without_fate": sum(1 for a in acked if a.split(".", 1)[0] not in answers),
            **checks, "workdir": str(work)}


#: Service counts as back after a fault once probes succeed for this long without a new outage (s)...
STABLE_S = 5.0
#: ... where a span shorter than this is a slow answer on a loaded machine, not an outage (it still
#: counts as unserved time if it comes before service is back).
BLIP_S = 0.5


def outage(spans: list[tuple[float, float]], t: float, interval: float) -> tuple[float, float]:
    """When service was back for good after a fault at ``t``, and the time without it that the fault
    caused: (back, unserved seconds). ``spans`` are :func:`soak.unserved`'s. Back = the first moment
    from ``t`` on — ``t`` itself or the end of a span — followed by at least BLIP_S of service and
    by no span of BLIP_S or more for STABLE_S; the fault's unserved time is every span that ends
    after ``t`` (less one interval: the last answer before the fault can arrive just after it) and
    begins before ``back``. A fault whose outage begins later than the fault itself (PostgreSQL's:
    msc notices the lost database and steps down only after its lease lapses) is counted whole,
    and a slow answer later on does not keep it open."""
    big = [(a, b) for a, b in spans if b - a >= BLIP_S]

    def serving_from(x: float) -> bool:
        return (not any(a < x + BLIP_S and b > x for a, b in spans)
                and not any(a < x + STABLE_S and b > x for a, b in big))

    back = next((x for x in [t] + sorted(b for a, b in spans if b > t) if serving_from(x)),
                max((b for _, b in spans), default=t))
    spent = sum(b - a for a, b in spans if b > t - interval and a < back)
    return back, spent


def summarize(rows: list[dict], duration: float) -> dict:
    """Median and worst per fault kind and measure, over the faults that ran whole inside the run
    (a fault whose handling failed — its row has ``error`` — or that began after the run's end is
    listed but not counted)."""
    ok = [r for r in rows if "error" not in r and r["at_s"] < duration]

    def stats(kind: str, key: str) -> dict:
        xs = [r[key] for r in ok if r["fault"] == kind and r.get(key) is not None]
        return {"n": len(xs), "median_s": round(statistics.median(xs), 3) if xs else None,
                "max_s": round(max(xs), 3) if xs else None}

    summary = {k: {"other_serving": stats(k, "other_serving_s"), "service_back": stats(k, "service_back_s"),
                   "unserved": stats(k, "unserved_s")} for k in sorted({r["fault"] for r in ok})}
    if "kill9-pg-primary" in summary:
        summary["kill9-pg-primary"]["promoted"] = stats("kill9-pg-primary", "promoted_s")
        summary["kill9-pg-primary"]["msc_serving_after_promotion"] = stats("kill9-pg-primary",
                                                                           "msc_serving_after_promotion_s")
    return summary


def check_journal(args, nodes: list[MscNode], acked: list[str]) -> dict:
    """After the clean stop: acknowledged-but-lost, duplicated OSNs, undelivered outputs, verify."""
    from msc.config.load import load
    from msc.journal.search import Query, search
    from msc.journal.verify import verify
    from msc.storage.backends import Backends

    stack = contextlib.ExitStack()
    sources = []
    for n in (nodes if args.lease_only else nodes[:1]):  # one shared journal: read it once
        s = load(n.cfg)
        backends = Backends(s)
        # The key ring where the switch keeps it: in the database on PostgreSQL (a file ring here
        # has no keys: the soak's check failed with "no key ring at …/keyring.json").
        ring = backends.keyring()
        stack.callback(ring.close)
        sources.append((n.name, stack.enter_context(backends.journal_source()), ring, s))
    with stack:
        received: set[str] = set()
        osns: collections.Counter[tuple[str | None, int]] = collections.Counter()
        finished: set[tuple[str | None, int]] = set()
        verified = {}
        for name, src, ring, s in sources:
            for r in search(src, ring, Query(kind="RECEIVED")):
                if r.peer and r.peer.startswith("X"):
                    received.add(r.text)
                if r.osn is not None:
                    osns[(r.mnemonic, r.osn)] += 1
            for kind in ("DELIVERED", "UNDELIVERED"):
                finished |= {(r.mnemonic, r.osn) for r in search(src, ring, Query(kind=kind)) if r.osn is not None}
            res = verify(src, ring, name=s.config.switch.name)
            verified[name] = {"ok": res.ok, "records": res.records, "reason": None if res.ok else res.reason}
    dup = {k: c for k, c in osns.items() if c > 1}
    lost = [a for a in acked if a not in received]
    return {"acknowledged_but_lost": len(lost), "acknowledged_but_lost_examples": lost[:10],
            "outputs_created": len(osns), "duplicated_osns": len(dup),
            "duplicated_osn_examples": [f"{m} {o} x{c}" for (m, o), c in list(dup.items())[:10]],
            "outputs_lost": len(set(osns) - finished), "journal_verify": verified}


def render(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"# HA soak {doc['started']}: {doc['minutes']} min, {doc['mode']}", "",
             f"`bench/ha_soak.py --minutes {doc['minutes']} --fault-every {doc['fault_every_s']:g} --lease-ttl "
             f"{doc['lease_ttl_s']:g}`: 2 msc nodes, 3 etcd, 3 PostgreSQL under Patroni (ttl {doc['patroni']['ttl']}, "
             f"loop_wait {doc['patroni']['loop_wait']}, retry_timeout {doc['patroni']['retry_timeout']}, fsync "
             f"{'on' if doc['patroni']['fsync'] else 'off'}), {doc['terminals']} load terminals, all on loopback; "
             f"{doc['cpus']} CPUs shared, load average at the end {doc['load_avg_end'][0]:.1f}.", "",
             f"- **Availability by time: {doc['availability']:.4%}** — {doc['unserved_s']:.2f} s without a successful "
             f"probe in {doc['duration_s']:.0f} s (a probe every {doc['probe_interval_s'] * 1000:.0f} ms, answered "
             f"within {doc['probe_timeout_s']} s or failed: {doc['probes_ok']:,} of {doc['probes']:,}; the prober's "
             f"own slip {doc['probe_schedule_slip_s']:.2f} s not counted)",
             f"- Messages acknowledged {doc['messages_acknowledged']:,}; **acknowledged but lost: "
             f"{doc['acknowledged_but_lost']}**; outputs {doc['outputs_created']:,}, **duplicated OSNs: "
             f"{doc['duplicated_osns']}**, outputs never delivered nor UNDELIVERED: {doc['outputs_lost']}; "
             f"requests without a fate {doc['requests_without_fate']}",
             "- Journal verify: " + ", ".join(f"{k}: {'ok' if v['ok'] else v['reason']} ({v['records']:,} records)"
                                               for k, v in doc["journal_verify"].items()),
             "- msc node exits (status × times): " + "; ".join(
                 f"{k}: " + ", ".join(f"{st} × {c}" for st, c in v.items()) for k, v in doc["node_exits"].items()),
             "", "Per fault: *node serving* = the fault → an msc node's /readyz 200 (after a kill -9 the killed node's "
             "restart may win the lease; after a SIGSTOP it is the other); *service back* = "
             f"the fault → the moment from which probes succeeded for {STABLE_S:g} s without a new gap; *without "
             "service* = the time without a successful probe in between.",
             "", "| fault | n | node serving: median / max (s) | service back: median / max (s) "
             "| without service: median / max (s) |", "|---|---|---|---|---|"]
    for k, v in s.items():
        o, f, u = v["other_serving"], v["service_back"], v["unserved"]
        lines.append(f"| {k} | {f['n']} | {o['median_s'] or '–'} / {o['max_s'] or '–'} | {f['median_s']} / "
                     f"{f['max_s']} | {u['median_s']} / {u['max_s']} |")
    if "kill9-pg-primary" in s:
        p, m = s["kill9-pg-primary"]["promoted"], s["kill9-pg-primary"]["msc_serving_after_promotion"]
        lines += ["", f"PostgreSQL primary killed: a new primary promoted after median {p['median_s']} s (max "
                      f"{p['max_s']}) — Patroni's ttl decides it; msc serving again {m['median_s']} s (max {m['max_s']}) "
                      "after the promotion (goal ≤ 15 s)."]
    lines += ["", "| at (s) | fault | detail | node serving (s) | service back (s) | without service (s) | "
                  "probes failed |", "|---|---|---|---|---|---|---|"]
    for r in doc["faults"]:
        detail = ", ".join(f"{k} {r[k]}" for k in ("node", "served_by", "member", "promoted_s", "msc_serving_after_promotion_s",
                                                    "exit_status_after_sigcont", "rejoined_s", "error") if k in r)
        lines.append(f"| {r['at_s']} | {r['fault']} | {detail} | {r.get('other_serving_s')} | "
                     f"{r['service_back_s']} | {r['unserved_s']} | {r['probes_failed']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--fault-every", type=float, default=60, help="seconds between faults (default 60)")
    ap.add_argument("--faults", default="kill9-active,kill9-pg-primary,sigstop-active",
                    help="in turn, comma-separated: kill9-active, kill9-pg-primary, sigstop-active")
    ap.add_argument("--lease-ttl", type=float, default=2, help="[node] lease_ttl_s (default 2)")
    ap.add_argument("--terminals", type=int, default=4)
    ap.add_argument("--think", type=float, default=0.05, help="pause between a load terminal's transactions (s)")
    ap.add_argument("--probe-interval", type=float, default=0.1)
    ap.add_argument("--probe-timeout", type=float, default=1.0)
    ap.add_argument("--patroni-ttl", type=int, default=10)
    ap.add_argument("--patroni-loop-wait", type=int, default=2)
    ap.add_argument("--patroni-retry-timeout", type=int, default=3)
    ap.add_argument("--rejoin-after", type=float, default=15, help="restart a killed PostgreSQL host this long "
                                                                   "after the promotion (s)")
    ap.add_argument("--durable", action="store_true", help="fsync on in PostgreSQL (default off: a kill -9 of "
                                                           "processes keeps the page cache)")
    ap.add_argument("--lease-only", action="store_true", help="SQLite journal per node; only the lease in PostgreSQL")
    ap.add_argument("--workdir")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--render", type=Path, help="only re-summarise and re-render a results JSON of this script")
    args = ap.parse_args()
    if args.render:
        doc = json.loads(args.render.read_text())
        doc["summary"] = summarize(doc["faults"], doc["duration_s"])
        args.render.write_text(json.dumps(doc, indent=1) + "\n")
        args.render.with_suffix(".md").write_text(render(doc))
        print(render(doc))
        return
    for k in args.faults.split(","):
        if k and k not in ("kill9-active", "kill9-pg-primary", "sigstop-active"):
            ap.error(f"unknown fault {k!r}")
    missing = [t for t in ("patroni", "etcd", "etcdctl") if shutil.which(t) is None]
    if missing or pgmod.missing_reason():
        sys.exit(f"ha-soak needs {', '.join(missing) or pgmod.missing_reason()}: `make ha-deps` installs them")
    import uvloop

    try:
        doc = uvloop.run(ha_soak(args))
    finally:
        ABORT.set()
        for f in CLEANUP:
            with contextlib.suppress(Exception):
                f()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"ha-soak-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = render(doc)
    (args.out / f"ha-soak-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
