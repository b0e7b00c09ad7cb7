"""An active node's belief in the lease ends no later than ``ttl × 0.99`` after the send of its
last *successful* renewal, whatever its lease database does (issue 16, newcomer8 #2 and #3: with
the database frozen or cut off, the node said "active" ~14 s past its last renewal — ~10 s after
the other node took over — because the step-down waited for database calls to return).

The real :class:`LeaseKeeper` and :class:`PgLease` run on an event loop with a **virtual clock**
(time moves only when every task waits: a 5-s timeout takes no real time, and the times below are
exact, not measured), over a fake database connection that answers as scripted. Each variant
"cuts" the database at some instant after the node became active; then the step-down
(``on_role(STANDBY)``, what closes the listeners and turns ``/readyz`` 503) must come at or
before ``last successful renewal's arrival + ttl × 0.99`` — and so before the database's own
expiry, ``arrival + ttl``, after which the other node may take over. The send precedes the
arrival, so the bound is the issue's, or looser by the wait for the lease's connection.
(Against a real PostgreSQL through a frozen TCP relay: tests/e2e/test_ha_nodes.py.)
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Awaitable, Callable

import pytest

from msc.ha import pglease
from msc.ha.keeper import LeaseKeeper
from msc.ha.lease import MAX_DRIFT, LeaseMachine, Role
from msc.ha.pglease import PgLease

TTL = 6.0
TIMEOUT_S = 5.0  # the lease's per-call bound, as msc.ha.site gives it: min(5, ttl)
BELIEF = TTL * (1 - MAX_DRIFT)


class VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: when nothing is ready, the loop's clock jumps to its next timer."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None):  # type: ignore[override]
        events = super().select(0)
        if events or self.loop is None or (timeout is not None and timeout <= 0):
            return events
        if timeout is None:
            raise RuntimeError("nothing scheduled and nothing ready: the scenario hangs for ever")
        self.loop.now += timeout
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def run(scenario: Callable[[VirtualLoop], Awaitable[object]]) -> object:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


async def forever() -> None:
    await asyncio.Event().wait()


class Database:
    """The lease's database as the node sees it through one connection: answers in time until
    ``cut_at``, then as ``after_cut`` says. Keeps the lease's expiry by *its* clock (arrival + ttl)
    and the arrival time of every statement."""

    def __init__(self, loop: VirtualLoop, after_cut: str) -> None:
        self.loop = loop
        self.after_cut = after_cut
        self.cut_at = math.inf
        self.expires_at = -math.inf
        self.last_ok_arrival = -math.inf
        self.arrivals: list[tuple[float, str]] = []
        self.epoch = 0

    @property
    def cut(self) -> bool:
        return self.loop.time() >= self.cut_at

    async def connect(self) -> Connection:
        if self.cut:
            if self.after_cut in ("no answer", "reset, then connects hang"):
                await asyncio.sleep(TIMEOUT_S)  # asyncpg.connect(timeout=…): no startup answer
                raise TimeoutError
            if self.after_cut == "refused":
                raise ConnectionRefusedError(111, "Connect call failed")
            if self.after_cut in ("nothing returns", "hangs in connect"):
                await forever()
        return Connection(self)

    async def statement(self, sql: str, args: tuple, timeout: float | None) -> list[dict]:
        arrival = self.loop.time()
        kind = {pglease.ACQUIRE: "acquire", pglease.RENEW: "renew", pglease.ANNOUNCE: "announce",
                pglease.CURRENT: "current"}.get(sql, "other")
        self.arrivals.append((arrival, kind))
        if self.cut:
            how = self.after_cut
            if how == "no answer":  # asyncpg's statement timeout fires (newcomer8: SIGSTOP, a relay cut)
                await asyncio.sleep(timeout if timeout is not None else math.inf)
                raise TimeoutError
            if how in ("nothing returns", "hangs in connect"):
                await forever()
            if how == "stuck behind another statement" and kind == "current":
                await forever()  # (renewals would be answered — if they got the connection)
            if how in ("reset, then connects hang", "refused"):
                raise ConnectionResetError(104, "Connection reset by peer")
            if how == "answered after 2 ttl":
                await asyncio.sleep(2 * TTL)
            elif how == "answered after ttl / 5":
                await asyncio.sleep(TTL / 5)
            elif how == "refuses the renewal" and kind == "renew":
                return []
        return self._execute(kind, arrival)

    def _execute(self, kind: str, arrival: float) -> list[dict]:
        now = self.loop.time()  # the database's clock (its statement_timestamp ~ arrival)
        if kind == "acquire":
            if self.expires_at <= arrival:
                before = {"prev_holder": "node-a" if self.epoch else None, "prev_ended": "expired"}
                self.epoch += 1
                self.expires_at = arrival + TTL
                self.last_ok_arrival = arrival
                return [{"won": self.epoch, "holder": "node-a", "epoch": self.epoch, "remaining": TTL, **before}]
            return [{"won": None, "holder": "node-a", "epoch": self.epoch, "remaining": self.expires_at - now,
                     "heard": True}]
        if kind == "renew":
            if self.expires_at > arrival:
                self.expires_at = arrival + TTL
                self.last_ok_arrival = arrival
                return [{"epoch": self.epoch}]
            return []
        if kind == "announce":
            return [{"instance": "this one"}]
        return []


class Connection:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True

    async def fetch(self, sql: str, *args: object, timeout: float | None = None) -> list[dict]:
        return await self.db.statement(sql, args, timeout)


def node(db: Database, on_role: Callable[[Role, int, str], None]) -> LeaseKeeper:
    lease = PgLease(db.connect, holder="node-a", ttl_s=TTL, timeout_s=TIMEOUT_S)  # type: ignore[arg-type]
    lease._schema_ready = True  # (the fake has no DDL to run)
    return LeaseKeeper(lease, LeaseMachine(TTL), clock=db.loop.time, on_role=on_role)


#: How the database behaves once cut, and what the node then hears (every one ends the belief).
CUTS = [
    "no answer",                    # frozen / blackholed: asyncpg's statement and connect timeouts fire
    "nothing returns",              # no call returns at all, not even by its driver's timeout
    "hangs in connect",             # the connection is gone and a new one never completes
    "reset, then connects hang",    # a reset at once, then every connect times out
    "refused",                      # fast errors, again and again (retried every ttl / 10)
    "answered after 2 ttl",         # renewals succeed — too late to count
    "stuck behind another statement",  # the lease's one connection busy with a call that never returns
    "refuses the renewal",          # another node took over: at once, not at the end of the belief
]


@pytest.mark.parametrize("how", CUTS)
@pytest.mark.parametrize("cut_after", [0.0, TTL / 3 - 0.01, TTL / 3 + 0.3, 2.2])
def test_the_belief_ends_by_ttl_less_1_percent_after_the_last_successful_renewals_send(how, cut_after):
    async def scenario(loop: VirtualLoop) -> None:
        db = Database(loop, how)
        roles: list[tuple[float, Role]] = []
        k = node(db, lambda role, _epoch, _why: roles.append((loop.time(), role)))
        k.start()
        await k.wait_active()
        await asyncio.sleep(TTL)  # some renewals in time first
        db.cut_at = loop.time() + cut_after
        if how == "stuck behind another statement":
            await asyncio.sleep(cut_after)
            blocker = asyncio.create_task(k.lease.current())  # holds the lease's lock, never answered
        reason = await k.wait_lost()
        stepped_down = loop.time()
        assert roles[-1] == (stepped_down, Role.STANDBY)
        assert [r for _t, r in roles] == [Role.ACTIVE, Role.STANDBY]
        deadline = db.last_ok_arrival + BELIEF
        assert stepped_down <= deadline, (f"active {stepped_down - deadline:.3f} s past the end of its belief "
                                          f"(database's expiry {db.expires_at - stepped_down:+.3f} s)")
        assert stepped_down < db.expires_at  # before the database would let another node in
        if how == "refuses the renewal":
            assert "refused the renewal" in reason and stepped_down < deadline
        else:
            assert "not renewed in time" in reason
        await _ended(k)
        assert k.role is Role.STANDBY
        sent_after = [(t, kind) for t, kind in db.arrivals if t > stepped_down]
        assert sent_after == [], "nothing is sent for the lease after the step-down (one tenure per keeper)"
        if how == "stuck behind another statement":
            blocker.cancel()
        await k.stop(release=False)

    run(scenario)


async def _ended(k: LeaseKeeper) -> bool:
    while k.running:
        await asyncio.sleep(0.01)
    return True


def test_renewals_answered_in_time_however_slowly_keep_it_active():
    """The control: answers that take ttl / 5 each (slow, in time) never end the belief."""
    async def scenario(loop: VirtualLoop) -> None:
        db = Database(loop, "answered after ttl / 5")
        roles: list[Role] = []
        k = node(db, lambda role, _e, _w: roles.append(role))
        k.start()
        await k.wait_active()
        db.cut_at = loop.time()
        await asyncio.sleep(20 * TTL)
        assert k.check() is Role.ACTIVE and roles == [Role.ACTIVE] and k.running
        assert db.expires_at > loop.time()
        await k.stop(release=True)

    run(scenario)


@pytest.mark.parametrize("busy_s", [BELIEF, 2 * TTL, 30.0])
def test_a_report_asked_for_after_a_busy_spell_past_the_end_says_standby(busy_s):
    """An event loop busy (a long synchronous step, a pause) past the end of the belief: the first
    report of the role after it — queued before the deadline timer could run — already says
    standby, and the node has stepped down by the keeper's own path (check, as /readyz asks)."""
    async def scenario(loop: VirtualLoop) -> None:
        db = Database(loop, "nothing returns")
        roles: list[tuple[float, Role]] = []
        k = node(db, lambda role, _e, _w: roles.append((loop.time(), role)))
        k.start()
        await k.wait_active()
        await asyncio.sleep(TTL / 2)
        reported: list[tuple[float, Role]] = []

        def busy() -> None:
            loop.now += busy_s  # nothing else runs meanwhile
            loop.call_soon(lambda: reported.append((loop.time(), k.check())))  # a /readyz queued first

        db.cut_at = loop.time()
        loop.call_soon(busy)
        await k.wait_lost()
        assert reported and reported[0][1] is Role.STANDBY
        assert roles[-1][1] is Role.STANDBY and roles[-1][0] <= reported[0][0]
        await k.stop(release=False)

    run(scenario)
