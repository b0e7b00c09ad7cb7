"""Two nodes' lease machines (msc.ha.lease) against a model of the database's lease row, under
arbitrary interleavings (hypothesis): requests executed late, out of order or after the node
gave up on them, answers lost, time jumping (a paused node), clock rates drifting within
MAX_DRIFT. Whatever happens:

- whenever a node believes it holds the lease, the database agrees (holder, epoch, not expired);
- so two nodes never both believe themselves active at the same instant;
- every epoch is granted once, in increasing order; a node's epochs only increase;
- a commit made while believing passes the fence, and commits' epochs never go back in time.

The model of the database is the SQL of msc.ha.pglease in a few lines; the integration tests
(tests/integration/test_ha_lease_pg.py) run the same statements against a real PostgreSQL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from msc.ha.lease import MAX_DRIFT, Acquire, LeaseMachine, Renew, StepDown

EXAMPLES = int(os.environ.get("MSC_PROP_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("MSC_PROP_RANDOM") is None,
                    database=None)
TTL = 3.0
NODES = ("A", "B")


@dataclass
class Row:
    holder: str
    epoch: int
    expires: float


@dataclass
class Db:
    """msc_lease's one row, with the database's clock (the test's real time ``t``)."""

    row: Row | None = None
    grants: list[tuple[int, str]] = field(default_factory=list)

    def acquire(self, node: str, t: float) -> tuple[str, float | int]:
        if self.row is None or self.row.expires <= t:
            epoch = (self.row.epoch if self.row else 0) + 1
            self.row = Row(node, epoch, t + TTL)
            self.grants.append((epoch, node))
            return "granted", epoch
        return "held", self.row.expires - t

    def _ours(self, node: str, epoch: int, t: float) -> bool:
        return self.row is not None and self.row.holder == node and self.row.epoch == epoch and self.row.expires > t

    def renew(self, node: str, epoch: int, t: float) -> bool:
        if not self._ours(node, epoch, t):
            return False
        assert self.row is not None
        self.row.expires = t + TTL
        return True

    def fence(self, node: str, epoch: int, t: float) -> bool:
        return self._ours(node, epoch, t)


@dataclass
class Request:
    kind: str  # "acquire" | "renew"
    sent: float  # the node's local time
    epoch: int
    result: object = None
    executed: bool = False


@dataclass
class Node:
    name: str
    machine: LeaseMachine
    rate: float
    offset: float
    requests: list[Request] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    step_downs: list[int] = field(default_factory=list)  # the epochs a StepDown was given for

    def stepped_down(self, act: StepDown, now: float) -> None:
        assert not self.machine.holds(now)
        assert act.epoch not in self.step_downs, f"a second StepDown for epoch {act.epoch}"
        self.step_downs.append(act.epoch)

    def local(self, t: float) -> float:
        return self.offset + self.rate * t


# Each step: time moves on (in steps of TTL/80, so that the narrow windows around an expiry are
# hit; now and then a fraction of one; or a long jump: a SIGSTOP, a GC pause), then each node
# does one thing. A "roundtrip" is a request answered at once (the common case); "poll",
# "execute", "deliver" and "drop" take a request apart: sent now, executed by the database later
# and in any order, answered later, or given up on by the node (and perhaps executed after that);
# "held_back": a due acquisition not sent (the node may not take the lease now); "expire": the
# keeper's deadline timer or a /readyz asks between the loop's turns (LeaseMachine.expire).
dt = st.one_of(st.integers(0, 8).map(lambda k: k * TTL / 80), st.floats(0, TTL / 80, allow_nan=False),
               st.integers(20, 120).map(lambda k: k * TTL / 40))
action = st.sampled_from(["idle", "roundtrip", "roundtrip", "roundtrip", "poll", "execute", "execute", "deliver",
                          "drop", "commit", "held_back", "expire"])
step = st.tuples(dt, action, action, st.integers(0, 3))
rate = st.floats(1 - MAX_DRIFT / 2, 1 + MAX_DRIFT / 2, allow_nan=False)


def execute(db: Db, node: str, r: Request, t: float) -> object:
    return db.acquire(node, t) if r.kind == "acquire" else db.renew(node, r.epoch, t)


def answer(m: LeaseMachine, r: Request) -> None:
    if r.kind == "acquire":
        what, value = r.result  # type: ignore[misc]
        if what == "granted":
            m.acquired(r.sent, int(value))
        else:
            m.refused(r.sent, float(value))
    elif r.result:
        m.renewed(r.sent)
    else:
        m.lost(r.sent)


@SETTINGS
@given(steps=st.lists(step, min_size=5, max_size=80), rates=st.tuples(rate, rate),
       offsets=st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)))
