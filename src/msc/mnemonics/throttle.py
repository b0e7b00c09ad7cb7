"""Logon attempts per source address (issue 14 item 5; SECURITY.md "Logon work is bounded").

The lockout rule (:mod:`msc.mnemonics.lockout`) protects one *account*: five guesses, then it is
locked. It does not stop one address from guessing at many accounts, and every guess costs a KDF
check (~0.1 s of a core) — 50 connections guessing slowed every other logon to seconds. This is
the per-address rule that goes with it, kept in memory (an address is not an account: nothing of
it is written to ``state.db``):

* an address may have at most ``limit`` failed (or still unanswered) logons within ``window_s``;
  beyond that its logons are refused at once, without a check (``E307``), until the oldest ages
  out — the attempt is counted **before** its check, as the lockout counts it, so concurrency
  does not get around it, and a successful logon takes its own attempt back;
* :meth:`AddressAttempts.priority` orders the logons waiting for a check: an address that
  logged on successfully recently first, then by its recent failures, fewest first — an attacker's
  guesses wait behind everybody else's logons.

Memory is bounded: at most ``max_tracked`` addresses (least recently seen forgotten first), at
most ``limit`` times each. Pure: the caller gives the time.
"""

from __future__ import annotations

from collections import OrderedDict, deque

MAX_TRACKED = 4096
#: How long a successful logon makes its address "known" (first in the queue).
KNOWN_S = 12 * 3600.0


class AddressAttempts:
    def __init__(self, limit: int = 10, window_s: float = 60.0, *, max_tracked: int = MAX_TRACKED) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_tracked = max_tracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._known: OrderedDict[str, float] = OrderedDict()

    def _recent(self, source: str, now: float) -> deque[float]:
        d = self._failures.get(source)
        if d is None:
            if len(self._failures) >= self.max_tracked:
                self._failures.popitem(last=False)
            d = self._failures[source] = deque()
        else:
            self._failures.move_to_end(source)
        while d and now - d[0] > self.window_s:
            d.popleft()
        return d

    def reserve(self, source: str, now: float) -> bool:
        """Count an attempt from ``source`` before its check. False: the address has used its
        ``limit`` attempts of the window — refuse without a check."""
        d = self._recent(source, now)
        if len(d) >= self.limit:
            return False
        d.append(now)
        return True

    def release(self, source: str) -> None:
        """The attempt was not checked after all (no check slot): take it back."""
        d = self._failures.get(source)
        if d:
            d.pop()

    def succeeded(self, source: str, now: float) -> None:
        """The attempt's check passed: it was not a failure; the address is known."""
        d = self._failures.get(source)
        if d:
            d.pop()
        self._known[source] = now
        self._known.move_to_end(source)
        while len(self._known) > self.max_tracked:
            self._known.popitem(last=False)

    def priority(self, source: str, now: float) -> tuple[int, int]:
        """Sort key of a waiting logon (lower first): (0 if the address logged on successfully
        in the last :data:`KNOWN_S`, else 1; its failed and unanswered attempts in the window)."""
        known = self._known.get(source)
        d = self._failures.get(source)
        recent = sum(1 for t in d if now - t <= self.window_s) if d else 0
        return (0 if known is not None and now - known <= KNOWN_S else 1, recent)

    @property
    def tracked(self) -> int:
        return len(self._failures)
