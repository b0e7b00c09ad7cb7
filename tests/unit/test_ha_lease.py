"""The lease's decision logic (msc.ha.lease), sans-IO, on a fake clock: when a node acquires,
renews, retries and steps down, and how long it may believe itself active."""

from __future__ import annotations

import math

import pytest

from msc.ha.lease import MAX_DRIFT, MAX_POLL_S, MIN_POLL_S, Acquire, LeaseMachine, Renew, Role, StepDown, Wait, validate_ttl

TTL = 6.0
BELIEF = TTL * (1 - MAX_DRIFT)


def active(at: float = 100.0, epoch: int = 7) -> LeaseMachine:
    m = LeaseMachine(TTL)
    assert m.poll(at) == Acquire()
    m.acquired(at, epoch)
    return m


def test_a_new_node_is_standby_and_asks_for_the_lease_at_once():
    m = LeaseMachine(TTL)
    assert m.role(0.0) is Role.STANDBY and not m.holds(0.0)
    assert m.poll(0.0) == Acquire()
    assert m.poll(0.1) == Wait(math.inf)  # one request at a time


def test_a_grant_makes_the_node_active_for_less_than_the_ttl_from_when_it_was_sent():
    m = LeaseMachine(TTL)
    m.poll(100.0)
    m.acquired(100.0, 1)  # sent at 100; the answer arrives (the caller reports with the send time)
    assert m.epoch == 1
    assert m.holds(100.0) and m.holds(100.0 + BELIEF - 1e-9)
    assert not m.holds(100.0 + BELIEF)  # the database's expiry is at the earliest 100 + TTL
    assert m.valid_until == pytest.approx(100.0 + BELIEF)
    assert m.role(101.0) is Role.ACTIVE


def test_a_grant_answered_late_counts_from_the_send_time_not_the_answer():
    m = LeaseMachine(TTL)
    m.poll(100.0)
    m.acquired(100.0, 1)  # the answer took 5 s to arrive: only 100 + BELIEF - 105 left
    assert m.holds(105.0)
    assert not m.holds(100.0 + BELIEF)


def test_renewal_is_due_a_third_of_the_ttl_after_the_last_send():
    m = active(100.0)
    assert m.poll(100.5) == Wait(100.0 + TTL / 3)
    assert m.poll(100.0 + TTL / 3) == Renew(7)
    m.renewed(100.0 + TTL / 3)
    assert m.valid_until == pytest.approx(100.0 + TTL / 3 + BELIEF)
    assert m.poll(100.0 + TTL / 3 + 0.1) == Wait(100.0 + 2 * TTL / 3)


def test_a_failed_renewal_is_retried_soon_and_does_not_extend_the_belief():
    m = active(100.0)
    t = 100.0 + TTL / 3
    assert m.poll(t) == Renew(7)
    m.failed(t)
    assert m.valid_until == pytest.approx(100.0 + BELIEF)
    assert m.poll(t + 0.01) == Wait(t + TTL / 10)
    assert m.poll(t + TTL / 10) == Renew(7)


@pytest.mark.parametrize("outcome", ["failed", "silence"])
def test_no_renewal_until_the_belief_ends_means_step_down(outcome):
    m = active(100.0)
    t = 100.0 + TTL / 3
    while True:
        act = m.poll(t)
        if isinstance(act, Renew):
            if outcome == "failed":
                m.failed(t)
            t += 0.25  # (silence: the request stays unanswered)
        elif isinstance(act, Wait):
            t = min(act.until, t + 0.25)
        else:
            break
    assert act == StepDown(7, "the lease was not renewed in time")
    assert t >= 100.0 + BELIEF
    assert not m.holds(t)
    assert m.role(t) is Role.STANDBY
    assert m.poll(t) == Acquire()  # a StepDown is given once; then it competes again


def test_a_refused_renewal_steps_down_at_once():
    m = active(100.0)
    t = 100.0 + TTL / 3
    m.poll(t)
    m.lost(t)
    assert not m.holds(t)
    act = m.poll(t)
    assert isinstance(act, StepDown) and "refused" in act.reason


def test_a_fenced_commit_steps_down_at_once_even_with_time_left():
    m = active(100.0)
    m.fenced("epoch 8 is current")
    assert not m.holds(100.1)
    assert m.poll(100.1) == StepDown(7, "epoch 8 is current")


