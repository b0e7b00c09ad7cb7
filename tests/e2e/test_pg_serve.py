"""``msc serve`` and the ``msc`` command on PostgreSQL (``[storage] backend = "postgresql"``;
CONFIG.md "Storage"): a real database (tests/pg.py: initdb in a temporary directory, an
unprivileged server user under root), the password in a 0600 ``password_file``.

The switch serves a terminal's QW, queues outputs for it while it is away, is killed with
``kill -9``, starts again from the database: the queued outputs arrive in order with their OSNs,
the next OSN continues after them, every output is delivered once. Then the commands an
administrator or investigator runs — ``journal verify``, ``search``, ``export`` (the bundle checked
by the stand-alone verifier), ``accept``; ``user list``, ``station disable``, ``report
availability`` — and the web console read and write the same database; nothing is ever written to the
SQLite files of the data directory. A database that cannot be reached: every command says so in
one line and starts nothing."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from msc.actions.directory import station_rows
from msc.config.load import load
from msc.storage.backends import Backends
from tests.conftest import PASSWORD, WEB_CONSOLE, free_port, make_config
from tests.e2e.conftest import Proc, run, wait_for, wait_port
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(240)

AS_ADMIN = ("--as", "AD0001", "--password-stdin")
AS_INVESTIGATOR = ("--as", "IN0001", "--password-stdin")
ADMIN_LINES = PASSWORD + "\n\n"
_db = itertools.count(1)


def with_storage(cfg: Path, dsn: str, password: str | None) -> None:
    """Add ``[storage]`` to a test configuration (the password in a 0600 file beside it)."""
    extra = f'\n[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
    if password is not None:
        secret = cfg.parent / "pg.password"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        extra += 'password_file = "pg.password"\n'
    cfg.write_text(cfg.read_text() + extra)


def sqlite_files(root: Path) -> list[Path]:
    """The files the SQLite backend would have made (journal partitions, state.db, the mark)."""
    return sorted(p for p in root.rglob("*") if p.suffix in (".db", ".hwm", ".leaves") or p.name.endswith("-wal"))


@pytest.fixture
def switch_on_pg(tmp_path, pg_server, procs):
    db = f"pgserve{os.getpid()}_{next(_db)}"
    pg_server.create_database(db)
    up, port, ctl = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    with_storage(cfg, f"postgresql://postgres@127.0.0.1:{pg_server.port}/{db}", pg_server.password)
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--control", f"127.0.0.1:{ctl}",
                      "--latency-ms", "300", log=tmp_path / "stub.err"))
    wait_port(up)
    return cfg, port, ctl


def serve(tmp_path: Path, cfg: Path, procs: list[Proc]) -> Proc:
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    p = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "serve.err")
    procs.append(p)
    wait_for(ready, p, timeout=60)
    return p


def journal(cfg: Path, **query) -> list:
    """Records of the journal in the configured database (read directly, as a test looks)."""
    from msc.journal.search import Query, search

    s = load(cfg)
    with Backends(s).journal_source() as src:
        ring = Backends(s).keyring()  # the database's key ring (the node imported its file at start)
        try:
            return list(search(src, ring, Query(**query)))
        finally:
            ring.close()


def search(cfg: Path, *filters: str) -> list[dict]:
    """``msc journal search`` as an investigator runs it (AUDITed)."""
    r = run("journal", "search", "--config", str(cfg), *AS_INVESTIGATOR, "--case", "PG-E2E", "--format", "jsonl",
            *filters, input=ADMIN_LINES, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wait_until(cond, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_serve_on_postgresql_survives_kill_9_with_its_queues_and_osns(tmp_path, switch_on_pg, procs):
    cfg, port, ctl = switch_on_pg
    first = serve(tmp_path, cfg, procs)

    async def query_then_leave():
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        assert (await c.send("ICS1Q1.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101")).type == "A"
        answer = await c.output()  # the NCIC stub's answer, through the switch
        for i in range(3):  # answered after the terminal has gone: queued for it
            assert (await c.send(f"ICS1K{i}.QV.CA0130000.LIC/KILL{i}")).type == "A"
        c.close()
        return answer

    answer = asyncio.run(query_then_leave())
    assert answer.text.startswith("ICS1Q1") and answer.xid >= 1

    def queued() -> list:
        return journal(cfg, kind="QUEUED", mnemonic="ICS1")

    wait_until(lambda: len(queued()) >= 3, "three answers queued in the PostgreSQL journal", timeout=60)
    with socket.create_connection(("127.0.0.1", ctl)) as sc:  # unsolicited traffic for the absent terminal
        sc.sendall(b"ICS1.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W424242\n")
        assert sc.makefile().readline().strip() == "A"
    wait_until(lambda: len(queued()) >= 4, "four outputs queued in the PostgreSQL journal", timeout=60)
    first.p.send_signal(signal.SIGKILL)
    first.p.wait()
    serve(tmp_path, cfg, procs)

    async def come_back():
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        outs = [await c.output() for _ in range(4)]
        assert (await c.send("ICS1Q2.QW.CA0130000.NAM/ROE, JANE.DOB/19900202")).type == "A"
        after = await c.output()
        c.close()
        return outs, after

    outs, after = asyncio.run(come_back())
    assert [o.text.split(".")[0] for o in outs] == ["ICS1K0", "ICS1K1", "ICS1K2", "ICS1"]
    xids = [o.xid for o in outs]
    assert xids == sorted(xids) and len(set(xids)) == 4 and xids[0] > answer.xid
    assert after.text.startswith("ICS1Q2") and after.xid > xids[-1]  # the OSNs continue after the restart

    def delivered() -> dict[int, int]:
        return {r.osn: r.seq for r in journal(cfg, kind="DELIVERED", mnemonic="ICS1")}

    wait_until(lambda: {*xids, after.xid} <= set(delivered()), "DELIVERED records of every output")
    marks = delivered()
    queued_seq = {r.osn: r.seq for r in queued()}
    for x in xids:
        assert queued_seq[x] < marks[x]  # QUEUED, then DELIVERED: each once
    assert len(journal(cfg, kind="DELIVERED", mnemonic="ICS1")) == len(marks)
    found = search(cfg, "--kind", "DELIVERED", "--mnemonic", "ICS1")  # the investigator's command
    assert sorted(r["seq"] for r in found) == sorted(marks.values())

    r = run("journal", "verify", "--config", str(cfg), *AS_ADMIN, input=ADMIN_LINES, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout.lower(), (r.stdout, r.stderr)
    assert sqlite_files(tmp_path) == []  # everything went to PostgreSQL


def test_the_msc_command_reads_and_writes_the_database(tmp_path, switch_on_pg, procs):
    cfg, port, _ctl = switch_on_pg
    r = run("station", "disable", "ICS2", "--config", str(cfg), *AS_ADMIN, input=ADMIN_LINES)  # no switch running
    assert r.returncode == 0, r.stderr
    sw = serve(tmp_path, cfg, procs)

    async def logon_once():
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        c.close()

    asyncio.run(logon_once())
    r = run("user", "list", "--config", str(cfg), "--format", "json")
    assert r.returncode == 0, r.stderr
    users = {u["id"]: u for u in json.loads(r.stdout)["users"]}
    assert users["TS0001"]["last_logon"] is not None  # written by the switch, read by the command
    assert users["TS0002"]["last_logon"] is None
    # The station disabled while no switch ran is disabled in the database (the web console's list).
    assert {row["mnemonic"]: row["status"] for row in station_rows(load(cfg))}["ICS2"] == "disabled"
    records = journal(cfg, kind="ADMIN")
    assert any("STATION DISABLE ICS2" in rec.text and rec.user == "AD0001" for rec in records)
    r = run("report", "availability", "--config", str(cfg), "--format", "json")
    assert r.returncode in (0, 1), r.stderr  # 1: under the target (a ledger of a few seconds)
    assert json.loads(r.stdout)["windows"]["30d"]["up_s"] > 0  # the running switch's run, from the database
    sw.stop()
    r = run("journal", "verify", "--config", str(cfg), *AS_ADMIN, input=ADMIN_LINES, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    # An evidence bundle from the database, checked by the stand-alone verifier pinned to the key.
    bundle = tmp_path / "evidence.zip"
    r = run("journal", "export", "--config", str(cfg), *AS_INVESTIGATOR, "--case", "PG-E2E-2", "--kind", "ADMIN",
            "--out", str(bundle), input=ADMIN_LINES, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    with zipfile.ZipFile(bundle) as z:
        z.extract("verify_bundle.py", tmp_path)
    s = load(cfg)
    ring = Backends(s).keyring()
    fp = ring.signing_identity().fingerprint
    ring.close()
    r = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "verify_bundle.py"), "--fingerprint", fp, str(bundle)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    # Nothing to accept on a sound journal; --new-journal is the database administrator's on PostgreSQL.
    r = run("journal", "accept", "--config", str(cfg), *AS_ADMIN, "--reason", "CHECK", input=ADMIN_LINES, timeout=120)
    assert r.returncode == 0 and "nothing to accept" in r.stdout, (r.stdout, r.stderr)
    audits = [(rec.user, json.loads(rec.text)["op"]) for rec in journal(cfg, kind="AUDIT")]
    assert ("AD0001", "verify") in audits and ("IN0001", "export") in audits
    assert sqlite_files(tmp_path) == []


@pytest.mark.parametrize("argv", [
    ("serve",),
    ("user", "list"),
    ("station", "disable", "ICS1", "--as", "AD0001"),
    ("journal", "verify", "--as", "AD0001"),
    ("report", "availability"),
], ids=lambda a: " ".join(a))
def test_an_unreachable_database_is_one_line_and_nothing_starts(tmp_path, argv):
    cfg = make_config(tmp_path)
    with_storage(cfg, f"postgresql://msc@127.0.0.1:{free_port()}/msc", "not-used")  # nothing listens there
    assert run("config", "check", "--config", str(cfg)).returncode == 0
    r = run(*argv, "--config", str(cfg), input="x\n\n", timeout=60)
    assert r.returncode in (1, 2), (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "127.0.0.1" in r.stderr and "not-used" not in r.stderr, r.stderr
    assert sqlite_files(tmp_path) == []


WEB = WEB_CONSOLE


def test_the_web_console_searches_verifies_and_reports_on_postgresql(tmp_path, pg_server, procs):
    """``msc web`` on the same configuration: an investigator's search and verification and an
    administrator's reports read the database, and each is AUDIT/ADMIN-recorded there naming
    the person (a plain HTTP client; the browser scenarios are tests/e2e/test_web_console.py)."""
    httpx = pytest.importorskip("httpx")
    from msc.mnemonics import totp
    from msc.web.certs import self_signed
    from tests.conftest import add_totp_user

    self_signed(tmp_path / "tls" / "web.crt", tmp_path / "tls" / "web.key")
    db = f"pgweb{os.getpid()}_{next(_db)}"
    pg_server.create_database(db)
    up, web_port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=free_port(), metrics_port=free_port(),
                      extra=WEB.format(web_listener=free_port(), web_port=web_port))
    with_storage(cfg, f"postgresql://postgres@127.0.0.1:{pg_server.port}/{db}", pg_server.password)
    secrets = {uid: add_totp_user(cfg, uid, name=name, role=role)
               for uid, name, role in (("IV0001", "INVESTIGATOR, IVAN", "investigator"),
                                       ("AM0001", "ADMINISTRATOR, ANN", "admin"))}
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", log=tmp_path / "stub.err"))
    wait_port(up)
    serve(tmp_path, cfg, procs)
    ready = tmp_path / "web.ready"
    web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "web.err")
    procs.append(web)
    wait_for(ready, web, timeout=60)
    url = f"https://127.0.0.1:{web_port}"

    def console(c, kind: str, uid: str) -> dict[str, str]:
        token = c.get(url + "/api/state").json()["csrf"]
        assert c.post(url + "/api/banner", json={}, headers={"x-csrftoken": token}).status_code == 200
        r = c.post(url + "/api/logon", headers={"x-csrftoken": token},
                   json={"console": kind, "user": uid, "password": PASSWORD, "otp": totp.code_at(secrets[uid], time.time())})
        assert r.status_code == 200, r.text
        return {"x-csrftoken": c.get(url + "/api/state").json()["csrf"]}

    with httpx.Client(verify=False, timeout=30) as c:
        h = console(c, "investigator", "IV0001")
        r = c.post(url + "/api/journal/search", headers=h, json={"case": "PG-WEB-1", "kind": "ADMIN"})
        assert r.status_code == 200, r.text
        assert any(rec["text"].startswith("START ") for rec in r.json()["records"])
        r = c.post(url + "/api/journal/verify", headers=h, json={})
        assert r.status_code == 200 and r.json()["ok"], r.text
    with httpx.Client(verify=False, timeout=30) as c:
        h = console(c, "admin", "AM0001")
        r = c.get(url + "/api/admin/report/availability", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["doc"]["windows"]["30d"]["up_s"] > 0  # the running switch's run, in the database
        r = c.get(url + "/api/admin/users", headers=h)
        assert r.status_code == 200 and any(u["id"] == "IV0001" for u in r.json()["users"]), r.text
    audits = [(rec.user, json.loads(rec.text)["op"]) for rec in journal(cfg, kind="AUDIT")]
    assert ("IV0001", "search") in audits and ("IV0001", "verify") in audits
    sessions = [rec.text for rec in journal(cfg, kind="SESSION") if rec.user == "AM0001"]
    assert any("LOGON OK WEB" in t for t in sessions)
    assert sqlite_files(tmp_path) == []


def wait_ready_file(ready: Path, proc: Proc, what: str, timeout: float = 60.0) -> None:
    wait_until(lambda: (proc.p.poll() is None or (_ for _ in ()).throw(AssertionError(proc.log.read_text())))
               and ready.exists() and ready.read_text().strip() == what, f"ready file {what!r}", timeout)


def test_a_node_of_a_pair_on_postgresql_takes_the_lease_in_the_same_database_and_serves(tmp_path, pg_server, procs):
    """``[node]`` without ``lease_dsn``: the lease lives in ``[storage]``'s database; the node
    stands by, takes the lease, opens its run-time state, journal and queues there and serves."""
    db = f"pgnode{os.getpid()}_{next(_db)}"
    pg_server.create_database(db)
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    with_storage(cfg, f"postgresql://postgres@127.0.0.1:{pg_server.port}/{db}", pg_server.password)
    cfg.write_text(cfg.read_text() + '\n[node]\nname = "node-a"\nlease_ttl_s = 3\n')
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", log=tmp_path / "stub.err"))
    wait_port(up)
    ready = tmp_path / "ready"
    node = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "serve.err")
    procs.append(node)
    wait_ready_file(ready, node, "ready")

    async def query():
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        assert (await c.send("ICS1Q1.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101")).type == "A"
        out = await c.output()
        c.close()
        return out

    assert asyncio.run(query()).text.startswith("ICS1Q1")
    r = run("user", "list", "--config", str(cfg), "--format", "json")
    assert {u["id"]: u for u in json.loads(r.stdout)["users"]}["TS0001"]["last_logon"] is not None
    assert node.stop() == 0
    assert any(rec.text.startswith("START ") for rec in journal(cfg, kind="ADMIN"))
    assert sqlite_files(tmp_path) == []


def test_a_standby_whose_database_is_down_waits_and_says_why(tmp_path, procs):
    """The database of ``[storage]`` (and so of the lease) cannot be reached: a node of a pair
    stays a standby — /readyz 503 with the lease's error — instead of exiting, as it does when
    only the lease's database is down (tests/e2e/test_ha_nodes.py)."""
    import urllib.error
    import urllib.request

    mport = free_port()
    cfg = make_config(tmp_path, port=free_port(), metrics_port=mport)
    with_storage(cfg, f"postgresql://postgres@127.0.0.1:{free_port()}/msc", "not-used")  # a closed port: refused at once
    cfg.write_text(cfg.read_text() + '\n[node]\nname = "node-c"\nlease_ttl_s = 3\n')
    ready = tmp_path / "ready"
    node = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "serve.err")
    procs.append(node)
    wait_ready_file(ready, node, "standby")

    def said_why():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/readyz", timeout=5)
        except urllib.error.HTTPError as e:
            doc = json.loads(e.read())
            return doc if "lease_error" in doc.get("node", {}) else None
        except OSError:
            return None
        return None

    doc = wait_until(said_why, "the standby says why it is not active")
    assert doc["status"] == "standby" and node.p.poll() is None
    assert node.stop() == 0
    assert sqlite_files(tmp_path) == []


