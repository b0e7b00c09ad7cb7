"""The lease keeper's loop (msc.ha.keeper) over an in-memory lease: it becomes active on a grant,
steps down on a refused renewal, a fenced commit or its own failure, and releases on a clean
stop. (Against a real PostgreSQL: tests/integration/test_ha_lease_pg.py.)"""

from __future__ import annotations

import asyncio

import pytest

from msc.ha.keeper import LeaseKeeper
from msc.ha.lease import LeaseMachine, Role
from msc.ha.pglease import Fenced, Granted, Held, LeaseUnavailable
from tests.waiting import HANG_S


class FakeLease:
    """The calls of PgLease, answered from a script: ``renewals`` are the answers to successive
    renewals (True, False, or an exception to raise)."""

    def __init__(self, *, grant: int | None = 1, renewals=(), holder: str = "node-a") -> None:
        self.holder = holder
        self.timeout_s = 1.0
        self.grant = grant
        self.renewals = list(renewals)
        self.released: list[int] = []
        self.calls: list[str] = []
        self.closed = False
        self.row = None  # what current() answers (a LeaseRow, or None: never held)
        self.twin: str | None = None  # what announce() says: another live node of this name

    async def acquire(self, *, defer_within_s=None):
        self.calls.append("acquire")
        if not self.grant:
            return Held("node-b", 4, 0.3)
        self.grant += 1
        return Granted(self.grant - 1)

    async def renew(self, epoch: int) -> bool:
        self.calls.append("renew")
        answer = self.renewals.pop(0) if self.renewals else True
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def release(self, epoch: int) -> bool:
        self.released.append(epoch)
        return True

    async def confirm(self, epoch: int) -> bool:
        return True

    async def depart(self) -> bool:
        self.calls.append("depart")
        return True

    async def current(self):
        self.calls.append("current")
        return self.row
    async def announce(self, live_s: float) -> str | None:
        self.calls.append("announce")
        return self.twin

    async def close(self) -> None:
        self.closed = True

    def fence_for(self, epoch, *, before=None, on_fenced=None):
        async def fence(conn) -> None:
            try:
                if before is not None:
                    before()
                if conn == "stale":
                    raise Fenced("epoch moved on")
            except Fenced as exc:
                if on_fenced:
                    on_fenced(str(exc))
                raise
        return fence


def keeper(lease: FakeLease, roles: list) -> LeaseKeeper:
    return LeaseKeeper(lease, LeaseMachine(1.0), on_role=lambda r, e, why: roles.append((r, e, why)))  # type: ignore[arg-type]


async def test_a_grant_makes_it_active_and_renewals_keep_it_so():
    roles: list = []
    lease = FakeLease(renewals=[True, True, True])
    k = keeper(lease, roles)
    k.start()
    assert await asyncio.wait_for(k.wait_active(), HANG_S) == 1
    assert k.role is Role.ACTIVE and roles == [(Role.ACTIVE, 1, "lease acquired")]
    await asyncio.wait_for(_until(lambda: lease.calls.count("renew") >= 3), HANG_S)
    assert k.role is Role.ACTIVE
    await k.stop(release=True)
    assert lease.released == [1] and lease.closed
    assert k.role is Role.STANDBY


async def test_a_standby_polls_and_does_not_release_what_it_never_held():
    roles: list = []
    lease = FakeLease(grant=None)
    k = keeper(lease, roles)
    k.start()
    await asyncio.wait_for(_until(lambda: lease.calls.count("acquire") >= 2), HANG_S)
    assert k.role is Role.STANDBY and k.holder_seen == "node-b" and roles == []
    await k.stop(release=True)
    assert lease.released == []


@pytest.mark.parametrize("answer, reason", [
    (False, "refused the renewal"),
    (LeaseUnavailable("lease database: down"), "not renewed in time"),
])
async def test_a_renewal_refused_or_failing_steps_it_down(answer, reason):
    roles: list = []
    lease = FakeLease(renewals=[answer] * 50)
    k = keeper(lease, roles)
    k.start()
    await asyncio.wait_for(k.wait_active(), HANG_S)
    why = await asyncio.wait_for(k.wait_lost(), HANG_S)
    assert reason in why
    assert k.role is Role.STANDBY
    assert roles[-1][:2] == (Role.STANDBY, 1)
    if isinstance(answer, BaseException):
        assert k.last_error == "lease database: down"
    await k.stop(release=True)
    assert lease.released == []  # not held any more: nothing to release


