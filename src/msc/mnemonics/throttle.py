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
  logged on successfully recently first — and so does a logon for an **account** that logged on
  successfully recently and has no failed or unanswered attempt in the window, from wherever it
  comes (an operator's first logon from a new terminal, after a DHCP change, a guesser rotating
  addresses does not share its rank: probe14 case 4) — then by the address's recent failures,
  fewest first: an attacker's guesses wait behind everybody else's logons. A guess at a known
  account's ID gets that rank once: its attempt is counted against the account before its
  check, so the account's next attempts (concurrent ones too) rank with the rest until it has
  logged on successfully again (from a known address, or through the queue).

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
        #: Accounts that logged on successfully: user ID -> [when, its attempts since that were
        #: not successes]. Only accounts with a success are kept (real ones), at most max_tracked.
        self._accounts: OrderedDict[str, list[float]] = OrderedDict()

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

    def succeeded(self, source: str, now: float, user: str | None = None) -> None:
        """The attempt's check passed: it was not a failure; the address (and the account
        ``user``) is known."""
        d = self._failures.get(source)
        if d:
            d.pop()
        self._known[source] = now
        self._known.move_to_end(source)
        while len(self._known) > self.max_tracked:
            self._known.popitem(last=False)
        if user is not None:
            self._accounts[user] = [now, 0]
            self._accounts.move_to_end(user)
            while len(self._accounts) > self.max_tracked:
                self._accounts.popitem(last=False)

    def attempt_account(self, user: str, now: float) -> None:
        """An attempt for ``user`` goes to its check (after :meth:`priority` was taken): until it
        succeeds it counts against the account's rank."""
        a = self._accounts.get(user)
        if a is not None:
            a[1] += 1

    def release_account(self, user: str) -> None:
        """The attempt for ``user`` was not checked after all (no check slot): take it back."""
        a = self._accounts.get(user)
        if a is not None and a[1] > 0:
            a[1] -= 1

    def account_known(self, user: str | None, now: float) -> bool:
        """Did ``user`` log on successfully in the last :data:`KNOWN_S`, with no failed or
        unanswered attempt since?"""
        a = self._accounts.get(user) if user is not None else None
        return a is not None and now - a[0] <= KNOWN_S and a[1] == 0

    def priority(self, source: str, now: float, user: str | None = None) -> tuple[int, int]:
        """Sort key of a waiting logon (lower first): (0 if the address logged on successfully
        in the last :data:`KNOWN_S`, or the account ``user`` did with a clean record since
        (:meth:`account_known`), else 1; the address's failed and unanswered attempts in the window)."""
        known = self._known.get(source)
        d = self._failures.get(source)
        recent = sum(1 for t in d if now - t <= self.window_s) if d else 0
        address_known = known is not None and now - known <= KNOWN_S
        return (0 if address_known or self.account_known(user, now) else 1, recent)

    @property
    def tracked(self) -> int:
        return len(self._failures)
