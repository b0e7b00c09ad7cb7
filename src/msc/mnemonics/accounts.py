"""Accounts as sessions use them: logon, password change and a host's OIF (CJIS AC-7, IA-2,
IA-5; PPP §1.6.2, §1.6.7).

:class:`Accounts` decides; the session acts. A logon goes: the address's attempt allowance and a
check slot (both E307, saying nothing about the account), the authentication service
(:class:`msc.mnemonics.auth.AuthService`: password, TOTP, lockout — every refusal is the same
``E202``), the operator checks of the station or pool (:func:`msc.mnemonics.authz.check_operator`),
and for a pool a mnemonic from the Access Control Point (E305 when none is free). The answer is
:class:`LoggedOn` or :class:`Refused`; the session journals it and answers the client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from msc.mnemonics import authz, userfile
from msc.mnemonics.acp import AccessControlPoint, Allocation
from msc.mnemonics.auth import Attempt, AuthService
from msc.mnemonics.directory import Directory, Pool, Station, User
from msc.mnemonics.passwords import hash_password, problem_for
from msc.protocol.codes import Reject
from msc.protocol.message import Logon, PasswordChange


@dataclass(frozen=True, slots=True)
class Refused:
    """A refused logon or password change.

    ``failed``: set when the account was tried (CJIS AC-7: a ``LOGON FAILED <failed>`` record);
    ``locked``: the user ID this attempt locked (a ``LOCKOUT`` record)."""

    reject: Reject
    detail: str | None = None
    failed: str | None = None
    locked: str | None = None
    delay_s: float = 0.0  # answer only after this long, the connection's frames held meanwhile
    cause: Reject | None = None  # the real reason's code, journaled only (the client is told ``reject``)
    why: str | None = None  # for the log only: what failed (E503: the storage and its error)


@dataclass(frozen=True, slots=True)
class LoggedOn:
    user: User
    mnemonic: str  # the terminal's static mnemonic, or the pooled one lent (PPP §1.6.2 A/B)
    alloc: Allocation | None = None


class Accounts:
    """The logon, lockout, TOTP and password policy a session applies (one per switch)."""

    def __init__(self, *, auth: AuthService, directory: Callable[[], Directory], acp: AccessControlPoint,
                 gate: Any, busy: type[Exception], attempts: Any, metrics: Any, clock: Callable[[], float],
                 reload_users: Callable[[], object], settings: Callable[[], Any],
                 in_pool: Callable[..., Any], unavailable: tuple[type[Exception], ...] = (),
                 users_store: userfile.UsersStore | None = None) -> None:
        """``gate``: runs a check in a worker thread, at a priority, bounded (``gate.run``; raises
        ``busy`` when full); ``attempts``: per-address logon attempts; ``in_pool``: run a call in
        the checks' worker threads; ``reload_users``: re-read users.toml after a change;
        ``unavailable``: what the run-time state raises when its storage cannot be used now
        (``msc.storage.errors.STATE_ERRORS``): the check is answered ``E503``; ``users_store``:
        the database's copy of the user directory a ``PWD`` is committed to (PostgreSQL;
        :func:`msc.mnemonics.userfile.update`)."""
        self.unavailable = unavailable
        self.users_store = users_store
        self.auth = auth
        self.directory = directory
        self.acp = acp
        self.gate = gate
        self.busy = busy
        self.attempts = attempts
        self.metrics = metrics
        self.clock = clock
        self.reload_users = reload_users
        self.settings = settings
        self.in_pool = in_pool
        #: An address past its logon failure rate is answered E307 after this long
        #: ([switch] logon_throttle_delay_s): one answer per connection and delay, not thousands.
        self.throttle_delay_s = float(settings().config.switch.logon_throttle_delay_s)

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def oif_account(self, oif: str) -> User | None:
        """A host's OIF: the account if active and not locked (PPP §1.6.7)."""
        return self.auth.oif_account(oif)  # type: ignore[return-value]  # the directory's accounts are Users

    def host_operator(self, oif: str, serves: frozenset[str]) -> User | Refused:
        """A host's OIF as the operator of a message (PPP §1.6.7): active, not locked, and an
        operator of an agency the host serves (:func:`msc.mnemonics.authz.check_operator`).
        Refused: always ``E104`` (a host must not learn which user IDs exist or what they are,
        SECURITY.md "Authentication"); ``failed`` names a reason about an existing account, to
        be journaled, with its real code as ``cause``."""
        user = self.oif_account(oif)
        if user is None:
            return Refused(Reject.E104, "OIF IS NOT AN ACTIVE USER OF A SERVED AGENCY")
        denied = authz.check_operator(user, serves, self.today())
        if denied is not None:
            return Refused(Reject.E104, "OIF IS NOT AN ACTIVE USER OF A SERVED AGENCY",
                           failed=authz.refusal_reason(denied), cause=denied.reject)
        return user

    def _tried(self, attempt: Attempt, why: str | None = None) -> Refused:
        # The attempt and any lockout were counted by the auth service in state.db, whichever
        # process checked the password (msc_logon_failures_total, SECURITY.md).
        return Refused(Reject.E202, why, failed=attempt.refusal.value if attempt.refusal else None,
                       locked=attempt.user_id if attempt.locked_now else None)

    async def logon(self, body: Logon, *, source: str, station: Station | None, pool: Pool | None,
                    release_previous: Callable[[], None] | None = None) -> LoggedOn | Refused:
        """CJIS AC-7/IA-2/IA-5 logon at ``station`` (a terminal) or ``pool``.
        ``release_previous``: give back the pooled mnemonic this session holds (a new logon)."""
        # Logon work is bounded (SECURITY.md): the address's attempts first, then a check slot.
        # Either refusal is E307 without a check: it says nothing about the account.
        now = self.clock()
        if not self.attempts.reserve(source, now):
            self.metrics.logon_throttled.labels("address").inc()
            return Refused(Reject.E307, "TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS, TRY LATER",
                           delay_s=self.throttle_delay_s)
        key = self.attempts.priority(source, now, body.user)
        self.attempts.attempt_account(body.user, now)
        try:
            attempt = await self.gate.run(key, functools.partial(
                self.auth.authenticate, via="pool" if pool is not None else "terminal"),
                body.user, body.password, body.otp)
        except self.busy:
            self.attempts.release(source)
            self.attempts.release_account(body.user)
            return Refused(Reject.E307, "LOGON BUSY, TRY AGAIN")
        except self.unavailable as exc:
            # The run-time state (lockout count, TOTP step, last logon) could not be read or
            # written: the logon is not decided. Like E307 it counts against neither the address
            # nor the account here (the store may have counted the attempt before it failed).
            self.attempts.release(source)
            self.attempts.release_account(body.user)
            return _unavailable(exc)
        if not attempt.ok:
            return self._tried(attempt)
        self.attempts.succeeded(source, self.clock(), body.user)
        user = attempt.account
        assert isinstance(user, User)
        if attempt.rehashed:  # users.toml now has the hash at the current cost
            self.reload_users()
            user = self.directory().users.get(user.id, user)
        src = pool if pool is not None else station
        assert src is not None
        denied = authz.check_operator(user, src.serves, self.today())
        if denied is not None:
            # Role, agency or certification: the same E202 as any refusal (SECURITY.md
            # "Authentication"): telling the reason would tell that the password was right and what
            # the account is. The reason is journaled.
            return Refused(Reject.E202, None, failed=authz.refusal_reason(denied), cause=denied.reject)
        if pool is None:
            assert station is not None
            return LoggedOn(user, station.mnemonic)
        if release_previous is not None:
            release_previous()
        alloc = self.acp.allocate(pool.name, user.id)
        if alloc is None:
            return Refused(Reject.E305, failed="POOL EXHAUSTED")
        self.pool_gauge(pool.name)
        return LoggedOn(user, alloc.mnemonic, alloc)

    def release(self, alloc: Allocation) -> None:
        """Give a pooled mnemonic back to its pool (PPP §1.6.2 B)."""
        self.acp.release(alloc.mnemonic)
        self.pool_gauge(alloc.pool)

    def pool_gauge(self, pool: str) -> None:
        self.metrics.pool_free.labels(pool).set(self.acp.free_count(pool))

    async def change_password(self, user: User, body: PasswordChange) -> User | Refused:
        """``PWD`` (CJIS IA-5): the old password (and TOTP) checked like a logon, the new one
        against the policy (E108), then users.toml rewritten. Returns the updated account."""
        try:
            attempt = await self.gate.run((0, 0), self.auth.change_password, user.id, body.candidates())
        except self.busy:
            return Refused(Reject.E307, "PASSWORD CHECKS BUSY, TRY AGAIN")
        except self.unavailable as exc:
            return _unavailable(exc)
        if not attempt.ok:
            # Wrong old password, locked or disabled account: one answer for all.
            return self._tried(attempt, "PASSWORD CHANGE REFUSED")
        new = attempt.new_password
        settings = self.settings()
        problem = await self.in_pool(problem_for, settings, new, user.id, user.name, user.ori)  # zxcvbn: ms
        if problem:
            return Refused(Reject.E108, problem.upper())
        hashed = await self.in_pool(hash_password, new, ln=self.auth.cost)

        def change(users):
            return userfile.replace_user(users, user.id, lambda u: msgspec.structs.replace(u, password=hashed))

        try:
            # PostgreSQL: committed to the user directory every node enforces first (fail closed:
            # a database that cannot take it refuses the change, E503, nothing changed).
            await asyncio.to_thread(userfile.update, settings.users_path, change, store=self.users_store)
        except self.unavailable as exc:
            return _unavailable(exc)
        self.reload_users()
        return self.directory().users.get(user.id, user)


def _unavailable(exc: Exception) -> Refused:
    """A LOGON or PWD whose run-time state could not be read or written: E503, nothing decided
    (PROTOCOL.md §6); ``why`` names the storage and its error for the log."""
    # PostgreSQL's StorageUnavailable names the store and the server; SQLite's error does not.
    why = str(exc) if isinstance(exc, OSError) else f"run-time state (state.db): {type(exc).__name__}: {exc}"
    return Refused(Reject.E503, None, why=why)