async def test_a_fenced_commit_steps_it_down_at_once():
    roles: list = []
    k = keeper(FakeLease(), roles)
    k.start()
    await asyncio.wait_for(k.wait_active(), HANG_S)
    fence = k.fence()
    await fence("fresh")  # the database agrees: no error
    with pytest.raises(Fenced):
        await fence("stale")
    why = await asyncio.wait_for(k.wait_lost(), HANG_S)
    assert "fenced" in why and k.role is Role.STANDBY
    with pytest.raises(Fenced, match="lapsed here"):
        await fence("fresh")  # refused here, before any round trip
    await asyncio.wait_for(_until(lambda: not k.running), HANG_S)  # one tenure per keeper: it never re-acquires
    assert lease_calls(k).count("acquire") == 1 and k.role is Role.STANDBY
    await k.stop(release=False)


async def test_a_keeper_that_fails_unexpectedly_tells_the_node_to_stop_serving():
    roles: list = []
    k = keeper(FakeLease(renewals=[RuntimeError("bug")]), roles)
    k.start()
    await asyncio.wait_for(k.wait_active(), HANG_S)
    why = await asyncio.wait_for(k.wait_lost(), HANG_S)
    assert "keeper failed" in why and "bug" in why
    assert k.role is Role.STANDBY and roles[-1][0] is Role.STANDBY
    await k.stop(release=False)


def lease_calls(k: LeaseKeeper) -> list[str]:
    return k.lease.calls  # type: ignore[attr-defined]


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.01)


class RefusingLease(FakeLease):
    """Every acquisition fails with ``errors`` in turn (the last one again and again), then grants."""

    def __init__(self, errors: list[BaseException], *, then_grant: bool = False) -> None:
        super().__init__()
        self.errors = errors
        self.then_grant = then_grant

    async def acquire(self, *, defer_within_s=None):
        self.calls.append("acquire")
        if self.errors and (len(self.errors) > 1 or not self.then_grant):
            raise self.errors.pop(0) if len(self.errors) > 1 else self.errors[0]
        self.errors = []
        return await super().acquire()


async def test_a_standby_refused_for_its_configuration_stops_waiting():
    from msc.ha.pglease import LeaseMisconfigured

    roles: list = []
    lease = RefusingLease([LeaseUnavailable("lease database: ConnectionRefusedError: …"),
                           LeaseMisconfigured("lease database: InvalidPasswordError: password authentication failed")])
    k = keeper(lease, roles)
    k.start()
    with pytest.raises(LeaseMisconfigured, match="InvalidPasswordError"):
        await asyncio.wait_for(k.wait_active(), 10)
    assert not k.running and roles == []
    await k.stop(release=True)
    assert lease.released == []


async def test_a_standby_waits_out_an_outage_however_long():
    roles: list = []
    lease = RefusingLease([LeaseUnavailable("lease database: ConnectionRefusedError: …")] * 4
                          + [LeaseUnavailable("lease database: CannotConnectNowError: starting up")], then_grant=True)
    k = keeper(lease, roles)
    k.start()
    assert await asyncio.wait_for(k.wait_active(), 30) == 1
    assert lease.calls.count("acquire") >= 5 and k.misconfigured is None
    await k.stop(release=True)


