"""A node restarted by its supervisor while its own lease runs out leaves the lease to the node
that was already waiting (newcomer9 F5: under ``Restart=always`` the ``kill -9``-ed node was back
as a standby before its lease expired, raced the waiting one and won it back).

Two real :class:`LeaseKeeper` loops on an event loop with a **virtual clock** (tests/unit/
test_lease_deadline.py: time moves only when every task waits, so the times below are exact, not
measured) share a model of the lease's database: the lease row (holder, epoch, expiry by the
database's clock) and ``msc_node_seen`` (each node's last announce) — what PgLease's ACQUIRE
statement decides on, the deferral included (the SQL itself: tests/integration/test_ha_lease_pg.py).

The phases are chosen so that without the deferral the restarted node's request reaches the
database first: its own poll lands exactly at the expiry, the waiting node's 1/32 s after it.
Every time is a binary fraction: the sums are exact.
"""

from __future__ import annotations

import asyncio
import math

from msc.ha.keeper import LeaseKeeper
from msc.ha.lease import LeaseMachine, Role
from msc.ha.pglease import Granted, Held
from tests.unit.test_lease_deadline import VirtualLoop, run

TTL = 4.0  # poll_s = min(0.5, ttl / 4) = 0.5
POLL = 0.5
T0 = 1000.0  # the virtual loop's start
EXPIRY = T0 + 2.03125  # the killed node's lease runs out (the waiting node last polls 1/32 s before)
RESTARTED_AT = T0 + 0.125  # the killed node is back (its poll then lands exactly at the expiry)


class LeaseDb:
    """The lease row and msc_node_seen, by the database's clock (the virtual loop's)."""

    def __init__(self, loop: VirtualLoop, *, holder: str | None = "node-a", epoch: int = 7,
                 expires_at: float = EXPIRY) -> None:
        self.loop = loop
        self.holder, self.epoch, self.expires_at = holder, epoch, expires_at
        self.seen: dict[str, float] = {}
        self.grants: list[tuple[float, str, int]] = []  # (when, holder, epoch)
        self.asked: list[tuple[float, str, float | None]] = []  # (when, node, defer_within_s)

    def acquire(self, node: str, defer_within_s: float | None) -> Granted | Held:
        now = self.loop.time()
        self.asked.append((now, node, defer_within_s))
        if self.holder is None or self.expires_at <= now:
            waiting = [n for n, at in self.seen.items()
                       if n not in (node, self.holder) and defer_within_s is not None and now - at < defer_within_s]
            if not (waiting and self.holder == node):  # the ACQUIRE statement's deferral clause
                self.holder, self.epoch, self.expires_at = node, self.epoch + 1, now + TTL
                self.grants.append((now, node, self.epoch))
                return Granted(self.epoch)
        return Held(self.holder, self.epoch, self.expires_at - now)

    def renew(self, node: str, epoch: int) -> bool:
        now = self.loop.time()
        if self.holder == node and self.epoch == epoch and self.expires_at > now:
            self.expires_at = now + TTL
            return True
        return False


class ModelLease:
    """PgLease's calls over :class:`LeaseDb`, for the node ``holder``."""

    def __init__(self, db: LeaseDb, holder: str) -> None:
        self.db = db
        self.holder = holder
        self.timeout_s = 1.0

    async def acquire(self, *, defer_within_s: float | None = None) -> Granted | Held:
        return self.db.acquire(self.holder, defer_within_s)

    async def renew(self, epoch: int) -> bool:
        return self.db.renew(self.holder, epoch)

    async def release(self, epoch: int) -> bool:
        return False

    async def confirm(self, epoch: int) -> bool:
        return True

    async def depart(self) -> bool:
        return True

    async def current(self) -> None:
        return None

    async def announce(self, live_s: float) -> None:
        self.db.seen[self.holder] = self.db.loop.time()

    async def close(self) -> None:
        pass


def keeper(db: LeaseDb, name: str, *, hold_back: str | None = None) -> LeaseKeeper:
    return LeaseKeeper(ModelLease(db, name), LeaseMachine(TTL), clock=db.loop.time,  # type: ignore[arg-type]
                       hold_back=(lambda: hold_back) if hold_back else None)


async def at(loop: VirtualLoop, when: float) -> None:
    await asyncio.sleep(when - loop.time())


async def until_granted(db: LeaseDb, n: int = 1) -> None:
    while len(db.grants) < n:
        await asyncio.sleep(POLL / 8)


