"""Contract of the run-time state, the delivery queues and OSNs, and the availability ledger:
any storage backend must pass this (msc.mnemonics.state.RuntimeState,
msc.routing.outbox.OutboxBackend, msc.ops.availability.LedgerBackend)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from msc.mnemonics.lockout import Attempts, LockoutRule
from msc.mnemonics.state import OpenSession, RuntimeState
from msc.ops.availability import LedgerBackend
from msc.routing.outbox import OutboxBackend, Stored


@pytest.fixture
def state(backend):
    s = backend.runtime_state()
    assert isinstance(s, RuntimeState)
    yield s
    s.close()


# -- run-time state of users ----------------------------------------------------------------

def test_a_user_never_seen_has_no_state(state):
    assert state.user("TS0001") is None
    assert state.users() == {}
    assert state.locked_users() == set()


def test_attempts_are_stored_as_the_step_returns_them(state):
    rule = LockoutRule(max_failures=3, window_s=900)
    for i in range(3):
        assert state.update_attempts("TS0001", lambda a, i=i: rule.reserve(a, 1000.0 + i)) is True
    assert state.user("TS0001").failures == [1000.0, 1001.0, 1002.0]
    assert state.update_attempts("TS0001", lambda a: rule.reserve(a, 1003.0)) is False  # 3 counted
    assert state.update_attempts("TS0001", lambda a: rule.failed(a, 1003.0)) is True  # locks
    assert state.locked_users() == {"TS0001"}
    assert state.user("TS0001").locked_at == 1003.0
    assert state.unlock("TS0001") is True
    assert state.unlock("TS0001") is False  # was not locked any more
    assert state.user("TS0001").failures == [] and state.user("TS0001").locked_at is None


# logon_at is recorded only when the step's answer is True (a logon that succeeded).
@pytest.mark.parametrize("answer, recorded", [(True, 50.0), (False, None), ("yes", None), (1, None)])
def test_a_logon_is_recorded_only_when_the_step_allows_it(state, answer, recorded):
    state.update_attempts("TS0002", lambda a: (Attempts(), answer), logon_at=50.0)
    u = state.user("TS0002")
    assert (u.last_logon, u.last_use) == (recorded, recorded)


def test_a_failing_step_changes_nothing(state):
    state.update_attempts("TS0001", lambda a: (replace(a, failures=(1.0,)), True))

    def boom(a):
        raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError):
        state.update_attempts("TS0001", boom)
    assert state.user("TS0001").failures == [1.0]
    state.update_attempts("TS0001", lambda a: (replace(a, failures=(*a.failures, 2.0)), True))  # still usable
    assert state.user("TS0001").failures == [1.0, 2.0]


def test_attempts_are_atomic_across_handles_and_threads(backend):
    """Two handles (two processes in production: the switch and an msc command), four threads,
    every step a read-modify-write: no update is lost."""
    handles = [backend.runtime_state(), backend.runtime_state()]
    per_thread = 25

    def add(a: Attempts) -> tuple[Attempts, None]:
        return replace(a, failures=(*a.failures, float(len(a.failures)))), None

    def work(h):
        for _ in range(per_thread):
            h.update_attempts("TS0001", add)

    threads = [threading.Thread(target=work, args=(handles[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert handles[0].user("TS0001").failures == [float(i) for i in range(4 * per_thread)]
    for h in handles:
        h.close()


# Each TOTP step once, and never one older than the newest used (IA-2(1)).
@pytest.mark.parametrize("claims, answers", [
    ([100, 100], [True, False]),
    ([100, 99], [True, False]),
    ([100, 101, 101, 100], [True, True, False, False]),
    ([0, 1], [True, True]),
    ([2**40, 2**40 + 1, 5], [True, True, False]),
])
def test_a_totp_step_is_claimed_once(state, claims, answers):
    assert [state.claim_otp_step("TS0001", s) for s in claims] == answers
    assert state.user("TS0001").last_otp_step == max(claims)
    assert state.claim_otp_step("TS0002", min(claims)) is True  # per user


def test_one_totp_step_is_claimed_once_across_handles(backend):
    handles = [backend.runtime_state() for _ in range(4)]
    won: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(len(handles))

    def claim(h):
        start.wait(10)
        got = h.claim_otp_step("TS0001", 123)
        with lock:
            won.append(got)

    threads = [threading.Thread(target=claim, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(won) == [False, False, False, True]
    for h in handles:
        h.close()


# A last use moves forward only, whatever order the reports arrive in.
@pytest.mark.parametrize("reports, last", [([10.0], 10.0), ([10.0, 5.0], 10.0), ([5.0, 10.0, 7.5], 10.0),
                                           ([0.0], 0.0)])
def test_last_use_never_moves_back(state, reports, last):
    for at in reports:
        state.used({"TS0001": at, "TS0002": at + 1})
        state.station_used({"T1": at})
    assert state.user("TS0001").last_use == last
    assert state.user("TS0002").last_use == last + 1
    assert state.station_last_use() == {"T1": last}


def test_stations_disabled_at_run_time(backend, state):
    assert state.disabled_stations() == set()
    state.set_station("T1", True)
    state.set_station("T2", True)
    state.set_station("T2", False)
    state.set_station("T3", False)
    other = backend.runtime_state()  # another process sees it at once
    assert other.disabled_stations() == {"T1"}
    other.close()
    assert set(state.station_last_use()) == {"T1", "T2", "T3"}


# -- sessions open in the journal (msc.server.orphans) ----------------------------------------

def opened(seq: int, kind: str = "terminal", **kw) -> OpenSession:
    base = dict(peer="ICS1", mnemonic="ICS1", pool=None, user="TS0001", taf="7F000001", opened=1000.0 + seq)
    return OpenSession(seq, kind, **(base | kw))


# Rows of each kind of session, and what the store gives back: every field as stored.
OPEN_ROWS = [
    opened(7),
    opened(8, "pool", peer="ECMDT", mnemonic="ECM2", pool="ECMDT", user="EC0002"),
    opened(9, "host", peer="CAD1", mnemonic="CAD1", user=None, taf="0A000001"),
    opened(10, "printer", peer="ECP1", mnemonic="ECP1", user=None, taf=None),
]


def test_open_sessions_are_kept_until_their_end_then_forgotten(backend, state):
    assert state.open_sessions() == []
    state.sessions_changed(list(reversed(OPEN_ROWS)))
    state.sessions_changed([opened(7, user="SOMEONE ELSE")])  # the same opening record again: kept as first stored
    other = backend.runtime_state()  # the other node of a pair sees them (another process)
    assert other.open_sessions() == OPEN_ROWS  # by sequence number
    state.sessions_changed(ended=[8, 10, 99])  # an unknown one is ignored
    state.sessions_changed()
    assert [r.seq for r in other.open_sessions()] == [7, 9]
    # One step: opened and ended at once (a short session whose both changes were batched).
    state.sessions_changed([opened(11), opened(12)], [11, 7])
    assert [r.seq for r in other.open_sessions()] == [9, 12]
    other.close()


def test_sessions_marked_closing_carry_the_journal_position(state):
    state.sessions_changed(OPEN_ROWS)
    state.sessions_closing([7, 9], 1234)
    state.sessions_closing([], 99)
    assert {r.seq: r.closing_after for r in state.open_sessions()} == {7: 1234, 8: None, 9: 1234, 10: None}
    state.sessions_closing([9], 2000)  # a later start marks it again
    assert {r.seq: r.closing_after for r in state.open_sessions()}[9] == 2000


# -- delivery queues and OSNs ------------------------------------------------------------------

@pytest.fixture
def outbox(backend):
    o = backend.outbox()
    assert isinstance(o, OutboxBackend)
    yield o
    o.close()


def out(endpoint: str, osn: int, seq: int) -> Stored:
    return Stored(endpoint, osn, seq, endpoint, f"X{seq}", 1000.0 + seq)


def test_an_empty_outbox(outbox):
    assert outbox.load() == ([], {}, 0)


def test_outputs_added_and_removed_and_the_journal_position(backend, outbox):
    outbox.apply([out("T2", 2, 11), out("T1", 1, 10), out("T2", 1, 9)], [], {"T1": 1, "T2": 2}, 11)
    outbox.apply([out("T1", 2, 12)], [("T2", 1), ("T9", 4)], {"T1": 2}, 12)  # removing what is not there is fine
    other = backend.outbox()  # survives the handle: another start reads the same
    rows, osns, applied = other.load()
    other.close()
    assert rows == [out("T1", 1, 10), out("T1", 2, 12), out("T2", 2, 11)]  # by endpoint, then OSN
    assert osns == {"T1": 2, "T2": 2}
    assert applied == 12


def test_adding_an_output_again_replaces_it(outbox):
    outbox.apply([out("T1", 1, 10)], [], {"T1": 1}, 10)
    outbox.apply([replace(out("T1", 1, 10), seq=15)], [], {}, 15)
    assert outbox.load()[0] == [replace(out("T1", 1, 10), seq=15)]


# An endpoint's last OSN never moves back: a late snapshot step cannot make an OSN repeat.
@pytest.mark.parametrize("steps, last", [([5], 5), ([5, 3], 5), ([3, 5], 5), ([1, 2, 1, 0], 2), ([2**31 + 7, 9], 2**31 + 7)])
def test_an_endpoints_osn_never_moves_back(outbox, steps, last):
    for i, osn in enumerate(steps):
        outbox.apply([], [], {"H1": osn}, i)
    assert outbox.load()[1] == {"H1": last}


# -- availability ledger -------------------------------------------------------------------------

def test_runs_are_recorded_start_heartbeat_stop(backend):
    a = backend.ledger()
    assert isinstance(a, LedgerBackend)
    first = a.start(100.0)
    assert a.run_id == first
    a.heartbeat(105.0)
    a.heartbeat(110.0)
    a.stop(111.0)
    a.close()
    b = backend.ledger()  # the next run (a crash: no stop)
    second = b.start(200.0)
    b.heartbeat(205.0)
    assert second != first
    runs = b.runs()
    b.close()
    assert [(r.id, r.started, r.heartbeat, r.stopped) for r in runs] == [(first, 100.0, 111.0, 111.0),
                                                                        (second, 200.0, 205.0, None)]
    assert [r.end for r in runs] == [111.0, 205.0]


@pytest.mark.parametrize("calls", [
    # (what the run calls after start(100), the run's (heartbeat, stopped) after)
    ([("stop", 110.0), ("stop", 121.0)], (110.0, 110.0)),  # a drain's mark, then the stop's end
    ([("stop", 110.0), ("heartbeat", 115.0)], (110.0, 110.0)),  # a beat during the drain
    ([("heartbeat", 105.0), ("stop", 110.0), ("heartbeat", 115.0), ("stop", 120.0)], (110.0, 110.0)),
    ([("heartbeat", 105.0), ("heartbeat", 110.0)], (110.0, None)),  # no mark: a crash
])
def test_the_first_stop_mark_stays(backend, calls):
    """The stop mark is stamped when the run stops accepting sessions (a drain's start; OPERATIONS.md
    "Availability and reports"): what the run calls after it changes nothing."""
    led = backend.ledger()
    led.start(100.0)
    for name, at in calls[0]:
        getattr(led, name)(at)
    (run,) = [r for r in led.runs() if r.id == led.run_id]
    led.close()
    assert (run.heartbeat, run.stopped) == calls[1]


def test_runs_come_back_by_start_time(backend):
    starts = [300.0, 100.0, 200.0]
    for s in starts:
        led = backend.ledger()
        led.start(s)
        led.close()
    led = backend.ledger()
    assert [r.started for r in led.runs()] == sorted(starts)
    led.close()
