"""The one authentication service (CJIS IA-2, IA-2(1), IA-5, AC-7): every logon goes through it.

Terminal and pool ``LOGON``, ``PWD``, a host's OIF check, and every ``msc`` command that acts for
a person (``--as``) call :class:`AuthService`; there is no other way to check a password.

What it guarantees, whatever the caller and whatever the concurrency:

* **At most** ``max_failures`` **guesses per window.** The attempt is counted in the shared state
  store *before* the slow KDF check and the lock is checked again after it
  (:mod:`msc.mnemonics.lockout`), atomically across threads and processes.
* **Each TOTP step once** (RFC 6238 §5.2) across every path and process: the step is claimed in
  the state store with one conditional ``UPDATE``.
* **One answer and one timing for every refusal.** Unknown user, wrong password, wrong OTP,
  disabled, locked, wrong role: the caller gets ``ok = False`` and says the same thing for all of
  them; each path runs exactly one KDF at the current cost (against the dummy hash when there is
  no real one to check) and the same two state-store writes. The reason (:class:`Refusal`) is for
  the journal only.
* **Every hash at the current cost.** A successful logon with a hash made at other parameters
  stores a new hash at the current ones (``rehash``).

The service is synchronous and blocking (SQLite and scrypt): the switch runs it in a worker
thread, the ``msc`` command calls it directly. It does not journal: the caller records every
attempt with what :class:`Attempt` says (the journal package is not a dependency of this one).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from msc.mnemonics import passwords, totp
from msc.mnemonics.lockout import Attempts, LockoutRule

if TYPE_CHECKING:
    from msc.mnemonics.userfile import UsersStore

log = structlog.get_logger("msc.auth")

#: The state-store row that absorbs the attempts for user IDs that do not exist, so that such
#: an attempt does the same writes as any other (no user enumeration by I/O timing). Not a
#: valid user ID (PPP §1.6.7: six [A-Z0-9]).
UNKNOWN_ROW = "*UNKNOWN*"


class Account(Protocol):
    """What the service needs of a user (``msc.mnemonics.directory.User`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def password_hash(self) -> str: ...
    @property
    def totp(self) -> str | None: ...
    @property
    def active(self) -> bool: ...


class AttemptStore(Protocol):
    """The shared logon state (``msc.mnemonics.state.StateStore`` is one)."""

    def update_attempts(self, uid: str, step: Callable[[Attempts], tuple[Attempts, object]], *,
                        logon_at: float | None = None, via: str | None = None,
                        failed: bool | Callable[[object], bool] = False, account: bool = True): ...

    def claim_otp_step(self, uid: str, step: int) -> bool: ...

    def locked_users(self) -> set[str]: ...


class Refusal(enum.StrEnum):
    """Why an attempt was refused — journaled, never shown to the one who tried."""

    UNKNOWN = "UNKNOWN USER"
    PASSWORD = "BAD PASSWORD"
    OTP = "BAD OTP"
    DISABLED = "DISABLED"
    LOCKED = "LOCKED"
    ROLE = "ROLE NOT ALLOWED"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one logon (or password-change) attempt."""

    user_id: str
    ok: bool
    account: Account | None = None  # set only when ok
    refusal: Refusal | None = None  # set only when refused
    locked_now: bool = False  # this attempt locked the account (journal a LOCKOUT)
    rehashed: bool = False  # the stored hash was replaced by one at the current cost
    new_password: str | None = None  # change_password: the new half of the matching split

    def __repr__(self) -> str:  # never a password in a log or a traceback
        return (f"Attempt(user_id={self.user_id!r}, ok={self.ok}, refusal={self.refusal}, "
                f"locked_now={self.locked_now})")


def users_file_rehash(path: Path, store: UsersStore | None = None, *, close: bool = False) -> Callable[[str, str, str], bool]:
    """A ``rehash`` callback for :class:`AuthService` that rewrites ``users.toml`` atomically,
    replacing the hash only if it is still the one that was checked (a concurrent ``PWD`` or
    ``msc user passwd`` wins). ``store`` (PostgreSQL): the change is committed to the database's
    copy of the user directory first (:func:`msc.mnemonics.userfile.update`); a database that
    cannot take it leaves the hash as it was (the rehash is not made: False) — the old hash still
    checks, the next logon tries again. ``close``: close ``store`` after each rehash (a
    short-lived service's, not the switch's)."""
    import msgspec

    from msc.mnemonics import userfile

    def rehash(uid: str, old: str, new: str) -> bool:
        done = []

        def change(users):
            def swap(u):
                if u.password != old:
                    return u
                done.append(True)
                return msgspec.structs.replace(u, password=new)

            return userfile.replace_user(users, uid, swap)

        try:
            userfile.update(path, change, store=store)
        except (LookupError, OSError):  # (OSError: the store's StorageUnavailable; nothing changed)
            return False
        finally:
            if close and store is not None:
                store.close()
        return bool(done)

    return rehash


class AuthService:
    """See the module docstring. One instance per process (the switch's, or one per command)."""

    def __init__(
        self,
        *,
        accounts: Callable[[str], Account | None],
        store: AttemptStore,
        open_totp: Callable[[Account], bytes],
        cost: int = passwords.LN,
        rule: LockoutRule = LockoutRule(),
        clock: Callable[[], float] = time.time,
        rehash: Callable[[str, str, str], bool] | None = None,
        drift_steps: int = 1,
        via: str = "terminal",
    ) -> None:
        """``accounts``: user ID → account (or None); ``open_totp``: an account's raw TOTP secret;
        ``cost``: the current scrypt cost (``[switch] password_cost``); ``rehash(uid, old, new)``
        stores a new hash; ``via``: how attempts come by default (``terminal``, ``pool``,
        ``pwd``, ``cli``, ``web``) — the ``path`` of the refused-attempt and lockout counts the
        store keeps in the attempt's own transaction (``msc_logon_failures_total``)."""
        self.via = via
        self.accounts = accounts
        self.store = store
        self.open_totp = open_totp
        self.cost = cost
        self.rule = rule
        self.clock = clock
        self.rehash = rehash
        self.drift_steps = drift_steps
        self._locked: frozenset[str] = frozenset()
        self.refresh()

    # -- the cached view (host OIF checks on the hot path) ---------------------------------------

    def refresh(self) -> None:
        """Re-read which accounts are locked from the shared store (another process may have
        locked or unlocked one). The switch calls it every second and when told to."""
        self._locked = frozenset(self.store.locked_users())

    def is_locked(self, user_id: str) -> bool:
        return user_id in self._locked

    def oif_account(self, user_id: str) -> Account | None:
        """PPP §1.6.6 C: the operator a host names in a message's OIF, if that operator may act
        now (exists, active, not locked); else None. Cheap: no KDF, no I/O (the cached view)."""
        acct = self.accounts(user_id)
        if acct is None or not acct.active or user_id in self._locked:
            return None
        return acct

    def unlock(self, user_id: str) -> bool:
        """Release a lockout (CJIS AC-7: "until an administrator releases it")."""
        was = self.store.unlock(user_id)  # type: ignore[attr-defined]
        self.refresh()
        return was

    # -- logon ---------------------------------------------------------------------------------

    def authenticate(self, user_id: str, password: str, otp: str | None, *,
                     roles: Iterable[str] | None = None, via: str | None = None) -> Attempt:
        """Check a logon: password, then the one-time password when the account has TOTP, then
        that the account is active and (``roles``) has an allowed role. Blocking (one KDF).
        ``via``: how this attempt came (default: the service's)."""
        via = via or self.via
        acct = self.accounts(user_id)
        row = user_id if acct is not None else UNKNOWN_ROW
        now = self.clock()
        may_check = self.store.update_attempts(row, lambda a: self.rule.reserve(a, now))
        if not may_check:
            passwords.verify_password(password, passwords.dummy_hash(self.cost))
            self.store.update_attempts(row, lambda a: (a, None), via=via, failed=True)
            return self._refused(user_id, Refusal.LOCKED if acct is not None else Refusal.UNKNOWN)
        if acct is None:
            passwords.verify_password(password, passwords.dummy_hash(self.cost))
            self.store.update_attempts(row, lambda a: self.rule.failed(a, now), via=via, failed=True, account=False)
            return self._refused(user_id, Refusal.UNKNOWN)
        refusal = None
        password_ok = passwords.verify_password(password, acct.password_hash)
        step = self._otp_step(acct, otp)  # computed either way: the same work for every refusal
        if not password_ok:
            refusal = Refusal.PASSWORD
        elif acct.totp is not None and (step is None or not self.store.claim_otp_step(acct.id, step)):
            refusal = Refusal.OTP
        elif not acct.active:
            refusal = Refusal.DISABLED
        elif roles is not None and acct.role not in set(roles):
            refusal = Refusal.ROLE
        if refusal is not None:
            return self._failed(acct.id, refusal, via)
        allowed = self.store.update_attempts(acct.id, lambda a: self.rule.succeeded(a, self.clock()),
                                             logon_at=self.clock(), via=via, failed=_refused_now)
        if not allowed:  # locked while the password was being checked
            self.refresh()
            return self._refused(acct.id, Refusal.LOCKED)
        rehashed = False
        if self.rehash is not None and passwords.needs_rehash(acct.password_hash, self.cost):
            rehashed = self.rehash(acct.id, acct.password_hash, passwords.hash_password(password, ln=self.cost))
        return Attempt(acct.id, True, account=acct, rehashed=rehashed)

    def change_password(self, user_id: str, candidates: list[tuple[str, str]], *, via: str = "pwd") -> Attempt:
        """``PWD`` (CJIS IA-5): authenticate with the old password before any change. The body
        ``OLD.NEW`` is ambiguous when the passwords contain '.', so each (old, new) split is
        tried; the attempt counts once. On success ``new_password`` is the new half. A locked or
        disabled account is refused like a wrong old password. The caller checks the policy
        and stores the new hash."""
        acct = self.accounts(user_id)
        row = user_id if acct is not None else UNKNOWN_ROW
        now = self.clock()
        may_check = self.store.update_attempts(row, lambda a: self.rule.reserve(a, now))
        if not may_check or acct is None:
            passwords.verify_password(candidates[0][0] if candidates else "", passwords.dummy_hash(self.cost))
            self.store.update_attempts(row, (lambda a: (a, None)) if not may_check else
                                       (lambda a: self.rule.failed(a, now)), via=via, failed=True,
                                       account=acct is not None)
            return self._refused(user_id, Refusal.LOCKED if acct is not None else Refusal.UNKNOWN)
        new = None
        for old, candidate in candidates:
            if passwords.verify_password(old, acct.password_hash):
                new = candidate
                break
        if new is None:
            return self._failed(acct.id, Refusal.PASSWORD, via)
        if not acct.active:
            return self._failed(acct.id, Refusal.DISABLED, via)
        allowed = self.store.update_attempts(acct.id, lambda a: self.rule.succeeded(a, self.clock()),
                                             via=via, failed=_refused_now)
        if not allowed:
            self.refresh()
            return self._refused(acct.id, Refusal.LOCKED)
        return Attempt(acct.id, True, account=acct, new_password=new)

    # -- internals -------------------------------------------------------------------------------

    def _otp_step(self, acct: Account, otp: str | None) -> int | None:
        """The TOTP step ``otp`` is the code of (within the drift), or None; not yet claimed."""
        if acct.totp is None or not otp:
            return None
        try:
            secret = self.open_totp(acct)
        except Exception:  # a sealed secret that does not open (moved, corrupted, wrong key)
            log.error("auth.totp_secret_unreadable", locked_user=acct.id)
            return None
        return totp.matching_step(secret, otp.strip(), self.clock(), self.drift_steps)

    def _failed(self, uid: str, refusal: Refusal, via: str) -> Attempt:
        locked_now = self.store.update_attempts(uid, lambda a: self.rule.failed(a, self.clock()), via=via, failed=True)
        if locked_now:
            self.refresh()
        return Attempt(uid, False, refusal=refusal, locked_now=bool(locked_now))

    @staticmethod
    def _refused(uid: str, refusal: Refusal) -> Attempt:
        return Attempt(uid, False, refusal=refusal)


def _refused_now(allowed: object) -> bool:
    """A right password refused because the account locked while it was being checked."""
    return allowed is not True
