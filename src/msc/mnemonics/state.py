"""Run-time state of users and stations, in ``data_dir/state.db`` (ARCHITECTURE.md).

``users.toml`` is what administrators write; what changes while the switch runs lives here:
logon failures and lockouts (CJIS AC-7), the last TOTP step used per user (each code accepted
once, IA-2), last logon and last use (AC-2 inactivity, PPP §1.6.2 inactive mnemonics), and
stations disabled at run time by ``msc station disable`` (PPP §1.9.1).

Plain synchronous SQLite (WAL): the CLI uses it directly, the daemon through a worker thread.
The logon state (failures, lock, TOTP step) is only ever changed inside one ``BEGIN IMMEDIATE``
transaction per step, so the switch and any number of ``msc`` commands — separate processes —
share one lockout count and one "each TOTP step once" rule (:mod:`msc.mnemonics.auth`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from msc.config.files import open_sqlite
from msc.mnemonics.lockout import Attempts

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS user_state(
    id TEXT PRIMARY KEY,
    failures TEXT NOT NULL DEFAULT '[]',   -- times of consecutive failed logons (JSON list)
    locked_at REAL,
    last_logon REAL,
    last_use REAL,
    last_otp_step INTEGER
);
CREATE TABLE IF NOT EXISTS auth_counts(
    path TEXT NOT NULL,                    -- how the attempt came: terminal, pool, pwd, cli, web
    what TEXT NOT NULL,                    -- failure | lockout
    n INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (path, what)
);
CREATE TABLE IF NOT EXISTS station_state(
    mnemonic TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL DEFAULT 0,
    changed_at REAL,
    last_use REAL
);
CREATE TABLE IF NOT EXISTS open_sessions(
    seq INTEGER PRIMARY KEY,               -- the journal record that opened it (LOGON OK, BIND)
    kind TEXT NOT NULL,                    -- terminal | pool | host | printer
    peer TEXT, mnemonic TEXT NOT NULL, pool TEXT, user TEXT, taf TEXT,
    opened REAL NOT NULL,
    closing_after INTEGER                  -- a start journaling its end: the journal's last seq then
);
"""


@dataclass
class UserRow:
    id: str
    failures: list[float]
    locked_at: float | None
    last_logon: float | None
    last_use: float | None
    last_otp_step: int | None


@dataclass(frozen=True)
class OpenSession:
    """A logon (a terminal's, a pooled mnemonic's loan) or a bound host or printer, open in the
    journal: its opening record (``LOGON OK …``, ``BIND``) is committed and no end of it is yet
    (JOURNAL.md "Sessions a node's end left open"). ``seq``: that record's sequence number (the
    key); ``closing_after``: set by a start that is journaling its end — the journal's last
    sequence number then — so that a start interrupted after that commit does not end it twice."""

    seq: int
    kind: str  # terminal | pool | host | printer
    peer: str | None
    mnemonic: str
    pool: str | None
    user: str | None
    taf: str | None
    opened: float  # epoch seconds
    closing_after: int | None = None