async def stop(*keepers: LeaseKeeper) -> None:
    for k in keepers:
        await k.stop(release=False)


def test_a_restarted_node_leaves_the_expired_lease_to_the_node_already_waiting():
    async def scenario(loop: VirtualLoop) -> None:
        db = LeaseDb(loop)
        db.seen["node-a"] = T0 - 0.5  # the killed process's last announce
        b = keeper(db, "node-b")
        b.start()  # waiting since before the kill (its own start is long past: not what matters)
        await at(loop, RESTARTED_AT)
        a = keeper(db, "node-a")  # the supervisor started it again
        a.start()
        await until_granted(db)
        await asyncio.sleep(2 * POLL)  # the restarted node's polls after its deferral
        assert b.role is Role.ACTIVE and a.role is Role.STANDBY and a.holder_seen == "node-b"
        await stop(a, b)
        (when, holder, epoch), = db.grants
        assert (holder, epoch) == ("node-b", 8) and EXPIRY < when < EXPIRY + POLL  # b's first poll after it
        # a asked at the expiry and was refused (deferred): it did not take the lease
        assert (EXPIRY, "node-a", TTL * 2 / 3) in db.asked

    run(scenario)


def test_a_restarted_node_with_no_other_node_seen_takes_the_lease_at_its_expiry():
    """A lone node (the other down for long: its last announce is old), or a pair's first start:
    no deferral, no added wait."""
    async def scenario(loop: VirtualLoop) -> None:
        db = LeaseDb(loop)
        db.seen.update({"node-a": T0 - 0.5, "node-b": T0 - 3 * TTL})
        await at(loop, RESTARTED_AT)
        a = keeper(db, "node-a")
        a.start()
        await until_granted(db)
        await stop(a)
        assert db.grants == [(EXPIRY, "node-a", 8)]

    run(scenario)


def test_a_pairs_first_start_and_a_lease_of_the_other_node_are_taken_without_deferring():
    async def scenario(loop: VirtualLoop) -> None:
        db = LeaseDb(loop, holder=None, epoch=0, expires_at=-math.inf)  # never held
        b = keeper(db, "node-b")
        a = keeper(db, "node-a")
        b.start()
        a.start()
        await until_granted(db)
        assert db.grants == [(T0, "node-b", 1)]  # at once: the first request
        await stop(a, b)
        db2 = LeaseDb(loop, holder="node-b", expires_at=loop.time() + 1)  # the other's lease runs out
        db2.seen["node-b"] = loop.time()  # (seen, but it is the holder: not a node waiting)
        a2 = keeper(db2, "node-a")
        a2.start()
        await until_granted(db2)
        await stop(a2)
        assert db2.grants == [(db2.grants[0][0], "node-a", 8)] and db2.grants[0][0] == db2.asked[-1][0]

    run(scenario)


def test_a_node_running_longer_than_the_lease_time_does_not_defer():
    async def scenario(loop: VirtualLoop) -> None:
        db = LeaseDb(loop, expires_at=loop.time() + TTL + 2.03125)
        db.seen["node-a"] = loop.time() - 0.5
        a = keeper(db, "node-a")  # made (its process started) at T0 …
        await at(loop, T0 + TTL)
        b = keeper(db, "node-b")
        b.start()
        await at(loop, T0 + TTL + 0.125)
        a.start()  # … and it is asked only after lease_ttl_s
        await until_granted(db)
        await stop(a, b)
        assert db.grants == [(T0 + TTL + 2.03125, "node-a", 8)]
        assert all(within is None for _t, node, within in db.asked if node == "node-a")

    run(scenario)


def test_the_deferral_is_bounded_by_one_poll_when_the_waiting_node_never_takes_it():
    """The waiting node is seen (it announces) but does not take the lease (held back: its master
    key file cannot open the key ring): the restarted node takes it one poll interval later."""
    async def scenario(loop: VirtualLoop) -> None:
        db = LeaseDb(loop)
        db.seen["node-a"] = T0 - 0.5
        b = keeper(db, "node-b", hold_back="cannot open the key ring")
        b.start()
        await at(loop, RESTARTED_AT)
        a = keeper(db, "node-a")
        a.start()
        await until_granted(db)
        assert a.role is Role.ACTIVE
        await stop(a, b)
        assert db.grants == [(EXPIRY + POLL, "node-a", 8)]

    run(scenario)