class HeldUnderMyName(FakeLease):
    """The lease is held under this node's own name: by a live twin that renews it (its expiry
    moves on, or its epoch does), or by this node's own dead predecessor (it runs out, then is granted)."""

    def __init__(self, how: str) -> None:
        super().__init__(grant=5)
        self.how = how
        self.t0: float | None = None

    async def acquire(self, *, defer_within_s=None):
        self.calls.append("acquire")
        now = asyncio.get_running_loop().time()
        self.t0 = now if self.t0 is None else self.t0
        left = 0.5 - (now - self.t0)
        if self.how == "dead predecessor" and left <= 0:
            return await super().acquire()
        if self.how == "dead predecessor":
            return Held("node-a", 4, left)
        if self.how == "twin renews":
            return Held("node-a", 4, 0.9)  # renewed at every look: its expiry keeps moving
        return Held("node-a", 4 + len(self.calls) // 3, 0.9)  # "twin re-acquires": new epochs


@pytest.mark.parametrize(("how", "twin"), [("dead predecessor", False), ("twin renews", True),
                                           ("twin re-acquires", True)])
async def test_a_second_live_node_with_the_same_name_is_refused(how, twin):
    from msc.ha.pglease import LeaseMisconfigured

    roles: list = []
    lease = HeldUnderMyName(how)
    k = keeper(lease, roles)
    k.start()
    if twin:
        with pytest.raises(LeaseMisconfigured, match="another live node is running as 'node-a'"):
            await asyncio.wait_for(k.wait_active(), 30)
        assert not k.running and roles == []
    else:
        assert await asyncio.wait_for(k.wait_active(), 30) == 5
        assert k.misconfigured is None
    await k.stop(release=True)


@pytest.mark.parametrize("row, holder", [
    (("node-b", 4, True, 2.5), "node-b"),   # the other node serves: /readyz names it
    (("node-b", 4, False, -7.0), None),     # its lease ran out: nobody serves, and this node will not
    (None, None),                           # nobody ever held it
])
async def test_a_node_held_back_never_asks_for_the_lease_and_competes_once_it_may(row, holder):
    """hold_back() (this machine's master key file cannot open the key ring) keeps the keeper from
    acquiring — it only reads who holds the lease — and it says so once, not at every poll; once
    hold_back() says nothing it competes, and wins a free lease."""
    from structlog.testing import capture_logs

    from msc.ha.pglease import LeaseRow

    roles: list = []
    lease = FakeLease()
    lease.row = None if row is None else LeaseRow(*row)
    why: list[str | None] = ["this machine's master key file cannot open the key ring: copy it"]
    k = LeaseKeeper(lease, LeaseMachine(1.0), on_role=lambda r, e, w: roles.append((r, e, w)),  # type: ignore[arg-type]
                    hold_back=lambda: why[0])
    with capture_logs() as logs:
        k.start()
        await asyncio.wait_for(_until(lambda: lease.calls.count("current") >= 3), HANG_S)
        assert "acquire" not in lease.calls and roles == [] and k.role is Role.STANDBY
        assert k.held_back == why[0] and k.holder_seen == holder
        why[0] = None
        assert await asyncio.wait_for(k.wait_active(), HANG_S) == 1
    assert k.held_back is None and roles == [(Role.ACTIVE, 1, "lease acquired")]
    events = [e["event"] for e in logs if e["event"].startswith("lease.")]
    assert events.count("lease.held_back") == 1 and events.count("lease.competing") == 1
    assert events.index("lease.held_back") < events.index("lease.competing") < events.index("lease.acquired")
    await k.stop(release=True)
    assert lease.released == [1]


# -- a second live node of this name, whichever node is active (PgLease.announce) -------------------

TWIN = "another live node is running as 'node-a' (host h1, process 4242, seen 0.3 s ago) — each node of a pair needs its own [node] name"


@pytest.mark.parametrize("active_is", ["the other node", "nobody yet"])
async def test_a_standby_started_under_a_live_nodes_name_is_refused_at_once(active_is):
    """newcomer7: a third node given the *standby's* name ran unnoticed until a failover. Its
    announce finds the name live: refused before it asks for the lease."""
    from msc.ha.pglease import LeaseMisconfigured

    roles: list = []
    lease = FakeLease(grant=None if active_is == "the other node" else 1)
    lease.twin = TWIN
    k = keeper(lease, roles)
    k.start()
    with pytest.raises(LeaseMisconfigured, match="another live node is running as 'node-a' \\(host h1"):
        await asyncio.wait_for(k.wait_active(), HANG_S)
    assert lease.calls == ["announce"] and roles == [] and not k.running
    await k.stop(release=True)
    assert lease.released == []


async def test_an_active_node_that_meets_a_twin_says_so_once_and_serves_on():
    from structlog.testing import capture_logs

    roles: list = []
    lease = FakeLease()
    k = keeper(lease, roles)
    with capture_logs() as logs:
        k.start()
        assert await asyncio.wait_for(k.wait_active(), HANG_S) == 1
        lease.twin = TWIN  # a twin took the name while this one could not say it was alive
        await asyncio.wait_for(_until(lambda: lease.calls.count("announce") >= 3), HANG_S)
        assert k.role is Role.ACTIVE and k.misconfigured is None
        lease.twin = None
        await asyncio.wait_for(_until(lambda: lease.calls.count("announce") >= 5), HANG_S)
    twins = [e for e in logs if e["event"] == "lease.duplicate_name"]
    assert len(twins) == 1 and twins[0]["log_level"] == "error" and twins[0]["why"] == TWIN
    await k.stop(release=True)
    assert lease.released == [1]


async def test_a_node_held_back_whose_lease_database_is_away_says_so():
    class Away(FakeLease):
        async def current(self):
            self.calls.append("current")
            raise LeaseUnavailable("lease database: ConnectionRefusedError: …")

    lease = Away()
    k = LeaseKeeper(lease, LeaseMachine(1.0), hold_back=lambda: "cannot open the key ring")  # type: ignore[arg-type]
    k.start()
    await asyncio.wait_for(_until(lambda: lease.calls.count("current") >= 2), HANG_S)
    assert k.last_error == "lease database: ConnectionRefusedError: …" and "acquire" not in lease.calls
    await k.stop(release=True)
    assert lease.released == []


async def test_an_announce_the_database_does_not_answer_is_an_outage_not_a_twin():
    roles: list = []
    lease = FakeLease()
    answers = [LeaseUnavailable("lease database: no answer within 1 s (TimeoutError)"), None]

    async def announce(live_s: float):
        lease.calls.append("announce")
        a = answers.pop(0) if answers else None
        if isinstance(a, BaseException):
            raise a
        return a

    lease.announce = announce  # type: ignore[method-assign]
    k = keeper(lease, roles)
    k.start()
    assert await asyncio.wait_for(k.wait_active(), HANG_S) == 1
    assert k.misconfigured is None
    await k.stop(release=True)


# -- one outage of the lease's database, one lease.unavailable -------------------------------------

REFUSED = LeaseUnavailable("lease database: ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)")
SHUTDOWN = LeaseUnavailable("lease database: AdminShutdownError: terminating connection due to administrator command")
STARTING = LeaseUnavailable("lease database: CannotConnectNowError: the database system is starting up")
HELD = "held"  # the database answered (another node holds the lease): the outage is over

#: (name, what successive lease calls meet, the outages they make, the reason changes within them)
OUTAGES = [
    ("one reason, many polls", [REFUSED] * 5, 1, 0),
    ("a stopped server: shut down, then refused (newcomer7: logged twice 0.5 s apart)", [SHUTDOWN] + [REFUSED] * 3, 1, 1),
    ("a restart: shut down, refused, starting up", [SHUTDOWN, REFUSED, REFUSED, STARTING], 1, 2),
    ("a frozen server: no answer in time, then refused", [TimeoutError(), REFUSED, TimeoutError()], 1, 2),
    ("two reasons taking turns", [REFUSED, STARTING] * 3, 1, 5),
    ("two outages with an answer between", [REFUSED, REFUSED, HELD, SHUTDOWN, REFUSED], 2, 1),
    ("three short outages", [REFUSED, HELD, REFUSED, HELD, REFUSED], 3, 0),
]


class ScriptedLease(FakeLease):
    """Each acquisition (or, held back, each read of the lease) meets the next item of ``script``:
    an exception to raise, or ``HELD`` (the database answers: another node holds it); then HELD."""

    def __init__(self, script: list) -> None:
        super().__init__(grant=None)
        self.script = list(script)

    def _next(self):
        item = self.script.pop(0) if self.script else HELD
        if isinstance(item, BaseException):
            raise item
        return Held("node-b", 4, 0.3)

    async def acquire(self, *, defer_within_s=None):
        self.calls.append("acquire")
        return self._next()

    async def current(self):
        self.calls.append("current")
        self._next()
        return None


@pytest.mark.parametrize("held_back", [False, True], ids=["competing", "held back"])
@pytest.mark.parametrize(("name", "script", "outages", "changes"), OUTAGES, ids=[o[0] for o in OUTAGES])
async def test_one_outage_of_the_lease_database_is_logged_once(name, script, outages, changes, held_back):
    from structlog.testing import capture_logs

    call = "current" if held_back else "acquire"
    lease = ScriptedLease(script)
    k = LeaseKeeper(lease, LeaseMachine(1.0, poll_s=0.05),  # type: ignore[arg-type]
                    hold_back=(lambda: "cannot open the key ring") if held_back else None)
    with capture_logs() as logs:
        k.start()
        # every scripted call made, and one more (the database answers: the last outage ends)
        await asyncio.wait_for(_until(lambda: lease.calls.count(call) > len(script)), HANG_S)
        await k.stop(release=False)
    events = [e["event"] for e in logs]
    assert events.count("lease.unavailable") == outages
    assert events.count("lease.reachable") == outages
    assert events.count("lease.still_unavailable") == changes
    first = next(e for e in logs if e["event"] == "lease.unavailable")
    assert first["log_level"] == "warning" and first["error"].startswith("lease database: ")
    assert all(e["log_level"] == "info" for e in logs if e["event"] == "lease.still_unavailable")
    assert k.last_error is None


async def test_an_active_nodes_failing_renewals_are_one_outage():
    """Renewals that fail for different reasons before the node steps down: one warning."""
    from structlog.testing import capture_logs

    roles: list = []
    lease = FakeLease(renewals=[SHUTDOWN, REFUSED, TimeoutError()] + [REFUSED] * 20)
    k = LeaseKeeper(lease, LeaseMachine(1.0), on_role=lambda r, e, why: roles.append((r, e, why)))  # type: ignore[arg-type]
    with capture_logs() as logs:
        k.start()
        await asyncio.wait_for(k.wait_active(), HANG_S)
        await asyncio.wait_for(k.wait_lost(), HANG_S)  # 2/3 of the ttl without a renewal: stepped down
        await k.stop(release=False)
    events = [e["event"] for e in logs]
    assert lease.calls.count("renew") >= 3
    assert events.count("lease.unavailable") == 1 and "lease.reachable" not in events
    assert events.count("lease.still_unavailable") >= 1


# -- a step-down while a lease call is pending: nothing left for asyncio to complain about -------

class LateFailingLease(FakeLease):
    """Granted, then every name announcement after the first waits on the database for ever — and,
    cancelled, ends with a LeaseUnavailable instead (as PgLease's call does when the cancellation
    meets a connect that failed in the same turn of the loop, or a broken connection's rollback:
    newcomer9 F4, ``Task exception was never retrieved … PgLease.announce() …
    exception=LeaseUnavailable('lease database: … Connection refused')``)."""

    def __init__(self) -> None:
        super().__init__(renewals=[LeaseUnavailable("lease database: ConnectionRefusedError: refused")] * 50)
        self.announced = 0

    async def announce(self, live_s: float) -> str | None:
        self.calls.append("announce")
        self.announced += 1
        if self.announced == 1:
            return None
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise LeaseUnavailable("lease database: ConnectionRefusedError: [Errno 111] Connection refused") from None
        return None


async def test_a_step_down_during_a_pending_lease_call_leaves_no_unretrieved_task_and_never_takes_the_lease_again():
    import gc

    complaints: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: complaints.append(ctx))
    roles: list = []
    lease = LateFailingLease()
    k = keeper(lease, roles)
    k.start()
    assert await asyncio.wait_for(k.wait_active(), HANG_S) == 1
    await asyncio.wait_for(_until(lambda: lease.announced >= 2), HANG_S)  # its second announcement hangs
    why = await asyncio.wait_for(k.wait_lost(), HANG_S)  # the belief's end (its timer) cancels it
    assert "not renewed in time" in why
    for _ in range(20):  # the loop's turns in which a keeper that went on would ask again
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    assert lease.calls.count("acquire") == 1, lease.calls  # one tenure per keeper
    assert [r[0] for r in roles] == [Role.ACTIVE, Role.STANDBY]
    await k.stop(release=True)
    assert lease.released == []
    assert complaints == [], [c.get("message") for c in complaints]