def test_an_answer_after_the_step_down_is_ignored():
    """The renewal went out, the belief ended while it was on its way, and then it succeeded at
    the database: the node has stepped down and stays down (it re-acquires with a new epoch)."""
    m = active(100.0)
    t = 100.0 + TTL / 3
    assert m.poll(t) == Renew(7)
    assert isinstance(m.poll(100.0 + BELIEF), StepDown)
    m.renewed(t)
    assert not m.holds(100.0 + BELIEF + 0.1)
    assert m.poll(100.0 + BELIEF + 0.1) == Acquire()


@pytest.mark.parametrize("answer", ["acquired", "renewed", "lost", "refused", "failed", "held_back"])
def test_answers_to_a_request_not_in_flight_are_ignored(answer):
    m = LeaseMachine(TTL)
    m.poll(10.0)  # Acquire in flight, sent at 10
    call = {"acquired": lambda: m.acquired(9.0, 3), "renewed": lambda: m.renewed(9.0), "lost": lambda: m.lost(9.0),
            "refused": lambda: m.refused(9.0, 1.0), "failed": lambda: m.failed(9.0),
            "held_back": lambda: m.held_back(9.0)}[answer]
    call()
    assert not m.holds(10.0) and m.epoch == 0
    assert m.poll(10.1) == Wait(math.inf)  # still waiting for the request sent at 10


@pytest.mark.parametrize("remaining, wait", [
    (None, MAX_POLL_S),   # unknown: the poll interval
    (30.0, MAX_POLL_S),   # long: poll anyway (a clean stop releases the lease early)
    (0.2, 0.2),           # soon: try when it expires
    (0.0, MIN_POLL_S),    # expired already (the answer raced a takeover): not a busy loop
    (-3.0, MIN_POLL_S),
])
def test_a_standby_tries_again_when_the_lease_expires_or_after_a_poll(remaining, wait):
    m = LeaseMachine(TTL)
    m.poll(50.0)
    m.refused(50.0, remaining)
    assert m.poll(50.0 + wait - 1e-6) == Wait(50.0 + wait)
    assert m.poll(50.0 + wait) == Acquire()


def test_a_standby_held_back_asks_again_after_a_poll_and_never_believes_it_holds():
    """The node did not send its Acquire (its master key file cannot open the key ring): it is
    asked again after the poll interval, as after a refusal, and stays standby meanwhile."""
    m = LeaseMachine(TTL)
    for n in range(3):
        at = 50.0 + n * MAX_POLL_S
        assert m.poll(at) == Acquire()
        m.held_back(at)
        assert m.role(at) is Role.STANDBY and m.epoch == 0
        assert m.poll(at + MAX_POLL_S - 1e-6) == Wait(at + MAX_POLL_S)
    at = 50.0 + 3 * MAX_POLL_S
    assert m.poll(at) == Acquire()
    m.acquired(at, 4)  # no longer held back: it competes and may win
    assert m.holds(at + 0.1)


def test_each_new_grant_must_carry_a_higher_epoch():
    m = active(100.0, epoch=7)
    m.fenced("x")
    m.poll(101.0)
    assert m.poll(101.0) == Acquire()
    with pytest.raises(ValueError, match="not above"):
        m.acquired(101.0, 7)


def test_a_release_ends_the_belief():
    m = active(100.0)
    m.released()
    assert not m.holds(100.1)
    assert m.poll(100.1) == Acquire()


@pytest.mark.parametrize("ttl, ok", [
    (1, True), (5, True), (10, True), (600, True),
    (0, False), (0.5, False), (-1, False), (601, False), (math.inf, False), (math.nan, False),
])
def test_ttl_bounds(ttl, ok):
    assert (validate_ttl(ttl) is None) is ok
    if not ok:
        with pytest.raises(ValueError):
            LeaseMachine(ttl)


@pytest.mark.parametrize("renew_every", [0, -1, TTL, TTL * 2])
def test_renewal_interval_must_leave_time_before_the_belief_ends(renew_every):
    with pytest.raises(ValueError):
        LeaseMachine(TTL, renew_every_s=renew_every)