@runtime_checkable
class RuntimeState(Protocol):
    """The run-time state of users and stations, as any storage backend keeps it (the contract
    suite ``tests/contract/`` checks every backend against this).

    Blocking calls: the CLI calls them directly, the daemon from worker threads
    (``asyncio.to_thread``), so an implementation must be safe to call from several threads.
    Several processes (the switch and ``msc`` commands) share one store: :meth:`update_attempts`
    and :meth:`claim_otp_step` are atomic across all of them.
    """

    def users(self) -> dict[str, UserRow]:
        """Every user with state, by user ID."""

    def user(self, uid: str) -> UserRow | None:
        """One user's state, or None if nothing was ever recorded for it."""

    def update_attempts(self, uid: str, step: Callable[[Attempts], tuple[Attempts, T]], *,
                        logon_at: float | None = None, via: str | None = None,
                        failed: bool | Callable[[T], bool] = False, account: bool = True) -> T:
        """Apply ``step`` to the account's logon :class:`Attempts` atomically and store its
        result; with ``logon_at``, also record a logon then if ``step``'s answer is True. With
        ``via`` (the path: terminal, cli, web …), count a failure (``failed``, or ``failed(answer)``)
        and a lockout this step made (``account``) in :meth:`auth_counts`, in the same transaction."""

    def auth_counts(self) -> dict[tuple[str, str], int]:
        """Logon failures and lockouts by (path, "failure" | "lockout"), across every process."""

    def claim_otp_step(self, uid: str, step: int) -> bool:
        """Use TOTP step ``step`` if no step at or after it was used (each code once, IA-2(1))."""

    def locked_users(self) -> set[str]:
        """User IDs locked out (CJIS AC-7) until an administrator releases them."""

    def unlock(self, uid: str) -> bool:
        """Release a lockout and forget the failures; True if the account was locked."""

    def used(self, uids: dict[str, float]) -> None:
        """Record last use (epoch seconds) per user; a last use never moves back."""

    def disabled_stations(self) -> set[str]:
        """Mnemonics disabled at run time (``msc station disable``, PPP §1.9.1)."""

    def set_station(self, mnemonic: str, disabled: bool) -> None:
        """Disable or enable a station at run time."""

    def station_used(self, mnemonics: dict[str, float]) -> None:
        """Record last use (epoch seconds) per station; a last use never moves back."""

    def station_last_use(self) -> dict[str, float | None]:
        """Last use of every station with state."""

    def sessions_changed(self, opened: Sequence[OpenSession] = (), ended: Sequence[int] = ()) -> None:
        """One atomic step: remember sessions whose opening record is committed (a ``seq``
        already stored keeps its first row), then forget those whose end is (by ``seq``; unknown
        ones are ignored). The switch batches what came meanwhile into one step."""

    def open_sessions(self) -> list[OpenSession]:
        """The sessions remembered as open, by ``seq``: at a start, those a previous run left."""

    def sessions_closing(self, seqs: Sequence[int], after: int) -> None:
        """Mark sessions whose end a start is about to journal: ``after`` the journal's last
        sequence number before that append (:attr:`OpenSession.closing_after`)."""

    def close(self) -> None:
        """Release the connection."""