# -- newcomer trial F1: every clean exit takes back the node's "alive" (msc status stops counting it) --

async def test_a_clean_stop_takes_back_the_alive_mark_active_or_standby():
    for lease in (FakeLease(), FakeLease(grant=None)):
        k = keeper(lease, [])
        k.start()
        await asyncio.wait_for(_until(lambda lease=lease: "acquire" in lease.calls), HANG_S)
        await k.stop(release=True)
        assert lease.calls[-1] == "depart" and lease.closed


async def test_a_step_down_takes_back_the_alive_mark_only_while_the_database_answers():
    lease = FakeLease()
    k = keeper(lease, [])
    k.start()
    await asyncio.wait_for(k.wait_active(), HANG_S)
    await k.stop(release=False)  # a step-down (exit 75) that can still reach the database
    assert lease.calls.count("depart") == 1 and lease.released == []
    lease = FakeLease(renewals=[LeaseUnavailable("lease database: down")] * 50)
    k = keeper(lease, [])
    k.start()
    await asyncio.wait_for(k.wait_lost(), HANG_S)
    await k.stop(release=False)  # the database is away: the exit does not wait on it
    assert "depart" not in lease.calls


async def test_the_keeper_keeps_how_its_lease_was_granted():
    class FromAnother(FakeLease):
        async def acquire(self, *, defer_within_s=None):
            self.calls.append("acquire")
            return Granted(5, "failover", "node-b")

    lease = FromAnother()
    k = keeper(lease, [])
    k.start()
    await asyncio.wait_for(k.wait_active(), HANG_S)
    assert k.granted is not None and (k.granted.taken, k.granted.previous) == ("failover", "node-b")
    await k.stop(release=True)