def test_two_nodes_never_both_believe_and_never_share_an_epoch(steps, rates, offsets):
    db = Db()
    nodes = [Node(n, LeaseMachine(TTL), rates[i], offsets[i]) for i, n in enumerate(NODES)]
    t = 0.0
    commits: list[tuple[float, int, str]] = []
    for delta, *acts, pick in steps:
        t += delta
        for n, op in zip(nodes, acts, strict=True):
            m, now = n.machine, n.local(t)
            if op in ("poll", "roundtrip"):
                act = m.poll(now)
                if isinstance(act, Acquire):
                    n.requests.append(Request("acquire", now, 0))
                elif isinstance(act, Renew):
                    n.requests.append(Request("renew", now, act.epoch))
                elif isinstance(act, StepDown):
                    n.stepped_down(act, now)
                if op == "roundtrip" and isinstance(act, Acquire | Renew):
                    r = n.requests.pop()
                    r.executed, r.result = True, execute(db, n.name, r, t)
                    answer(m, r)
            elif op == "held_back":
                # The node may not take the lease now (its master key file cannot open the key
                # ring): a due acquisition is not sent; a due renewal is, as by "poll".
                act = m.poll(now)
                if isinstance(act, Acquire):
                    m.held_back(now)
                elif isinstance(act, Renew):
                    n.requests.append(Request("renew", now, act.epoch))
            elif op == "expire":
                sd = m.expire(now)
                if sd is not None:
                    n.stepped_down(sd, now)
                else:
                    assert m.holds(now) or m.valid_until == float("-inf")
            elif op == "execute":
                waiting = [r for r in n.requests if not r.executed]
                if waiting:
                    r = waiting[pick % len(waiting)]  # any order: the network may reorder
                    r.executed, r.result = True, execute(db, n.name, r, t)
            elif op == "deliver":
                done = [r for r in n.requests if r.executed]
                if done:
                    n.requests.remove(done[0])
                    answer(m, done[0])
            elif op == "drop":
                # The node gives up on its outstanding request (a timeout); the request itself may
                # still reach the database later (it stays in the list, its answer is ignored).
                if n.requests:
                    m.abandon(n.requests[-1].sent)
            elif op == "commit":
                if m.holds(now):
                    assert db.fence(n.name, m.epoch, t), "a node that believes it holds the lease was fenced"
                    commits.append((t, m.epoch, n.name))
        # The invariants, at every instant of the real clock.
        believers = []
        for n in nodes:
            if n.machine.holds(n.local(t)):
                believers.append(n.name)
                assert db.row is not None and db.row.holder == n.name, (n.name, db.row)
                assert db.row.epoch == n.machine.epoch and db.row.expires > t, (n.name, n.machine.epoch, db.row, t)
                if not n.epochs or n.epochs[-1] != n.machine.epoch:
                    n.epochs.append(n.machine.epoch)
        assert len(believers) <= 1, believers
    epochs = [e for e, _ in db.grants]
    assert epochs == list(range(1, len(epochs) + 1))
    for n in nodes:
        assert n.epochs == sorted(set(n.epochs))
        assert set(n.epochs) <= {e for e, holder in db.grants if holder == n.name}
    assert [e for _, e, _ in commits] == sorted(e for _, e, _ in commits)