class StateStore:
    """The SQLite :class:`RuntimeState`: thread-safe access to the user and station tables of the state database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_sqlite(path, SCHEMA, synchronous="FULL")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _exec(self, sql: str, params=()) -> list:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- users ----------------------------------------------------------------------------

    def users(self) -> dict[str, UserRow]:
        rows = self._exec("SELECT id, failures, locked_at, last_logon, last_use, last_otp_step FROM user_state")
        return {r[0]: UserRow(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows}

    def user(self, uid: str) -> UserRow | None:
        return self.users().get(uid)

    def _upsert(self, uid: str) -> None:
        self._exec("INSERT OR IGNORE INTO user_state(id) VALUES (?)", (uid,))

    def update_attempts(self, uid: str, step: Callable[[Attempts], tuple[Attempts, T]], *,
                        logon_at: float | None = None, via: str | None = None,
                        failed: bool | Callable[[T], bool] = False, account: bool = True) -> T:
        """Apply ``step`` to the account's :class:`Attempts` atomically (``BEGIN IMMEDIATE``: no
        other connection, in this process or another, changes them in between) and store what it
        returns. The row is written even when nothing changed, so that every path through a logon
        costs the same I/O. ``logon_at``: also record a logon at that time if ``step`` allows it
        (its second value is True).

        ``via`` (the way the attempt came: ``terminal``, ``pool``, ``pwd``, ``cli``, ``web``):
        count, in the same transaction, a refused attempt when ``failed`` is True (or returns True
        for ``step``'s second value), and a lockout when ``step`` locked an ``account`` (not the
        shared row of unknown IDs) — the one count of CJIS AC-7 that the switch's metrics read
        (:meth:`auth_counts`), whichever process checked the password."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR IGNORE INTO user_state(id) VALUES (?)", (uid,))
                failures, locked_at = conn.execute(
                    "SELECT failures, locked_at FROM user_state WHERE id = ?", (uid,)).fetchone()
                new, out = step(Attempts(tuple(json.loads(failures)), locked_at))
                conn.execute("UPDATE user_state SET failures = ?, locked_at = ? WHERE id = ?",
                             (json.dumps(list(new.failures)), new.locked_at, uid))
                if logon_at is not None and out is True:
                    conn.execute("UPDATE user_state SET last_logon = ?, last_use = ? WHERE id = ?",
                                 (logon_at, logon_at, uid))
                if via is not None:
                    if failed(out) if callable(failed) else failed:
                        self._count(via, "failure")
                    if account and locked_at is None and new.locked_at is not None:
                        self._count(via, "lockout")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return out

    def _count(self, via: str, what: str) -> None:
        self._conn.execute("INSERT INTO auth_counts(path, what, n) VALUES (?, ?, 1) "
                           "ON CONFLICT(path, what) DO UPDATE SET n = n + 1", (via, what))

    def auth_counts(self) -> dict[tuple[str, str], int]:
        """Refused logon attempts and lockouts so far, by (path, ``failure``|``lockout``), of every
        process that shares this state database (they never decrease)."""
        return {(r[0], r[1]): r[2] for r in self._exec("SELECT path, what, n FROM auth_counts")}

    def claim_otp_step(self, uid: str, step: int) -> bool:
        """Use TOTP step ``step`` of ``uid`` if no step at or after it was used (IA-2(1): each
        code once). Atomic across processes; True if this caller got it."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR IGNORE INTO user_state(id) VALUES (?)", (uid,))
                cur = conn.execute("UPDATE user_state SET last_otp_step = ? WHERE id = ? "
                                   "AND (last_otp_step IS NULL OR last_otp_step < ?)", (step, uid, step))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return cur.rowcount == 1

    def locked_users(self) -> set[str]:
        return {r[0] for r in self._exec("SELECT id FROM user_state WHERE locked_at IS NOT NULL")}

    def unlock(self, uid: str) -> bool:
        """Release a lockout (and forget the failures); True if the account was locked."""
        was: list[bool] = []

        def step(a: Attempts) -> tuple[Attempts, bool]:
            was.append(a.locked)
            return Attempts(), True

        self.update_attempts(uid, step)
        return was[0]

    def used(self, uids: dict[str, float]) -> None:
        for uid, at in uids.items():
            self._upsert(uid)
            self._exec("UPDATE user_state SET last_use = MAX(COALESCE(last_use, 0), ?) WHERE id = ?", (at, uid))

    # -- stations -------------------------------------------------------------------------

    def disabled_stations(self) -> set[str]:
        return {r[0] for r in self._exec("SELECT mnemonic FROM station_state WHERE disabled = 1")}

    def set_station(self, mnemonic: str, disabled: bool) -> None:
        self._exec("INSERT OR IGNORE INTO station_state(mnemonic) VALUES (?)", (mnemonic,))
        self._exec("UPDATE station_state SET disabled = ?, changed_at = ? WHERE mnemonic = ?",
                   (int(disabled), time.time(), mnemonic))

    def station_used(self, mnemonics: dict[str, float]) -> None:
        for m, at in mnemonics.items():
            self._exec("INSERT OR IGNORE INTO station_state(mnemonic) VALUES (?)", (m,))
            self._exec("UPDATE station_state SET last_use = MAX(COALESCE(last_use, 0), ?) WHERE mnemonic = ?", (at, m))

    def station_last_use(self) -> dict[str, float | None]:
        return {r[0]: r[1] for r in self._exec("SELECT mnemonic, last_use FROM station_state")}

    # -- open sessions --------------------------------------------------------------------

    def sessions_changed(self, opened: Sequence[OpenSession] = (), ended: Sequence[int] = ()) -> None:
        if not opened and not ended:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT OR IGNORE INTO open_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                       [(r.seq, r.kind, r.peer, r.mnemonic, r.pool, r.user, r.taf, r.opened,
                                         r.closing_after) for r in opened])
                self._conn.executemany("DELETE FROM open_sessions WHERE seq = ?", [(s,) for s in ended])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def open_sessions(self) -> list[OpenSession]:
        return [OpenSession(*r) for r in self._exec(
            "SELECT seq, kind, peer, mnemonic, pool, user, taf, opened, closing_after FROM open_sessions ORDER BY seq")]

    def sessions_closing(self, seqs: Sequence[int], after: int) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("UPDATE open_sessions SET closing_after = ? WHERE seq = ?",
                                       [(after, s) for s in seqs])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
