"""The node lease and its fence against a real PostgreSQL (tests/pg.py; issue 16 items 2 and 5):
exactly one holder, a new epoch at every takeover, the database's clock deciding expiry, and a
commit of a node that lost the lease refused by the database — nothing of it committed.

Two :class:`PgLease` objects with different holder names stand for two nodes; "paused" means
the node stops renewing (as a SIGSTOPped process would), nothing more. The two real ``msc
serve`` nodes are in tests/e2e/test_ha_nodes.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import asyncpg
import pytest

from msc.ha.keeper import LeaseKeeper
from msc.ha.lease import LeaseMachine, Role
from msc.ha.pglease import Fenced, Granted, Held, LeaseUnavailable, PgLease, connector, is_fenced
from tests import pg as pgmod
from tests.waiting import HANG_S

pytestmark = pytest.mark.skipif(pgmod.missing_reason() is not None, reason=pgmod.missing_reason() or "")

_names = itertools.count(1)


@pytest.fixture
def dsn(pg_server):
    """A fresh database on the module's server, as the libpq URI msc's [node]/[storage] take."""
    db = f"lease{next(_names)}"
    pg_server.create_database(db)
    return f"postgresql://postgres@127.0.0.1:{pg_server.port}/{db}?passfile={pg_server.passfile}"


def node(dsn: str, name: str, ttl: float = 1.0) -> PgLease:
    return PgLease(connector(dsn), holder=name, ttl_s=ttl, timeout_s=5.0)


async def until(cond, timeout: float = HANG_S, interval: float = 0.02):
    """Poll an async condition until it is truthy (never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def journal_rows(dsn: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [(r["node"], r["epoch"]) for r in await conn.fetch("SELECT node, epoch FROM journal_test ORDER BY id")]
    finally:
        await conn.close()


async def commit(conn: asyncpg.Connection, fence, node_name: str, epoch: int) -> None:
    """What the journal writer does per group commit: fence first, then insert, one transaction."""
    async with conn.transaction():
        await fence(conn)
        await conn.execute("INSERT INTO journal_test (node, epoch) VALUES ($1, $2)", node_name, epoch)


@pytest.fixture
async def journal(dsn):
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE journal_test (id bigserial PRIMARY KEY, node text, epoch bigint)")
    yield conn
    await conn.close()


async def test_the_first_node_gets_epoch_1_and_the_second_is_told_who_holds_it(dsn):
    a, b = node(dsn, "node-a", ttl=30), node(dsn, "node-b", ttl=30)
    try:
        t0 = time.monotonic()
        assert await a.acquire() == Granted(1)
        held = await b.acquire()
        # By the database's clock: the ttl less what has passed since it was granted (which, on a
        # loaded machine, may be seconds; the same machine's clock bounds it from this side).
        assert isinstance(held, Held) and held.holder == "node-a" and held.epoch == 1
        assert 30 - (time.monotonic() - t0) - 1 < held.remaining_s <= 30, held
        again = await a.acquire()  # not even its holder re-takes it
        assert isinstance(again, Held) and (again.holder, again.epoch) == ("node-a", 1), again
        assert 30 - (time.monotonic() - t0) - 1 < again.remaining_s <= 30, (held, again)
        row = await b.current()
        assert row is not None and (row.holder, row.epoch, row.live) == ("node-a", 1, True)
    finally:
        await a.close()
        await b.close()


async def test_a_paused_node_loses_the_lease_and_its_commits_are_fenced(dsn, journal):
    """Node A holds epoch 1 and commits; it stops renewing (paused) past the ttl; node B takes
    the lease with epoch 2; A's renewal is refused and A's next commit fails in the database,
    leaving nothing of it in the table, while B's commits go through."""
    a, b = node(dsn, "node-a"), node(dsn, "node-b")
    try:
        assert await a.acquire() == Granted(1)
        fence_a = a.fence_for(1)
        await commit(journal, fence_a, "node-a", 1)
        granted = await until(lambda: _granted(b))
        assert granted == Granted(2)
        assert await a.renew(1) is False
        with pytest.raises(Fenced, match="no longer holds lease msc at epoch 1"):
            await commit(journal, fence_a, "node-a", 1)
        await commit(journal, b.fence_for(2), "node-b", 2)
        assert await journal_rows(dsn) == [("node-a", 1), ("node-b", 2)]
        assert journal.is_in_transaction() is False  # the fenced transaction was rolled back
    finally:
        await a.close()
        await b.close()


async def _granted(lease: PgLease):
    r = await lease.acquire()
    return r if isinstance(r, Granted) else None


async def test_an_expired_lease_nobody_took_still_fences_its_old_holder(dsn, journal):
    """The database's expiry alone fences: a node whose lease lapsed cannot commit, even before
    another node took over (and cannot renew it back: it must acquire a new epoch)."""
    a = node(dsn, "node-a")
    try:
        assert await a.acquire() == Granted(1)
        await until(lambda: _expired(a))
        with pytest.raises(Fenced):
            await commit(journal, a.fence_for(1), "node-a", 1)
        assert await a.renew(1) is False
        assert await a.acquire() == Granted(2)
        await commit(journal, a.fence_for(2), "node-a", 2)
        assert await journal_rows(dsn) == [("node-a", 2)]
    finally:
        await a.close()


async def _expired(lease: PgLease) -> bool:
    row = await lease.current()
    return row is not None and not row.live


@pytest.mark.parametrize("late", ["node-a", "node-b"], ids=["the-old-holder", "the-standby"])
async def test_an_acquire_that_commits_after_its_node_gave_up_only_delays_the_next_epoch(dsn, journal, late):
    """newcomer7: after a frozen PostgreSQL a node got epoch 19 and no log had an 18. An acquire
    sent while the server was frozen times out at the node (its connection is cut; the cancel
    request cannot reach a frozen server either), but the server, thawed, runs the statement it
    had already received and commits it: the row says ``late`` holds a new epoch that no node
    knows of. It is played here by running the same ACQUIRE on a connection of its own — what the
    thawed backend does. Safe for fencing: no node has a fence for that epoch, so no commit passes;
    every commit at an older epoch is refused; the row is renewed by nobody and expires after the
    ttl like any lease; then the next acquire takes the epoch after it (a number is skipped)."""
    from msc.ha.pglease import ACQUIRE

    a, b = node(dsn, "node-a"), node(dsn, "node-b")
    try:
        assert await a.acquire() == Granted(1)
        await commit(journal, a.fence_for(1), "node-a", 1)
        await until(lambda: _expired(a))  # A's renewals went unanswered (the database was frozen)
        thawed = await asyncpg.connect(dsn)
        try:
            [row] = await thawed.fetch(ACQUIRE, "msc", late, 1.0, None)  # the statement the frozen backend held
        finally:
            await thawed.close()
        assert row["won"] == 2  # committed for a node that gave up waiting for its answer
        for lease, name in ((a, "node-a"), (b, "node-b")):
            for epoch in (1, 2, 3):  # nobody's fence passes: not the old epoch, not the orphan's
                if (name, epoch) == (late, 2):
                    continue  # (the one fence no node holds: it never learned of epoch 2)
                with pytest.raises(Fenced):
                    await commit(journal, lease.fence_for(epoch), name, epoch)
        held = await b.acquire()  # the orphan blocks every node, its own holder's too, until it expires
        assert isinstance(held, Held) and (held.holder, held.epoch) == (late, 2)
        assert isinstance(await a.acquire(), Held)
        granted = await until(lambda: _granted(b))  # expired normally (nobody renewed it)
        assert granted == Granted(3)
        await commit(journal, b.fence_for(3), "node-b", 3)
        assert await journal_rows(dsn) == [("node-a", 1), ("node-b", 3)]  # epoch 2 never committed anything
    finally:
        await a.close()
        await b.close()


async def test_a_takeover_waits_for_a_commit_already_fenced_and_every_later_commit_is_refused(dsn, journal):
    """The fence's share lock orders every commit entirely before or after a takeover: B's
    acquisition waits while A's fenced transaction is open, then gets the next epoch."""
    a, b = node(dsn, "node-a"), node(dsn, "node-b")
    try:
        assert await a.acquire() == Granted(1)
        fence_a = a.fence_for(1)
        tx = journal.transaction()
        await tx.start()
        await fence_a(journal)  # A's commit is fenced and in progress (a large batch, a slow disk)
        await until(lambda: _expired(b))  # and meanwhile A's lease expires
        taking = asyncio.create_task(b.acquire())
        watcher = await asyncpg.connect(dsn)
        try:
            await until(lambda: _waits_on_a_lock(watcher))  # B waits for A's transaction
        finally:
            await watcher.close()
        assert not taking.done()
        await journal.execute("INSERT INTO journal_test (node, epoch) VALUES ('node-a', 1)")
        await tx.commit()
        assert await asyncio.wait_for(taking, HANG_S) == Granted(2)
        with pytest.raises(Fenced):
            await commit(journal, fence_a, "node-a", 1)
        assert await journal_rows(dsn) == [("node-a", 1)]
    finally:
        await a.close()
        await b.close()


async def _waits_on_a_lock(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO msc_lease%'"))


async def test_many_nodes_racing_for_an_expired_lease_exactly_one_wins_each_round(dsn):
    leases = [node(dsn, f"node-{i}") for i in range(6)]
    try:
        epochs = []
        for _round in range(3):
            await until(lambda: _expired_or_free(leases[0]))
            results = await asyncio.gather(*(lease.acquire() for lease in leases))
            winners = [r for r in results if isinstance(r, Granted)]
            assert len(winners) == 1, results
            epochs.append(winners[0].epoch)
            assert all(isinstance(r, Held) for r in results if not isinstance(r, Granted))
        assert epochs == [epochs[0], epochs[0] + 1, epochs[0] + 2]
    finally:
        for lease in leases:
            await lease.close()


async def _expired_or_free(lease: PgLease) -> bool:
    row = await lease.current()
    return row is None or not row.live


@pytest.mark.parametrize("holder, epoch", [
    ("node-b", 1),   # another node's name, the right epoch
    ("node-a", 2),   # the right name, a future epoch
    ("node-a", 0),   # an old epoch
    ("NODE-A", 1),   # names are exact
    ("node-a ", 1),
])
async def test_renew_release_and_fence_need_the_exact_holder_and_epoch(dsn, journal, holder, epoch):
    a = node(dsn, "node-a", ttl=30)
    other = node(dsn, holder, ttl=30)
    try:
        assert await a.acquire() == Granted(1)
        assert await other.renew(epoch) is False
        assert await other.release(epoch) is False
        with pytest.raises(Fenced):
            await commit(journal, other.fence_for(epoch), holder, epoch)
        row = await a.current()
        assert row is not None and (row.holder, row.epoch, row.live) == ("node-a", 1, True)
        assert await journal_rows(dsn) == []
    finally:
        await a.close()
        await other.close()


async def test_a_released_lease_is_taken_at_once_with_the_next_epoch(dsn):
    a, b = node(dsn, "node-a", ttl=30), node(dsn, "node-b", ttl=30)
    try:
        assert await a.acquire() == Granted(1)
        assert await a.release(1) is True
        assert await b.acquire() == Granted(2)
        assert await a.release(1) is False  # not its own any more
        assert await a.renew(1) is False
    finally:
        await a.close()
        await b.close()


async def test_a_restarted_nodes_own_expired_lease_is_left_to_a_node_seen_waiting(dsn):
    """The ACQUIRE of a node restarted less than a ttl ago (``defer_within_s``, newcomer9 F5): its
    own name's expired lease is refused to it while another node of this lease announced itself
    within that time — and only then: a first start, a lease of another name, its own announce,
    another lease's node, or a node seen too long ago do not hold it back."""
    a, b = node(dsn, "node-a", ttl=30), node(dsn, "node-b", ttl=30)
    elsewhere = PgLease(connector(dsn), holder="node-b", ttl_s=30, name="msc2", timeout_s=5.0)
    try:
        assert await a.announce(90) is None and await elsewhere.announce(90) is None
        assert await a.acquire(defer_within_s=20) == Granted(1)  # first start: nobody else seen
        assert await a.release(1)
        assert await a.acquire(defer_within_s=20) == Granted(2)  # its own row and another lease's do not count
        assert await a.release(2)
        assert await b.announce(90) is None  # node-b is waiting
        held = await a.acquire(defer_within_s=20)
        assert isinstance(held, Held) and (held.holder, held.epoch) == ("node-a", 2), held
        assert held.remaining_s is not None and held.remaining_s <= 0  # expired, its own: deferred
        assert await a.acquire() == Granted(3)  # the deferral over: taken if still free
        assert await a.release(3)
        assert await b.acquire(defer_within_s=20) == Granted(4)  # the waiting node is never held back
        assert await b.release(4)
        assert await a.acquire(defer_within_s=20) == Granted(5)  # the other name's lease: no deferral
        assert await a.release(5)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE msc_node_seen SET seen_at = seen_at - interval '25 seconds' "
                               "WHERE name = 'msc/node-b'")
        finally:
            await conn.close()
        assert await a.acquire(defer_within_s=20) == Granted(6)  # node-b not seen for 25 s
    finally:
        for lease in (a, b, elsewhere):
            await lease.close()


async def test_an_unreachable_database_is_an_unknown_outcome_not_a_grant(pg_server):
    dead = f"postgresql://postgres@127.0.0.1:{pgmod.free_port()}/postgres?passfile={pg_server.passfile}"
    lease = node(dead, "node-a")
    try:
        with pytest.raises(LeaseUnavailable):
            await lease.acquire()
        with pytest.raises(LeaseUnavailable):
            await lease.renew(1)
    finally:
        await lease.close()


async def test_the_fenced_sqlstate_is_recognised_in_a_one_statement_commit(dsn, journal):
    """The same fence inside one statement (a CTE, as a batched insert may be written): the
    database raises SQLSTATE MSC01 and nothing is inserted."""
    a, b = node(dsn, "node-a", ttl=30), node(dsn, "node-b", ttl=30)
    try:
        assert await a.acquire() == Granted(1)
        assert await a.release(1)
        assert await b.acquire() == Granted(2)
        with pytest.raises(asyncpg.PostgresError) as err:
            await journal.execute(
                "WITH f AS MATERIALIZED (SELECT msc_fence($1, $2, $3) AS ok) "
                "INSERT INTO journal_test (node, epoch) SELECT $2, $3 FROM f WHERE f.ok", "msc", "node-a", 1)
        assert is_fenced(err.value) and err.value.sqlstate == "MSC01"
        assert await journal_rows(dsn) == []
    finally:
        await a.close()
        await b.close()


# --- the keeper: the decision logic driving the real lease -----------------------------------


class Partitioned(PgLease):
    """A node's lease whose every call, once :meth:`cut`, hangs (a network partition; to the
    database a SIGSTOPped node looks the same: it stops renewing)."""

    cut_off = False

    def cut(self) -> None:
        self.cut_off = True

    async def _call(self, sql, *args):
        if self.cut_off:
            await asyncio.Event().wait()
        return await super()._call(sql, *args)


async def test_two_keepers_one_cut_off_the_other_takes_over_and_the_cut_off_one_steps_down(dsn, journal):
    """Two nodes' keepers (ttl 1 s): A becomes active; A is cut off from the database (its
    renewals hang); A steps down when its belief ends and B takes over with epoch + 1; A's
    commits are fenced from then on, B's go through."""
    roles: dict[str, list[tuple[Role, int]]] = {"a": [], "b": []}
    lease_a = Partitioned(connector(dsn), holder="node-a", ttl_s=1.0)
    ka = LeaseKeeper(lease_a, LeaseMachine(1.0), on_role=lambda r, e, _why: roles["a"].append((r, e)))
    kb = LeaseKeeper(node(dsn, "node-b"), LeaseMachine(1.0), on_role=lambda r, e, _why: roles["b"].append((r, e)))
    try:
        ka.start()
        epoch_a = await asyncio.wait_for(ka.wait_active(), HANG_S)
        kb.start()
        fence_a = ka.fence()
        await commit(journal, fence_a, "node-a", epoch_a)
        assert kb.role is Role.STANDBY
        lease_a.cut()
        reason = await asyncio.wait_for(ka.wait_lost(), HANG_S)
        assert "not renewed in time" in reason
        epoch_b = await asyncio.wait_for(kb.wait_active(), HANG_S)
        assert epoch_b == epoch_a + 1
        await commit(journal, kb.fence(), "node-b", epoch_b)
        with pytest.raises(Fenced):
            await commit(journal, fence_a, "node-a", epoch_a)
        assert ka.role is Role.STANDBY and kb.role is Role.ACTIVE
        assert roles["a"] == [(Role.ACTIVE, epoch_a), (Role.STANDBY, epoch_a)]
        assert roles["b"] == [(Role.ACTIVE, epoch_b)]
        assert await journal_rows(dsn) == [("node-a", epoch_a), ("node-b", epoch_b)]
    finally:
        lease_a.cut_off = False
        await ka.stop(release=False)
        await kb.stop(release=True)


async def test_a_keeper_cut_off_by_a_blackhole_says_standby_before_the_other_is_granted(dsn, journal, pg_server):
    """newcomer8 #3 at the keeper's level: node A's lease connection goes through a relay that is
    cut (nothing crosses, nothing is reset: asyncpg's calls just wait); node B still reaches the
    database. When B is granted the lease, A — asked then, as a load balancer's /readyz asks it —
    already says standby and has stepped down (its belief ended ttl × 0.99 after its last renewal's
    send, before the database's expiry let B in), whatever its own calls still wait on. Order of
    events, not timings."""
    from tests.relay import Relay

    relay = Relay(pg_server.port)
    events: list[tuple] = []
    lease_a = node(dsn.replace(f":{pg_server.port}/", f":{relay.port}/"), "node-a")
    ka = LeaseKeeper(lease_a, LeaseMachine(1.0), on_role=lambda r, e, _why: events.append(("a", r, e)))
    kb = LeaseKeeper(node(dsn, "node-b"), LeaseMachine(1.0),
                     on_role=lambda r, e, _why: events.append(("b", r, e, ka.check())))
    try:
        ka.start()
        epoch_a = await asyncio.wait_for(ka.wait_active(), HANG_S)
        kb.start()
        await until(lambda: _holder_seen(kb, "node-a"))
        fence_a = ka.fence()
        await commit(journal, fence_a, "node-a", epoch_a)
        relay.cut()
        epoch_b = await asyncio.wait_for(kb.wait_active(), HANG_S)
        assert epoch_b == epoch_a + 1
        assert events == [("a", Role.ACTIVE, epoch_a), ("a", Role.STANDBY, epoch_a), ("b", Role.ACTIVE, epoch_b, Role.STANDBY)]
        assert "not renewed in time" in await asyncio.wait_for(ka.wait_lost(), HANG_S)
        with pytest.raises(Fenced):
            await commit(journal, fence_a, "node-a", epoch_a)
        await commit(journal, kb.fence(), "node-b", epoch_b)
        assert await journal_rows(dsn) == [("node-a", epoch_a), ("node-b", epoch_b)]
    finally:
        await ka.stop(release=False)
        await kb.stop(release=True)
        relay.close()


async def _holder_seen(k: LeaseKeeper, holder: str) -> bool:
    return k.holder_seen == holder


async def test_a_fence_refused_by_the_database_makes_the_keeper_step_down(dsn, journal):
    """The local belief has time left but the database says another node holds the lease (an
    operator cleared it, a clock ran fast): the fence raises, the keeper steps down at once."""
    ka = LeaseKeeper(node(dsn, "node-a", ttl=30), LeaseMachine(30.0))
    try:
        ka.start()
        epoch = await asyncio.wait_for(ka.wait_active(), HANG_S)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE msc_lease SET holder = 'node-b', epoch = epoch + 1")
        finally:
            await conn.close()
        with pytest.raises(Fenced):
            await commit(journal, ka.fence(), "node-a", epoch)
        reason = await asyncio.wait_for(ka.wait_lost(), HANG_S)
        assert "fenced" in reason and ka.role is Role.STANDBY
    finally:
        await ka.stop(release=False)


async def test_a_clean_stop_releases_and_the_standby_takes_over_without_waiting_the_ttl(dsn):
    ka = LeaseKeeper(node(dsn, "node-a", ttl=60), LeaseMachine(60.0))
    kb = LeaseKeeper(node(dsn, "node-b", ttl=60), LeaseMachine(60.0))
    try:
        ka.start()
        epoch = await asyncio.wait_for(ka.wait_active(), HANG_S)
        kb.start()
        await ka.stop(release=True)
        # Within the standby's poll (0.5 s), far from the 60 s ttl.
        assert await asyncio.wait_for(kb.wait_active(), HANG_S) == epoch + 1
    finally:
        await kb.stop(release=True)


async def test_the_configured_node_reads_its_password_from_the_file_not_the_uri(tmp_path, pg_server):
    """[node] lease_password_file: the first line is the password (no passfile= in the URI);
    a wrong one is an unknown outcome (LeaseUnavailable), never a grant, and is not echoed."""
    from msc.config.load import load
    from msc.server.node import keeper_for
    from tests.conftest import make_config

    db = f"lease{next(_names)}"
    pg_server.create_database(db)
    for password, ok in ((pg_server.password, True), ("not-the-password", False)):
        cfg = make_config(tmp_path / str(ok))
        pw = tmp_path / str(ok) / "pg.pw"
        pw.write_text(f"{password}\nnot part of it\n")
        pw.chmod(0o600)
        cfg.write_text(cfg.read_text() + f'\n[node]\nname = "node-a"\nlease_ttl_s = 30\n'
                                          f'lease_dsn = "postgresql://postgres@127.0.0.1:{pg_server.port}/{db}"\n'
                                          f'lease_password_file = "pg.pw"\n')
        keeper = keeper_for(load(cfg))
        try:
            if ok:
                assert await keeper.lease.acquire() == Granted(1)
            else:
                with pytest.raises(LeaseUnavailable, match="password authentication failed") as err:
                    await keeper.lease.acquire()
                assert "not-the-password" not in str(err.value)
        finally:
            await keeper.lease.close()


async def test_the_lease_and_its_epoch_survive_a_postgresql_failover():
    """PostgreSQL's own failover (issue 16 item 4): the lease row is replicated synchronously, so
    after kill -9 of the primary and the promotion of its standby the multi-host URI reaches the
    new primary, the holder renews the same epoch and the next acquisition is epoch + 1 — an
    epoch is never handed out twice across a database failover."""
    with pgmod.primary_with_standby() as (primary, standby):
        hosts = f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
        dsn = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write&passfile={primary.passfile}"
        a, b = node(dsn, "node-a", ttl=60), node(dsn, "node-b", ttl=60)
        try:
            assert await a.acquire() == Granted(1)
            primary.kill()
            with pytest.raises(LeaseUnavailable):
                await a.renew(1)  # the connection died with the primary: outcome unknown
            standby.promote()

            async def renewed() -> bool:
                try:
                    return await a.renew(1)
                except LeaseUnavailable:
                    return False

            assert await until(renewed, timeout=60)
            assert await b.acquire() == Held("node-a", 1, pytest.approx(60, abs=10))
            assert await a.release(1)
            assert await b.acquire() == Granted(2)
        finally:
            await a.close()
            await b.close()


# -- a node's name, alive in the database (PgLease.announce): a twin refused whichever is active --


async def test_a_name_is_one_live_processs_and_a_dead_or_silent_ones_is_taken_over(dsn):
    """Who may say "I am node-b": the process that said it last, while it keeps saying it; after
    it stopped (not seen for live_s) anyone; at once its successor on the same host when its
    process is gone (a supervisor's restart after a kill -9)."""
    first, twin, other = node(dsn, "node-b"), node(dsn, "node-b"), node(dsn, "node-a")
    try:
        assert await first.announce(30) is None
        assert await first.announce(30) is None  # its own again
        assert await other.announce(30) is None  # another name: no conflict
        twin.host = "other-host"  # a second machine given the same name
        why = await twin.announce(30)
        assert why is not None and why.startswith(f"another live node is running as 'node-b' (host {first.host}, "
                                                  f"process {first.pid}, seen ")
        assert await first.announce(30) is None  # the live one keeps its name
        # The same host, its process gone (as after kill -9 and a restart): taken at once.
        dead = await _dead_pid()
        first.pid = dead
        assert await first.announce(30) is None
        restarted = node(dsn, "node-b")
        try:
            assert await restarted.announce(30) is None
            assert (await node_seen(dsn, "node-b"))["instance"] == restarted.instance
        finally:
            await restarted.close()
        # Silent for live_s (paused, cut off): anyone may take it; the silent one then meets a twin.
        assert await twin.announce(0.0) is None
        assert (await node_seen(dsn, "node-b"))["instance"] == twin.instance
    finally:
        for x in (first, twin, other):
            await x.close()


async def _dead_pid() -> int:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    return proc.pid


async def node_seen(dsn: str, name: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT * FROM msc_node_seen WHERE name = $1", f"msc/{name}")
    finally:
        await conn.close()


async def test_the_nodes_seen_alive_are_those_of_this_lease_announced_within_the_time(dsn):
    """``msc status`` with no node active asks who is running to take the lease (newcomer trial F7:
    "a standby takes it at its next poll" with both nodes down): the nodes of this lease that
    announced themselves within the time asked, by name — none when none has."""
    a, b = node(dsn, "node-a", ttl=30), node(dsn, "node-b", ttl=30)
    elsewhere = PgLease(connector(dsn), holder="node-c", ttl_s=30, name="msc2", timeout_s=5.0)
    try:
        assert await a.seen_alive(30) == []  # nobody ever announced (the table made on the way)
        assert await a.announce(90) is None and await b.announce(90) is None and await elsewhere.announce(90) is None
        seen = await a.seen_alive(30)
        assert [(s.node, s.host, s.pid) for s in seen] == [("node-a", a.host, a.pid), ("node-b", b.host, b.pid)]
        assert all(0 <= s.ago_s < 30 for s in seen)
        assert [s.node for s in await elsewhere.seen_alive(30)] == ["node-c"]  # another lease's nodes are not these
        assert await a.seen_alive(0.0) == []  # none within no time: as after every node stopped
    finally:
        for n in (a, b, elsewhere):
            await n.close()


async def test_a_clean_stop_takes_back_its_alive_mark_and_says_the_lease_was_released(dsn):
    """Newcomer trial F1: both nodes stopped cleanly, and ``msc status`` still counted them running
    (their marks in ``msc_node_seen``) and said the released lease "ran out". A keeper's clean stop
    — the active node's, releasing the lease, and a standby's — deletes the process's own mark (a
    newer process's of the same name is left), and the lease row says it was released."""
    ka = LeaseKeeper(node(dsn, "node-a", ttl=30), LeaseMachine(30.0))
    kb = LeaseKeeper(node(dsn, "node-b", ttl=30), LeaseMachine(30.0))
    probe = node(dsn, "probe", ttl=30)
    try:
        ka.start()
        await asyncio.wait_for(ka.wait_active(), HANG_S)
        kb.start()
        await until(lambda: _seen_names(probe, {"node-a", "node-b"}))
        await ka.stop(release=True)
        row = await probe.current()
        assert row is not None and (row.holder, row.live, row.released) == ("node-a", False, True), row
        assert [s.node for s in await probe.seen_alive(90)] == ["node-b"]  # at once, not after the lease time
        await kb.stop(release=True)  # a standby's stop
        assert await probe.seen_alive(90) == []
        # A later process of the name announced meanwhile: an old process's stop leaves its mark.
        old, new = node(dsn, "node-c", ttl=30), node(dsn, "node-c", ttl=30)
        assert await old.announce(90) is None
        await probe._call("UPDATE msc_node_seen SET seen_at = seen_at - interval '100 s' WHERE name = 'msc/node-c'")
        assert await new.announce(90) is None
        assert await old.depart() is False and [s.node for s in await probe.seen_alive(90)] == ["node-c"]
        await old.close()
        await new.close()
    finally:
        await probe.close()


async def _seen_names(lease: PgLease, names: set[str]) -> bool:
    return {s.node for s in await lease.seen_alive(90)} == names


async def test_a_grant_says_how_the_lease_was_taken(dsn):
    """Newcomer trial F8: ``node.active`` is a warning only at a failover — so the grant says whether
    the lease was free, released, the node's own, or another node's that ran out."""
    a, b = node(dsn, "node-a"), node(dsn, "node-b")
    try:
        g = await a.acquire()
        assert isinstance(g, Granted) and (g.taken, g.previous) == ("free", None)
        assert await a.release(g.epoch)
        g = await b.acquire()  # released by node-a: taken at once, an ordinary hand-over
        assert isinstance(g, Granted) and (g.taken, g.previous) == ("released", "node-a")
        assert await b.confirm(g.epoch)  # (as its keeper does: it knows it holds it)
        await until(lambda: _expired(b))
        g = await until(lambda: _granted(a))  # node-b's lease ran out unrenewed: a failover
        assert (g.taken, g.previous) == ("failover", "node-b")
        assert await a.confirm(g.epoch)
        await until(lambda: _expired(a))
        g = await until(lambda: _granted(a))  # its own (a restart after a crash)
        assert (g.taken, g.previous) == ("own", "node-a")
        row = await a.current()
        assert row is not None and row.live and not row.released
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("then", ["the same process retries", "its node restarted", "the other node"])
async def test_a_take_whose_answer_was_lost_is_reported_as_the_take_it_was(dsn, pg_server, then):
    """Newcomer trial (frozen database): node-b held the lease and ran out; node-a's take committed
    at the database but its answer never came back (here: a relay that drops what the server
    sends — the statement ran and committed, node-a's call timed out). The row names node-a at an
    epoch node-a never knew. Whoever takes the lease next must say what really happened, never
    that node-a restarted: node-a's retry — or a restart of node-a — took node-b's lease over
    (a failover: ``node.active`` is a warning), and node-b taking it back is node-b's own lease
    again (nobody served in between)."""
    from tests.relay import Relay

    relay = Relay(pg_server.port)
    via_relay = dsn.replace(f":{pg_server.port}/", f":{relay.port}/")
    a = PgLease(connector(via_relay, timeout_s=2.0), holder="node-a", ttl_s=1.0, timeout_s=2.0)
    b = node(dsn, "node-b")
    watcher = node(dsn, "watcher")
    try:
        g = await b.acquire()
        assert isinstance(g, Granted) and await b.confirm(g.epoch)  # node-b knew: it served
        # node-a, a standby, polls (its connection through the relay, the statement prepared on it)
        assert isinstance(await a.acquire(), Held)
        await until(lambda: _expired(b))  # node-b paused: its lease ran out
        relay.cut_answers()
        with pytest.raises(LeaseUnavailable):
            await a.acquire()  # committed at the database; node-a heard nothing
        row = await until(lambda: _held_by(watcher, "node-a"))
        assert (row.epoch, row.heard) == (g.epoch + 1, False)  # the lost take
        relay.mend()
        if then == "the same process retries":
            taker, expect = a, ("failover", "node-b")
        elif then == "its node restarted":  # killed before it heard: a new process of node-a
            await a.close()
            taker, expect = node(dsn, "node-a"), ("failover", "node-b")
        else:
            taker, expect = b, ("own", "node-b")
        granted = await until(lambda: _granted(taker))  # once the unheard epoch ran out (nobody renews it)
        assert granted.epoch == g.epoch + 2
        assert (granted.taken, granted.previous) == expect
        if taker is not a and taker is not b:
            await taker.close()
    finally:
        await a.close()
        await b.close()
        await watcher.close()
        relay.close()


async def _held_by(lease: PgLease, holder: str):
    row = await lease.current()
    return row if row is not None and row.holder == holder else None


async def test_a_node_restarted_after_it_served_takes_its_own_lease_back_as_own(dsn):
    """The kill -9 of an active node (it had heard of its grant) restarted at once: its old lease
    runs out and the new process takes it — its own (info), not a failover."""
    a1, a2 = node(dsn, "node-a"), node(dsn, "node-a")
    try:
        g = await a1.acquire()
        assert isinstance(g, Granted) and (g.taken, g.previous) == ("free", None)
        assert await a1.confirm(g.epoch)
        await a1.close()  # killed
        granted = await until(lambda: _granted(a2))
        assert (granted.epoch, granted.taken, granted.previous) == (g.epoch + 1, "own", "node-a")
    finally:
        await a1.close()
        await a2.close()


async def test_a_keeper_says_at_once_that_it_heard_of_its_grant(dsn):
    """The keeper confirms its grant right after it (long before its first renewal, at ttl / 3),
    so a take of this node's is never mistaken for one whose answer was lost."""
    ka = LeaseKeeper(node(dsn, "node-a", ttl=600), LeaseMachine(600.0))
    watcher = node(dsn, "watcher")
    try:
        ka.start()
        epoch = await asyncio.wait_for(ka.wait_active(), HANG_S)
        row = await until(lambda: _held_by(watcher, "node-a"))
        assert row.epoch == epoch
        await until(lambda: _heard(watcher))
        assert ka.lease.ttl_s / 3 > HANG_S  # (not by a renewal: none is due yet)
    finally:
        await ka.stop(release=True)
        await watcher.close()


async def _heard(lease: PgLease) -> bool:
    row = await lease.current()
    return row is not None and row.heard
