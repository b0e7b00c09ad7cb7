"""A node of a pair between the lease's grant and serving (msc.server.main._run_node, newcomer7
#1): a node whose look at the key ring fails right after the grant gives the lease back at once
and stands by again in the same process — it competes once the look passes —; a node whose
start fails for any reason gives the lease back before it exits 2, so the other node need not
wait out lease_ttl_s. The switch and the lease are stand-ins (the lease keeper is the real one);
tests/e2e/test_ha_nodes.py runs the same with two real nodes on PostgreSQL."""

from __future__ import annotations

import asyncio
import collections

import pytest

from msc.ha.keeper import LeaseKeeper
from msc.ha.lease import LeaseMachine
from msc.server import main
from msc.server.node import EXIT_STEPPED_DOWN
from msc.server.switch import StartupError
from tests.unit.test_ha_keeper import FakeLease, _until
from tests.waiting import HANG_S


class Counter:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def labels(self, outcome: str) -> Counter:
        self._label = outcome
        return self

    def inc(self) -> None:
        self.counts[self._label] += 1


class Metrics:
    def __init__(self) -> None:
        self.node_lease_calls = Counter()

    def lease_call(self, outcome: str) -> None:  # (msc.ops.metrics.Metrics.lease_call)
        self.node_lease_calls.labels(outcome).inc()


class StandInSwitch:
    """What _run_node asks of the switch. ``looks``: what successive looks at the takeover find
    (a reason, or None: usable); ``start_error``: raised by start()."""

    node_name = "node-b"
    ops = None

    def __init__(self, looks: list[str | None], start_error: BaseException | None = None) -> None:
        self.looks = looks
        self.start_error = start_error
        self.key_ring_problem: str | None = None
        self.metrics = Metrics()
        self.events: list[object] = []
        self.lease_info = None

    async def start_standby(self) -> None:
        self.events.append("standby")

    def lease_hold_back(self) -> str | None:
        return self.key_ring_problem

    async def takeover_refused(self) -> str | None:
        self.key_ring_problem = self.looks.pop(0) if self.looks else None
        return self.key_ring_problem

    def became_active(self, epoch: int, taken: str = "free", previous: str | None = None) -> None:
        self.events.append(("active", epoch))

    def step_down(self, reason: str) -> None:
        self.events.append(("stepped down", reason))

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.events.append("serving")

    async def drain(self) -> None:
        self.events.append("drained")

    def abandon_storage(self, why: str) -> None:
        self.events.append("abandoned")


@pytest.fixture
def lease(monkeypatch) -> FakeLease:
    lease = FakeLease(holder="node-b")
    # A lease long enough that a loaded machine's stalls never end a belief the test did not mean to
    # end (a 1-s lease ran out under load 13 and took the step-down path mid-test).
    monkeypatch.setattr("msc.server.node.keeper_for", lambda settings, **kw: LeaseKeeper(lease, LeaseMachine(30.0), **kw))
    return lease


def run_node(switch: StandInSwitch, stop: asyncio.Event, tmp_path) -> asyncio.Task[int]:
    return asyncio.create_task(main._run_node(None, switch, stop, str(tmp_path / "ready"), asyncio.Event()))  # type: ignore[arg-type]


@pytest.mark.parametrize("refusals", [1, 3])
async def test_a_takeover_whose_look_at_the_key_ring_fails_gives_the_lease_back_at_once_and_stands_by(
        lease, tmp_path, refusals):
    why = "this machine's master key file cannot open the key ring: copy it"
    switch, stop = StandInSwitch([why] * refusals), asyncio.Event()
    node = run_node(switch, stop, tmp_path)
    # The grant is given back (released, not left to run out), and the node then holds back.
    await asyncio.wait_for(_until(lambda: lease.released == [1] and lease.calls.count("current") >= 2), HANG_S)
    assert switch.events == ["standby"] and (tmp_path / "ready").read_text() == "standby\n"
    assert switch.lease_info() == {"holder": None, "lease": "free: nobody holds it (it ran out or was released)",  # type: ignore[misc]
                                   "error": None, "held_back": why}
    for n in range(2, refusals + 1):  # the file is still wrong at the next grants: the same, each time
        switch.key_ring_problem = None
        await asyncio.wait_for(_until(lambda n=n: lease.released == list(range(1, n + 1))), HANG_S)
    switch.key_ring_problem = None  # the file copied: the next look passes, it competes and serves
    await asyncio.wait_for(_until(lambda: "serving" in switch.events), HANG_S)
    assert switch.events == ["standby", ("active", refusals + 1), "serving"]
    assert (tmp_path / "ready").read_text() == "ready\n" and not node.done()
    stop.set()
    assert await asyncio.wait_for(node, HANG_S) == 0
    assert lease.released == [*range(1, refusals + 1), refusals + 1]
    assert not (tmp_path / "ready").exists()  # stopped: it says "ready" no more (newcomer trial F5)


@pytest.mark.parametrize("error", [
    StartupError("the key ring … is wrapped by master key 7cbbf527, but … holds 7400d98d"),  # the race past the look
    StartupError("journal self-check: record 12 altered"),
    OSError("[Errno 98] address already in use"),
])
async def test_a_node_whose_start_fails_gives_the_lease_back_before_it_exits(lease, tmp_path, error):
    switch, stop = StandInSwitch([None], start_error=error), asyncio.Event()
    with pytest.raises(type(error)):
        await asyncio.wait_for(run_node(switch, stop, tmp_path), HANG_S)
    assert lease.released == [1] and lease.closed  # at once: the other node takes it at its next poll
    assert switch.events == ["standby", ("active", 1)]


