"""Logon failure counting and account lockout (CJIS AC-7).

"5 consecutive invalid logons within 15 minutes lock the account until an administrator releases
it" (SECURITY.md). :class:`LockoutTracker` is the pure rule; the switch persists its state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_FAILURES = 5
WINDOW_S = 15 * 60


@dataclass
class _Account:
    failures: deque[float] = field(default_factory=deque)
    locked_at: float | None = None


class LockoutTracker:
    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._accounts: dict[str, _Account] = {}

    def is_locked(self, user_id: str) -> bool:
        acct = self._accounts.get(user_id)
        return acct is not None and acct.locked_at is not None

    def failure(self, user_id: str, now: float) -> bool:
        """Count a failed logon; return True if this failure locked the account."""
        acct = self._accounts.setdefault(user_id, _Account())
        if acct.locked_at is not None:
            return False
        acct.failures.append(now)
        while acct.failures and now - acct.failures[0] > self.window_s:
            acct.failures.popleft()
        if len(acct.failures) >= self.max_failures:
            acct.locked_at = now
            acct.failures.clear()
            return True
        return False

    def success(self, user_id: str) -> None:
        """A good logon resets the consecutive-failure count."""
        acct = self._accounts.get(user_id)
        if acct is not None and acct.locked_at is None:
            acct.failures.clear()

    def unlock(self, user_id: str) -> None:
        self._accounts.pop(user_id, None)

    def lock(self, user_id: str, at: float) -> None:
        self._accounts.setdefault(user_id, _Account()).locked_at = at

    def snapshot(self) -> dict[str, tuple[list[float], float | None]]:
        return {u: (list(a.failures), a.locked_at) for u, a in self._accounts.items()}

    def restore(self, user_id: str, failures: list[float], locked_at: float | None) -> None:
        self._accounts[user_id] = _Account(deque(failures), locked_at)
