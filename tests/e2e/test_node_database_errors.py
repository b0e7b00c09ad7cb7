"""A node of a pair (``[node]``) whose database refuses it: a configuration error stops ``msc
serve`` (exit 2, one line ``error: msc serve did not start: <why>``, no secret in it), an outage
is waited out as a standby (newcomer6 finding 7: a wrong password or a missing database left the
node a standby for ever, with one warning line, while OPERATIONS.md said exit 2).

A real PostgreSQL (tests/pg.py) and real ``msc serve`` processes. The classification itself —
which SQLSTATEs are configuration — has its table in tests/unit/test_lease_errors.py.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests import pg as pgmod
from tests.conftest import free_port, make_config, readyz
from tests.e2e.conftest import Proc
from tests.e2e.test_pg_serve import with_storage

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(pgmod.missing_reason() is not None, reason=pgmod.missing_reason() or "")]

WRONG = "not-the-password-7f3a"


def node_config(tmp, dsn: str, password: str, metrics_port: int = 0):
    cfg = make_config(tmp, metrics_port=metrics_port or free_port())
    with_storage(cfg, dsn, password)
    cfg.write_text(cfg.read_text() + '\n[node]\nname = "node-a"\nlease_ttl_s = 3\n')
    return cfg


@pytest.fixture(scope="module")
def databases(pg_server):
    """A database msc may use, and one whose CONNECT privilege its role lacks."""
    ok, closed = f"nodeerr{os.getpid()}", f"nodeerrclosed{os.getpid()}"
    pg_server.create_database(ok)
    pg_server.create_database(closed)
    pg_server.sql(f"DROP ROLE IF EXISTS nodeerr_limited; CREATE ROLE nodeerr_limited LOGIN PASSWORD "
                  f"'{pg_server.password}'")
    pg_server.sql(f"REVOKE CONNECT ON DATABASE {closed} FROM PUBLIC")
    return ok, closed


#: (what is wrong, the dsn's user, its database, the password, what the one line names)
MISCONFIGURED = [
    pytest.param("postgres", "ok", WRONG, "InvalidPasswordError", id="wrong password"),
    pytest.param("postgres", "nosuchdb", None, "InvalidCatalogNameError", id="database does not exist"),
    pytest.param("nosuchrole", "ok", None, "password authentication failed", id="no such role"),
    pytest.param("nodeerr_limited", "closed", None, "InsufficientPrivilegeError", id="permission denied (CONNECT)"),
]


@pytest.mark.parametrize(("user", "db", "password", "named"), MISCONFIGURED)
def test_a_node_whose_database_refuses_its_configuration_exits_2_in_one_line(tmp_path, pg_server, databases,
                                                                             procs, user, db, password, named):
    dbname = {"ok": databases[0], "closed": databases[1]}.get(db, db)
    cfg = node_config(tmp_path, f"postgresql://{user}@127.0.0.1:{pg_server.port}/{dbname}",
                      password or pg_server.password)
    p = Proc("serve", "--config", str(cfg), log=tmp_path / "serve.err")
    procs.append(p)
    assert p.p.wait(120) == 2
    err = (tmp_path / "serve.err").read_text()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: msc serve did not start: lease database: "), line
    assert named in line and "check [storage] dsn and password_file" in line, err
    assert pg_server.password not in err and WRONG not in err
    assert "Traceback" not in err
    # The log said why before it stopped: one error line, not a standby's warning for ever.
    events = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
    assert [e["event"] for e in events if e.get("level") == "error"] == ["lease.misconfigured"]


def test_a_node_whose_database_is_away_waits_as_a_standby_and_stops_cleanly(tmp_path, pg_server, procs):
    """An outage (nothing listens where the dsn points: connection refused) is not a configuration
    error: the node stands by, says why in /readyz, and keeps trying until it is stopped."""
    from tests.e2e.test_ha_nodes import wait_until

    away = pgmod.free_port()
    metrics = free_port()
    cfg = node_config(tmp_path, f"postgresql://postgres@127.0.0.1:{away}/msc", pg_server.password, metrics)
    ready = tmp_path / "ready"
    p = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "serve.err")
    procs.append(p)
    code, doc = wait_until(lambda: (r := readyz(metrics))[0] == 503 and r[1].get("node", {}).get("lease_error") and r,
                           "a standby with lease_error", timeout=60, proc=p)
    assert doc["status"] == "standby" and "ConnectionRefusedError" in doc["node"]["lease_error"], doc
    assert ready.read_text().strip() == "standby"
    # Several more attempts later it is still there, still a standby.
    wait_until(lambda: "lease.unavailable" in (tmp_path / "serve.err").read_text(), "logged", proc=p)
    assert p.p.poll() is None
    assert p.stop() == 0


def test_a_second_node_given_the_same_name_is_refused_at_start(tmp_path, pg_server, procs):
    """The easy mistake when copying msc.toml: both nodes named node-a. The second sees the lease
    held under its own name and renewed (not its own dead predecessor's, which runs out): it
    exits 2 saying so; the first serves on."""
    from tests.e2e.test_ha_nodes import wait_until

    db = f"nodetwin{os.getpid()}"
    pg_server.create_database(db)
    dsn = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{db}"
    metrics = {n: free_port() for n in "AB"}
    cfg = {n: node_config(tmp_path / n, dsn, pg_server.password, metrics[n]) for n in "AB"}
    keys_b = tmp_path / "B" / "data" / "keys"
    shutil.rmtree(keys_b)
    keys_b.symlink_to(tmp_path / "A" / "data" / "keys")
    a = Proc("serve", "--config", str(cfg["A"]), "--ready-file", str(tmp_path / "A.ready"), log=tmp_path / "A.err")
    procs.append(a)
    wait_until(lambda: (tmp_path / "A.ready").exists() and (tmp_path / "A.ready").read_text().strip() == "ready",
               "A active", timeout=120, proc=a)
    b = Proc("serve", "--config", str(cfg["B"]), log=tmp_path / "B.err")
    procs.append(b)
    assert b.p.wait(120) == 2
    err = (tmp_path / "B.err").read_text()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: msc serve did not start: another live node is running as 'node-a' (host "), err
    assert line.endswith(f", process {a.p.pid}, seen " + line.split(", seen ")[1]), err
    assert "each node of a pair needs its own [node] name" in line, err
    code, doc = readyz(metrics["A"])
    assert code == 200 and doc["node"]["role"] == "active" and a.p.poll() is None


def test_a_third_node_given_the_standbys_name_is_refused_at_start(tmp_path, pg_server, procs):
    """newcomer7: a node started with the *standby's* name ran unnoticed until a failover, and then
    the real node was the one refused. Now the name is said alive by each node: the third one
    exits 2 at its start, naming the live node's host and process; the pair serves on."""
    from tests.e2e.test_ha_nodes import wait_until

    db = f"nodetriplet{os.getpid()}"
    pg_server.create_database(db)
    dsn = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{db}"
    metrics = {n: free_port() for n in "ABC"}
    cfg = {n: node_config(tmp_path / n, dsn, pg_server.password, metrics[n]) for n in "ABC"}
    for n in "BC":  # B and C both say name = "node-b"; all share A's keys
        text = cfg[n].read_text()
        cfg[n].write_text(text.replace('name = "node-a"', 'name = "node-b"'))
        keys = tmp_path / n / "data" / "keys"
        shutil.rmtree(keys)
        keys.symlink_to(tmp_path / "A" / "data" / "keys")
    a = Proc("serve", "--config", str(cfg["A"]), "--ready-file", str(tmp_path / "A.ready"), log=tmp_path / "A.err")
    procs.append(a)
    wait_until(lambda: (tmp_path / "A.ready").exists() and (tmp_path / "A.ready").read_text().strip() == "ready",
               "A active", timeout=120, proc=a)
    b = Proc("serve", "--config", str(cfg["B"]), "--ready-file", str(tmp_path / "B.ready"), log=tmp_path / "B.err")
    procs.append(b)
    wait_until(lambda: (tmp_path / "B.ready").exists() and (tmp_path / "B.ready").read_text().strip() == "standby",
               "B standby", timeout=120, proc=b)
    c = Proc("serve", "--config", str(cfg["C"]), log=tmp_path / "C.err")
    procs.append(c)
    assert c.p.wait(120) == 2
    err = (tmp_path / "C.err").read_text()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: msc serve did not start: another live node is running as 'node-b' (host "), err
    assert f", process {b.p.pid}, seen " in line, err
    assert b.p.poll() is None and readyz(metrics["B"])[1]["node"]["role"] == "standby"
    assert readyz(metrics["A"])[0] == 200
    assert "duplicate_name" not in (tmp_path / "B.err").read_text()  # the live node is not the one refused


# -- msc status: which node is active ------------------------------------------------------------


def test_msc_status_names_the_active_node_from_either_machine(tmp_path, pg_server, procs):
    from tests.e2e.conftest import run
    from tests.e2e.test_ha_nodes import Pair, wait_until

    pair = Pair(tmp_path, pg_server, procs)
    pair.start("A", "ready")
    pair.start("B", "standby")
    for n, here in (("A", "node node-a (this machine): active (/readyz 200)"),
                    ("B", "node node-b (this machine): standby (/readyz 503)")):
        r = run("status", "--config", str(pair.cfg[n]))
        assert r.returncode == 0, r.stderr
        first, second = r.stdout.splitlines()
        assert first == here
        assert second.startswith("active node: node-a (lease epoch 1, valid "), second
    r = run("status", "--config", str(pair.cfg["B"]), "--format", "json")
    doc = json.loads(r.stdout)
    assert (doc["node"], doc["active"], doc["lease"]["holder"], doc["lease"]["epoch"], doc["this_node"]["role"]) == (
        "node-b", "node-a", "node-a", 1, "standby")
    # A clean stop of the active: the standby takes over; asked on the stopped node's machine.
    assert pair.proc["A"].stop() == 0
    wait_until(lambda: pair.active("B"), "B active", timeout=60, proc=pair.proc["B"])
    # (Exit 3, was 0: B serves, but nothing on A's machine could take over if B failed — newcomer8.)
    r = run("status", "--config", str(pair.cfg["A"]))
    assert r.returncode == 3
    assert r.stdout.splitlines()[0] == "node node-a (this machine): not running (nothing answers at its [metrics] bind)"
    assert r.stdout.splitlines()[1].startswith("active node: node-b (lease epoch 2, ")
    assert r.stdout.splitlines()[2] == ("node node-a (this machine) could not take over if node-b failed: it is not "
                                        "running — the pair cannot fail over (exit 3)")


def test_msc_status_without_an_active_node_exits_1(tmp_path, pg_server, procs):
    from tests.e2e.conftest import run

    away = pgmod.free_port()
    cfg = node_config(tmp_path / "away", f"postgresql://postgres@127.0.0.1:{away}/msc", pg_server.password)
    r = run("status", "--config", str(cfg))
    assert r.returncode == 1
    assert r.stdout.splitlines()[1].startswith("active node: unknown — the lease's database could not be asked "
                                               "(lease database: ConnectionRefusedError"), r.stdout
    assert pg_server.password not in r.stdout + r.stderr
    single = make_config(tmp_path / "single", metrics_port=free_port())
    r = run("status", "--config", str(single))
    assert (r.returncode, r.stdout) == (1, "single node (no [node] table) on this machine: not running (nothing "
                                           "answers at its [metrics] bind)\n")
