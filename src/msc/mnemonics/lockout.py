"""Logon failure counting and account lockout (CJIS AC-7), as a pure rule.

"5 consecutive invalid logons within 15 minutes lock the account until an administrator releases
it" (docs/SECURITY.md). The rule is applied to one account's :class:`Attempts` inside one atomic
transaction of the state store (:meth:`msc.mnemonics.state.StateStore.update_attempts`), so it
holds whatever the concurrency and whichever process — the switch or the ``msc`` command — checks
the password.

An attempt is counted **before** its password is checked (:meth:`LockoutRule.reserve`): the
attempt is written as a failure, and only a check that succeeds clears it. So at most
``max_failures`` passwords are ever checked per window, even when hundreds of logons for one user
arrive at once; the others are refused without a check. After the (slow) check the rule is
applied again (:meth:`LockoutRule.succeeded`): a right password is refused if the account locked
meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MAX_FAILURES = 5
WINDOW_S = 15 * 60


@dataclass(frozen=True)
class Attempts:
    """One account's logon state: times of failed (and in-flight) attempts, and the lock."""

    failures: tuple[float, ...] = ()
    locked_at: float | None = None

    @property
    def locked(self) -> bool:
        return self.locked_at is not None


@dataclass(frozen=True)
class LockoutRule:
    max_failures: int = MAX_FAILURES
    window_s: float = WINDOW_S

    def _recent(self, a: Attempts, now: float) -> tuple[float, ...]:
        return tuple(t for t in a.failures if now - t <= self.window_s)

    def reserve(self, a: Attempts, now: float) -> tuple[Attempts, bool]:
        """Count an attempt before its check. Returns the new state and whether the password may
        be checked at all (False: locked, or ``max_failures`` attempts already counted)."""
        if a.locked:
            return a, False
        recent = self._recent(a, now)
        if len(recent) >= self.max_failures:
            return replace(a, failures=recent), False
        return replace(a, failures=(*recent, now)), True

    def failed(self, a: Attempts, now: float) -> tuple[Attempts, bool]:
        """The check failed (its attempt is already counted). Returns the new state and whether
        this failure locked the account."""
        if a.locked:
            return a, False
        recent = self._recent(a, now)
        if len(recent) >= self.max_failures:
            return Attempts((), now), True
        return replace(a, failures=recent), False

    def succeeded(self, a: Attempts, now: float) -> tuple[Attempts, bool]:
        """The check passed. Returns the new state and whether the logon may go ahead (not if
        the account locked while the password was being checked)."""
        if a.locked:
            return a, False
        return Attempts(), True

    @staticmethod
    def unlock(_a: Attempts, _now: float) -> tuple[Attempts, bool]:
        return Attempts(), True
