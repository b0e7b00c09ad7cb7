"""The node lease's decision logic, sans-IO: what a node does next, and whether it may believe
itself active — given only its own monotonic clock and the answers the database gave.

The database decides who holds the lease (its own clock, ``statement_timestamp()``, says when a
lease expired; :mod:`msc.ha.pglease`). A node cannot read that clock, so it believes it holds
the lease only for ``ttl × (1 − MAX_DRIFT)`` of *its own* time after it **sent** the request the
database granted or renewed: the database set ``expires_at = its now + ttl`` at some instant
after the request was sent, so the node's belief ends before the database's expiry as long as
the two clocks' rates differ by less than ``MAX_DRIFT``. Another node acquires only after that
expiry. Hence two nodes never believe themselves active at the same time, and each granted
epoch is granted once (the database increments it in the same statement that grants it).

Times are seconds of the caller's monotonic clock. The machine never reads a clock and never
does I/O: :class:`msc.ha.keeper.LeaseKeeper` feeds it, and the property tests drive it against a
model of the database with arbitrary interleavings (tests/property/test_ha_lease_props.py).

    m = LeaseMachine(ttl_s=5.0)
    act = m.poll(now)                  # Acquire() | Renew(epoch) | StepDown(epoch, why) | Wait(until)
    ... perform Acquire/Renew, then report what the database said, with the send time:
    m.acquired(sent, epoch) | m.refused(sent, remaining_s) | m.renewed(sent) | m.lost(sent) | m.failed(sent)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

#: The largest relative difference between the node's and the database's clock *rates* that the
#: belief tolerates (1 %; real clocks drift by parts per million). Offsets do not matter.
MAX_DRIFT = 0.01
#: The shortest pause between two acquisition attempts of a standby (seconds).
MIN_POLL_S = 0.05
#: The longest: a standby also notices a lease released by a clean stop within this.
MAX_POLL_S = 0.5


class Role(enum.StrEnum):
    """What a node is: ``standby`` (listeners closed, /readyz 503) or ``active``."""

    STANDBY = "standby"
    ACTIVE = "active"


@dataclass(frozen=True)
class Acquire:
    """Try to take the lease (one atomic statement: free or expired → ours, epoch + 1)."""


@dataclass(frozen=True)
class Renew:
    """Extend the lease, only if holder and epoch are still ours and it has not expired."""

    epoch: int


@dataclass(frozen=True)
class StepDown:
    """The node held ``epoch`` and may no longer believe so: stop serving now. Given once."""

    epoch: int
    reason: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do before ``until`` (monotonic seconds; ``math.inf``: until an answer)."""

    until: float


Action = Acquire | Renew | StepDown | Wait


def validate_ttl(ttl_s: float) -> str | None:
    """Why ``ttl_s`` is not a usable lease time, or None (CONFIG.md ``[node] lease_ttl_s``)."""
    if not math.isfinite(ttl_s) or ttl_s < 1 or ttl_s > 600:
        return "must be 1..600 (seconds)"
    return None


