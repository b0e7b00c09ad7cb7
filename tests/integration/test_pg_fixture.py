"""The real PostgreSQL the storage tests stand on (tests/pg.py): it starts, it is not root's, it
asks for a password over TCP, it replicates synchronously, a standby can be promoted, and libpq's
multi-host connection strings find the read-write server (issue 16 items 4 and 5).

These drive the servers with ``psql`` (libpq), the same library that parses the connection
strings msc's ``[storage]`` will take; no Python driver is needed here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests import pg as pgmod

pytestmark = pytest.mark.skipif(pgmod.missing_reason() is not None, reason=pgmod.missing_reason() or "")


def psql(conninfo: str, statement: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """psql as this process's user, over whatever the connection string names."""
    bindir = pgmod.find_bindir()
    assert bindir is not None
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run([str(bindir / "psql"), "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo,
                           "-c", statement], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**clean, **(env or {})})


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def wait_for(cond, what: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


# --- one server -------------------------------------------------------------------------------


def test_the_server_runs_on_loopback_in_its_own_directory_never_as_root(pg_server):
    assert pg_server.pid is not None
    if os.geteuid() == 0:
        assert uid_of(pg_server.pid) != 0
        assert pg_server.base.stat().st_uid == uid_of(pg_server.pid)
    assert pg_server.data_dir.stat().st_mode & 0o777 == 0o700
    assert pg_server.sql("SHOW listen_addresses") == "127.0.0.1"
    assert pg_server.sql("SHOW port") == str(pg_server.port)
    assert Path(pg_server.sql("SHOW data_directory")) == pg_server.data_dir
    assert Path(pg_server.sql("SHOW unix_socket_directories")) == pg_server.socket_dir
    r = psql(pg_server.conninfo(), "SELECT inet_server_addr(), current_user")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "127.0.0.1|postgres"


@pytest.mark.parametrize("change, error", [
    ({"passfile": "/dev/null"}, "no password supplied"),
    ({"passfile": "/dev/null", "password": "not-the-password"}, "password authentication failed"),
    ({"passfile": "/dev/null", "password": ""}, "no password supplied"),
    ({"user": "nobody_here"}, "no password supplied"),  # the passfile has the superuser's line only
    ({"user": "nobody_here", "password": "anything"}, "password authentication failed"),
    ({"dbname": "no_such_db"}, "does not exist"),
])
def test_tcp_connections_need_the_password(pg_server, change, error):
    """scram-sha-256 over TCP: the password lives only in the 0600 passfile, never in a conninfo."""
    parts = {"host": "127.0.0.1", "port": pg_server.port, "dbname": "postgres", "user": "postgres",
             "passfile": str(pg_server.passfile), **change}
    r = psql(" ".join(f"{k}='{v}'" for k, v in parts.items()), "SELECT 1")
    assert r.returncode != 0
    assert error in r.stderr
    assert pg_server.password not in pg_server.conninfo()
    assert pg_server.passfile.stat().st_mode & 0o077 == 0


def test_each_test_can_have_its_own_database(pg_server):
    a = pg_server.create_database("fixture_a")
    b = pg_server.create_database("fixture_b")
    assert psql(a, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)").returncode == 0
    r = psql(b, "SELECT count(*) FROM t")
    assert r.returncode != 0 and 'relation "t" does not exist' in r.stderr
    for bad in ("Upper", "semi;colon", "1leading_digit", "", "x" * 64, "space name"):
        with pytest.raises(ValueError):
            pg_server.create_database(bad)


def test_kill_9_and_restart_keeps_what_was_committed_and_a_failed_start_says_why():
    with pgmod.PgCluster.create(name="crash") as pg:
        pg.sql("CREATE TABLE acked (id int PRIMARY KEY)")
        for i in range(10):
            pg.sql(f"INSERT INTO acked VALUES ({i})")
        pid = pg.pid
        pg.kill()
        assert not Path(f"/proc/{pid}").exists()
        # while it is down another program takes its port: the start fails and says why (the log)
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", pg.port))
            squatter.listen()
            with pytest.raises(pgmod.PgError, match="server exited") as e:
                pg.start()
            assert "could not" in str(e.value) or "Address already in use" in str(e.value)
        pg.start()
        assert pg.sql("SELECT count(*), sum(id) FROM acked") == "10|45"
        base = pg.base
    assert not base.exists()
    assert not pgmod._pids_with_cwd(base / "data")


# --- a primary and its synchronous standby ----------------------------------------------------


def test_the_standby_is_synchronous_and_read_only(pg_pair):
    primary, standby = pg_pair
    assert primary.sql("SELECT application_name, state, sync_state FROM pg_stat_replication") == \
        f"{standby.name}|streaming|sync"
    assert standby.sql("SELECT pg_is_in_recovery()") == "t"
    primary.sql("CREATE TABLE IF NOT EXISTS replicated (id int PRIMARY KEY, note text)")
    # remote_apply: the commit returns once the standby has replayed it, so it is readable there now
    primary.sql("SET synchronous_commit = remote_apply; INSERT INTO replicated VALUES (1, 'one')")
    assert standby.sql("SELECT note FROM replicated WHERE id = 1") == "one"
    with pytest.raises(pgmod.PgError, match="read-only transaction"):
        standby.sql("INSERT INTO replicated VALUES (2, 'two')")


def test_a_commit_waits_while_the_synchronous_standby_is_down(pg_pair):
    """synchronous_commit = on: with the standby stopped the commit does not return (it waits in
    SyncRep); once the standby is back it returns, and the row is on the standby."""
    primary, standby = pg_pair
    primary.sql("CREATE TABLE IF NOT EXISTS waited (id int PRIMARY KEY)")
    standby.stop()
    try:
        writer = subprocess.Popen(
            [str(primary.bindir / "psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1",
             "-d", primary.conninfo(application_name="sync_waiter"), "-c", "INSERT INTO waited VALUES (42)"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: primary.sql("SELECT wait_event FROM pg_stat_activity "
                                     "WHERE application_name = 'sync_waiter'") == "SyncRep",
                 "the writer waiting for the synchronous standby")
        assert writer.poll() is None
    finally:
        standby.start()
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    primary.wait_replication(standby.name, sync_state="sync")
    wait_for(lambda: standby.sql("SELECT count(*) FROM waited WHERE id = 42") == "1", "the row on the standby")


@pytest.mark.parametrize("attrs, expect", [
    ("read-write", "primary"),
    ("primary", "primary"),
    ("read-only", "standby"),
    ("standby", "standby"),
    ("prefer-standby", "standby"),
    ("any", "standby"),  # the first host listed
])
def test_multi_host_connection_strings_pick_the_server_by_role(pg_pair, attrs, expect):
    """libpq tries the hosts in order and keeps the first with the asked-for role (the standby is
    listed first here, so read-write has to skip it)."""
    primary, standby = pg_pair
    conninfo = (f"host=127.0.0.1,127.0.0.1 port={standby.port},{primary.port} dbname=postgres user=postgres "
                f"passfile={primary.passfile} target_session_attrs={attrs} connect_timeout=2")
    r = psql(conninfo, "SELECT current_setting('port')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str({"primary": primary, "standby": standby}[expect].port)


def test_after_kill_9_of_the_primary_the_promoted_standby_has_every_commit_and_the_other_follows_it():
    """One primary, a synchronous standby and an asynchronous second one: kill -9 the primary,
    promote the synchronous standby (every acknowledged commit is there), the multi-host
    connection string finds it, and the second standby follows it and becomes its sync standby."""
    with pgmod.primary_with_standby() as (primary, standby):
        second = primary.add_standby(name="standby2", synchronous=False)
        primary.sql("CREATE TABLE acked (id int PRIMARY KEY)")
        for i in range(20):  # each its own transaction, each acknowledged after the standby flushed it
            primary.sql(f"INSERT INTO acked VALUES ({i})")
        multi = (f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} dbname=postgres user=postgres "
                 f"passfile={primary.passfile} target_session_attrs=read-write connect_timeout=2")
        assert psql(multi, "SELECT current_setting('port')").stdout.strip() == str(primary.port)
        primary.kill()
        # no read-write server until the promotion
        r = psql(multi, "SELECT 1")
        assert r.returncode != 0
        standby.promote()
        assert standby.sql("SELECT count(*), sum(id) FROM acked") == "20|190"
        r = psql(multi, "INSERT INTO acked VALUES (20); SELECT current_setting('port')")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(standby.port)
        # the promoted server has no synchronous standby of its own: commits do not wait
        assert standby.sql("SHOW synchronous_standby_names") == ""
        assert standby.sql("SELECT count(*) FROM acked") == "21"
        # the second standby follows the new primary and becomes its synchronous standby
        second.follow(standby)
        standby.wait_replication(second.name, "streaming")
        standby.set_synchronous([second.name])
        standby.wait_replication(second.name, sync_state="sync")
        standby.sql("SET synchronous_commit = remote_apply; INSERT INTO acked VALUES (21)")
        assert second.sql("SELECT count(*), max(id) FROM acked") == "22|21"


# --- WAL as a server in service has it (the benchmarks' warm-up) ------------------------------


def segments_ahead(server: pgmod.PgCluster, *, standby: bool) -> int:
    """How many WAL segment files exist beyond the one WAL is being written (received) into."""
    fn = "pg_last_wal_receive_lsn()" if standby else "pg_current_wal_lsn()"
    hi, lo = server.sql(f"SELECT {fn}").split("/")
    current = ((int(hi, 16) << 32) + int(lo, 16)) // pgmod.WAL_SEGMENT
    names = server.sql("SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'").split()
    per_id = 0x1_0000_0000 // pgmod.WAL_SEGMENT
    return sum(int(n[8:16], 16) * per_id + int(n[16:24], 16) > current for n in names)


@pytest.mark.parametrize("megabytes", [32, 48])
def test_recycle_wal_leaves_the_next_segments_waiting_on_the_primary_and_the_standby(megabytes):
    """A new cluster has no WAL segment to reuse: every 16 MB of WAL a commit creates and zero-fills
    the next file, on the primary and again on the synchronous standby (the 10-50 ms stalls of
    PERFORMANCE.md "Where the tail came from"). After recycle_wal the next segments are there on
    both, as on a server that has run past its checkpoints; benchmark clusters get the WAL sizing
    docs/OPERATIONS.md recommends."""
    with pgmod.PgCluster.create(durable=True, settings={"wal_keep_size": "0"}) as primary:
        standby = primary.add_standby(synchronous=True)
        assert primary.sql("SHOW min_wal_size") == pgmod.DURABLE_SETTINGS["min_wal_size"]
        assert standby.sql("SHOW max_wal_size") == pgmod.DURABLE_SETTINGS["max_wal_size"]
        primary.sql("CREATE TABLE w (x int)")

        def wal_files() -> set[str]:
            return {f"{s.name}/{n}" for s in (primary, standby)
                    for n in s.sql("SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'").split()}

        def cross_segments(n: int) -> set[str]:
            """Commit into the next ``n`` segments; the file names that appeared meanwhile."""
            seen = wal_files()
            for _ in range(n):
                primary.sql("INSERT INTO w VALUES (1)")
                primary.sql("SELECT pg_switch_wal()")
            primary.sql("INSERT INTO w VALUES (1)")
            lsn = primary.sql("SELECT pg_current_wal_lsn()")
            wait_for(lambda: primary.sql(f"SELECT count(*) FROM pg_stat_replication WHERE flush_lsn >= '{lsn}'") == "1",
                     "the standby's flush", 60)
            return wal_files() - seen

        new = cross_segments(2)  # as initdb left it: each segment is created, on both servers
        assert len([f for f in new if f.startswith(primary.name)]) >= 2, new
        assert len([f for f in new if f.startswith(standby.name)]) >= 2, new
        before = segments_ahead(primary, standby=False), segments_ahead(standby, standby=True)
        written = primary.recycle_wal(megabytes)
        assert written == megabytes // 16 + 1
        after = segments_ahead(primary, standby=False), segments_ahead(standby, standby=True)
        assert after[0] >= before[0] + megabytes // 16 and after[0] >= megabytes // 16, (before, after)
        assert after[1] >= before[1] + megabytes // 16 and after[1] >= megabytes // 16, (before, after)
        assert cross_segments(megabytes // 16 - 1) == set()  # in service: WAL goes into files that exist