async def test_a_node_whose_belief_ends_during_the_takeovers_look_never_calls_itself_active(lease, tmp_path,
                                                                                           monkeypatch):
    """The database stops answering right after the grant, while the takeover looks at the key
    ring (longer than the lease): the keeper's deadline steps the node down during the look, and
    the node then leaves by the step-down path (exit 75) — it never became active, opened nothing,
    and /readyz never said active (issue 16, newcomer8 #2: the belief ends whatever is awaited)."""
    exits: list[int] = []
    monkeypatch.setattr(main, "_exit_within", lambda _s, status: exits.append(status))

    async def renew_never_answered(epoch: int) -> bool:
        lease.calls.append("renew")
        await asyncio.Event().wait()
        return True

    lease.renew = renew_never_answered  # type: ignore[method-assign]
    # This test means the belief to end: a 1-s lease, not the fixture's 30 s.
    monkeypatch.setattr("msc.server.node.keeper_for", lambda settings, **kw: LeaseKeeper(lease, LeaseMachine(1.0), **kw))

    class SlowLook(StandInSwitch):
        async def takeover_refused(self) -> str | None:
            await _until(lambda: any(isinstance(e, tuple) and e[0] == "stepped down" for e in self.events))
            return None

    switch, stop = SlowLook([]), asyncio.Event()
    assert await asyncio.wait_for(run_node(switch, stop, tmp_path), HANG_S) == EXIT_STEPPED_DOWN
    assert exits == [EXIT_STEPPED_DOWN] and lease.released == []
    assert switch.events[0] == "standby" and "abandoned" in switch.events
    assert not any(isinstance(e, tuple) and e[0] == "active" for e in switch.events) and "serving" not in switch.events
    assert all("not renewed in time" in e[1] for e in switch.events if isinstance(e, tuple))


# -- the ready file says what is true when the node stops serving (newcomer trial F5: a node that --
# -- had exited 75 still said "ready") ---------------------------------------------------------

async def test_a_node_that_steps_down_removes_its_ready_file_before_its_teardown(tmp_path, monkeypatch):
    exits: list[int] = []
    monkeypatch.setattr(main, "_exit_within", lambda _s, status: exits.append(status))
    lease = FakeLease(holder="node-b", renewals=[False])  # its first renewal is refused: another took it
    monkeypatch.setattr("msc.server.node.keeper_for", lambda settings, **kw: LeaseKeeper(lease, LeaseMachine(1.0), **kw))
    ready = tmp_path / "ready"

    class Watched(StandInSwitch):
        async def start(self) -> None:
            await super().start()
            self.events.append(("file at start", ready.read_text()))

        def abandon_storage(self, why: str) -> None:  # the teardown's first step after the step-down
            self.events.append(("file at teardown", ready.exists()))

    switch = Watched([None])
    assert await asyncio.wait_for(run_node(switch, asyncio.Event(), tmp_path), HANG_S) == EXIT_STEPPED_DOWN
    assert exits == [EXIT_STEPPED_DOWN] and "serving" in switch.events
    assert ("file at teardown", False) in switch.events and not ready.exists()


async def test_a_standby_that_stops_removes_its_ready_file(tmp_path, monkeypatch):
    lease = FakeLease(holder="node-b", grant=None)  # another node holds it: this one stands by
    monkeypatch.setattr("msc.server.node.keeper_for", lambda settings, **kw: LeaseKeeper(lease, LeaseMachine(30.0), **kw))
    switch, stop = StandInSwitch([]), asyncio.Event()
    node = run_node(switch, stop, tmp_path)
    await asyncio.wait_for(_until(lambda: "acquire" in lease.calls), HANG_S)
    assert (tmp_path / "ready").read_text() == "standby\n"
    stop.set()
    assert await asyncio.wait_for(node, HANG_S) == 0
    assert not (tmp_path / "ready").exists()


@pytest.mark.parametrize("wrote", [True, False])
def test_serve_removes_the_ready_file_it_wrote_whatever_ends_it(tmp_path, monkeypatch, wrote):
    """A start refused after ``standby`` was written (exit 2), or any exception: the file goes. A
    file this process never wrote — the running node's, when a second ``msc serve`` is refused
    at its start — is left as it is."""
    ready = tmp_path / "ready"
    ready.write_text("ready\n")  # the running node's

    async def refused(settings, *, ready_file=None) -> int:
        if wrote:
            main._write_ready(ready_file, "standby")
        raise StartupError("journal self-check: record 12 altered")

    monkeypatch.setattr(main, "run", refused)
    with pytest.raises(StartupError):
        main.serve(None, ready_file=str(ready))  # type: ignore[arg-type]
    assert ready.exists() is not wrote
    if not wrote:
        assert ready.read_text() == "ready\n"


async def test_a_standby_whose_name_is_another_live_nodes_never_writes_its_ready_file(tmp_path, monkeypatch):
    """Its first "alive" finds the name taken: it exits 2 without having said ``standby`` (before,
    the file said it for the moment between the metrics endpoint and the database's answer)."""
    ready, seen = tmp_path / "ready", []

    class Taken(FakeLease):
        async def announce(self, live_s: float) -> str | None:
            seen.append(ready.exists())  # what the file said while the database was asked
            return await super().announce(live_s)

    lease = Taken(holder="node-b", grant=None)
    lease.twin = "another live node is running as 'node-b' (host h, process 7, seen 0.2 s ago)"
    monkeypatch.setattr("msc.server.node.keeper_for", lambda settings, **kw: LeaseKeeper(lease, LeaseMachine(30.0), **kw))
    with pytest.raises(StartupError, match="another live node is running as 'node-b'"):
        await asyncio.wait_for(run_node(StandInSwitch([]), asyncio.Event(), tmp_path), HANG_S)
    assert seen == [False] and "acquire" not in lease.calls and not ready.exists()