# -- newcomer trial #2: a standby's /readyz names a holder only while it is known to hold the lease --


class Scripted(FakeLease):
    """Acquisitions answered from ``answers`` (a Granted, a Held, or an exception to raise)."""

    def __init__(self, answers) -> None:
        super().__init__()
        self.answers = list(answers)

    async def acquire(self, *, defer_within_s=None):
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def _polls(answers, steps):
    """Run the keeper's acquisitions by hand on a clock the test moves: ``steps`` are
    (seconds later, what /readyz is then told: lease_view()) after each answer."""
    now = [100.0]
    k = LeaseKeeper(Scripted(answers), LeaseMachine(3.0), clock=lambda: now[0], started=0.0)
    views = []
    for later in steps:
        assert await k._acquire(now[0])
        now[0] += later
        if k.machine.holds(now[0]):
            k._disarm()
        else:
            k.machine.poll(now[0])  # (what its loop does: the step-down, the next attempt due)
        views.append(k.lease_view())
    k._disarm()
    return views


async def test_a_holder_is_named_only_while_its_lease_is_valid_by_the_last_answer():
    down = LeaseUnavailable("lease database: no answer within 5 s while connecting (TimeoutError)")
    views = await _polls([Held("node-b", 4, 2.0), down, down], [0.1, 1.0, 1.5])
    assert views[0] == {"holder": "node-b"}
    assert views[1] == {"holder": "node-b"}  # 1.1 s of its 2 s: still valid, whatever the error since
    assert views[2] == {"holder": None, "lease": "unknown: " + str(down)}  # ran out by our count: not known