def test_a_database_restart_under_the_switch_fails_closed_then_it_goes_on(tmp_path, procs):
    """PostgreSQL stops while msc serves (a restart, a failover without a standby): a request
    that cannot be journaled is refused, never forwarded unrecorded; once the database is back the
    switch reconnects on its own — the next request is answered — and the journal verifies."""
    from tests import pg

    if pg.missing_reason():
        pytest.skip(pg.missing_reason())
    with pg.PgCluster.create(name="restarted") as db:
        db.create_database("msc")
        up, port = free_port(), free_port()
        cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
        with_storage(cfg, f"postgresql://postgres@127.0.0.1:{db.port}/msc", db.password)
        procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", log=tmp_path / "stub.err"))
        wait_port(up)
        sw = serve(tmp_path, cfg, procs)

        async def session():
            c = await WireClient.connect(port)
            await c.banner()
            assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
            assert (await c.send("ICS1Q1.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101")).type == "A"
            assert (await c.output()).text.startswith("ICS1Q1")
            db.stop("fast")  # every connection of the switch's is gone
            refused = await c.send("ICS1Q2.QW.CA0130000.NAM/ROE, JANE.DOB/19900202")
            db.start()
            answered = None
            for i in range(3, 60):  # the next requests, until the switch has reconnected
                ack = await c.send(f"ICS1Q{i}.QW.CA0130000.NAM/POE, EDGAR.DOB/18090119")
                if ack.type == "A":
                    answered = (i, await c.output())
                    break
                assert ack.code == "E501", ack
                await asyncio.sleep(0.5)  # (a client's retry pace, not a wait for the condition)
            c.close()
            return refused, answered

        refused, answered = asyncio.run(session())
        assert refused.type == "N" and refused.code == "E501"  # fail closed: not journaled, not forwarded
        assert answered is not None and answered[1].text.startswith(f"ICS1Q{answered[0]}")
        assert sw.p.poll() is None
        sw.stop()
        texts = [rec.text for rec in journal(cfg, kind="FORWARDED")]
        assert not any(t.startswith("ICS1Q2") for t in texts)  # never forwarded
        r = run("journal", "verify", "--config", str(cfg), *AS_ADMIN, input=ADMIN_LINES, timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