class LeaseMachine:
    """One node's view of the lease.

    ``ttl_s``: the lease time the node asks for at each grant and renewal. ``renew_every_s``
    (default ``ttl / 3``): how long after the last successful renewal was sent the next one is;
    a failed attempt (error, no answer) is retried after ``ttl / 10``, until the belief ends.
    ``poll_s`` (default ``min(MAX_POLL_S, ttl / 4)``): a standby's longest pause between
    acquisition attempts (shorter when the database said the lease expires sooner).

    One request at a time: after :meth:`poll` returned :class:`Acquire` or :class:`Renew`, the
    caller reports its outcome with the ``sent`` time :meth:`poll` was called with; an outcome
    for another ``sent`` (a request given up on, answered late) is ignored.
    """

    def __init__(self, ttl_s: float, *, renew_every_s: float | None = None, poll_s: float | None = None) -> None:
        why = validate_ttl(ttl_s)
        if why:
            raise ValueError(f"lease ttl {ttl_s!r}: {why}")
        self.ttl_s = ttl_s
        self.renew_every_s = renew_every_s if renew_every_s is not None else ttl_s / 3
        if not 0 < self.renew_every_s < ttl_s * (1 - MAX_DRIFT):
            raise ValueError(f"renew_every_s {self.renew_every_s!r} must be > 0 and well below the ttl")
        self.retry_s = ttl_s / 10
        self.poll_s = poll_s if poll_s is not None else min(MAX_POLL_S, ttl_s / 4)
        #: The epoch this node holds (or held last), 0 before its first grant.
        self.epoch = 0
        self._active = False
        self._valid_until = -math.inf  # monotonic time until which the node may believe it holds
        self._next_at = -math.inf  # when the next request is due
        self._in_flight: float | None = None  # the ``sent`` time of the outstanding request
        self._step_down: str | None = None  # a step-down not yet given out by poll()

    # -- what the node believes ---------------------------------------------------------------

    def holds(self, now: float) -> bool:
        """May the node believe, at ``now``, that it holds the lease (and serve, and commit)?"""
        return self._active and now < self._valid_until

    def role(self, now: float) -> Role:
        return Role.ACTIVE if self.holds(now) else Role.STANDBY

    @property
    def valid_until(self) -> float:
        """The end of the belief (monotonic seconds); ``-inf`` when the node is not active."""
        return self._valid_until if self._active else -math.inf

    # -- what to do next ------------------------------------------------------------------------

    def poll(self, now: float) -> Action:
        """The next action at ``now``. A :class:`StepDown` is given once, as soon as it is due."""
        step_down = self.expire(now)
        if step_down is not None:
            return step_down
        if self._in_flight is not None:
            # Waiting for an answer; an active node gives up at the end of its belief.
            return Wait(self._valid_until if self._active else math.inf)
        if now < self._next_at:
            return Wait(min(self._next_at, self._valid_until) if self._active else self._next_at)
        self._in_flight = now
        return Renew(self.epoch) if self._active else Acquire()

    def expire(self, now: float) -> StepDown | None:
        """The step-down due at ``now`` — the belief ended (``now`` at or past :attr:`valid_until`),
        or a refusal or a fenced commit was reported — or None. Given once, here or by
        :meth:`poll`, whichever asks first: the caller's deadline timer asks at
        :attr:`valid_until` without waiting for any database call to return."""
        if self._active and now >= self._valid_until:
            self._lose("the lease was not renewed in time")
        if self._step_down is None:
            return None
        why, self._step_down = self._step_down, None
        return StepDown(self.epoch, why)

    def abandon(self, sent: float) -> None:
        """The caller gave up waiting for the request sent at ``sent`` (its outcome is unknown)."""
        self.failed(sent)

    # -- what the database said ------------------------------------------------------------------

    def acquired(self, sent: float, epoch: int) -> None:
        """The database granted the lease with ``epoch`` to a request sent at ``sent``."""
        if not self._answer(sent):
            return
        if epoch <= self.epoch:
            raise ValueError(f"granted epoch {epoch} is not above the epoch this node held ({self.epoch})")
        self.epoch = epoch
        self._active = True
        self._valid_until = sent + self.ttl_s * (1 - MAX_DRIFT)
        self._next_at = sent + self.renew_every_s

    def refused(self, sent: float, remaining_s: float | None = None) -> None:
        """Another node holds the lease; by the database's clock it expires in ``remaining_s``."""
        if not self._answer(sent):
            return
        wait = self.poll_s if remaining_s is None else min(self.poll_s, max(remaining_s, 0.0))
        self._next_at = sent + max(MIN_POLL_S, wait)

    def held_back(self, sent: float) -> None:
        """The node did not send the :class:`Acquire` of ``sent``: it may not take the lease now
        (its master key file cannot open the key ring — :class:`msc.ha.keeper.LeaseKeeper`'s
        ``hold_back``). It asks again after ``poll_s``."""
        if not self._answer(sent) or self._active:
            return
        self._next_at = sent + self.poll_s

    def renewed(self, sent: float) -> None:
        """The database extended this node's lease by ``ttl`` from a request sent at ``sent``."""
        if not self._answer(sent) or not self._active:
            return
        self._valid_until = max(self._valid_until, sent + self.ttl_s * (1 - MAX_DRIFT))
        self._next_at = sent + self.renew_every_s

    def lost(self, sent: float) -> None:
        """The database refused the renewal: holder, epoch or expiry no longer ours."""
        if not self._answer(sent):
            return
        if self._active:
            self._lose("the database refused the renewal (another node took over, or the lease expired)")

    def failed(self, sent: float) -> None:
        """No answer, or an error: the outcome is unknown. Retry soon; the belief is not extended."""
        if not self._answer(sent):
            return
        self._next_at = sent + (self.retry_s if self._active else self.poll_s)

    def fenced(self, reason: str = "a commit was fenced: another node holds the lease") -> None:
        """A commit's fence found the epoch stale: step down now, whatever the local belief."""
        if self._active:
            self._lose(reason)

    def released(self) -> None:
        """This node gave the lease up (clean stop): it is no longer active."""
        self._active = False
        self._valid_until = -math.inf
        self._in_flight = None
        self._next_at = -math.inf

    # -- internals ----------------------------------------------------------------------------

    def _answer(self, sent: float) -> bool:
        if self._in_flight is None or sent != self._in_flight:
            return False  # an answer to a request this machine no longer waits for
        self._in_flight = None
        return True

    def _lose(self, why: str) -> None:
        self._active = False
        self._valid_until = -math.inf
        self._in_flight = None  # an answer still on its way is ignored
        self._next_at = -math.inf
        self._step_down = why