async def test_a_node_that_held_the_lease_and_stepped_down_names_nobody_it_saw_before():
    """b saw a before its own tenure; after its step-down with the database frozen it must not
    name a (newcomer trial: b said "holder": "msc-a" while nobody could hold the lease)."""
    down = LeaseUnavailable("lease database: no answer within 5 s while connecting (TimeoutError)")
    views = await _polls([Held("node-b", 4, 0.05), Granted(5), down], [0.1, 0.1, 5.0])
    assert views[0]["holder"] is None and views[0]["lease"].startswith("expired")
    assert views[1] == {}  # active: it holds it itself
    assert views[2] == {"holder": None, "lease": "unknown: " + str(down)}


async def test_a_restarted_node_never_names_itself_as_the_holder():
    """kill -9 and an immediate restart: the lease is still its previous process's, under its own
    name — the restarted process is a standby and says so, it does not call itself the holder."""
    views = await _polls([Held("node-a", 7, 2.0)], [0.1])
    assert views[0]["holder"] is None and "this node's own name holds it (epoch 7" in views[0]["lease"]


async def test_a_take_whose_node_has_not_said_it_knows_is_not_called_the_holder():
    views = await _polls([Held("node-b", 8, 2.0, heard=False)], [0.1])
    assert views[0]["holder"] is None and "taken by node-b (epoch 8), which has not said it knows" in views[0]["lease"]
