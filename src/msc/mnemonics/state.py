"""Run-time state of users and stations, in ``data_dir/state.db`` (ARCHITECTURE.md).

``users.toml`` is what administrators write; what changes while the switch runs lives here:
logon failures and lockouts (CJIS AC-7), the last TOTP step used per user (each code accepted
once, IA-2), last logon and last use (AC-2 inactivity, PPP §1.6.2 inactive mnemonics), and
stations disabled at run time by ``msc station disable`` (PPP §1.9.1).

Plain synchronous SQLite (WAL): the CLI uses it directly, the daemon through a worker thread.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from msc.config.files import open_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS user_state(
    id TEXT PRIMARY KEY,
    failures TEXT NOT NULL DEFAULT '[]',   -- times of consecutive failed logons (JSON list)
    locked_at REAL,
    last_logon REAL,
    last_use REAL,
    last_otp_step INTEGER
);
CREATE TABLE IF NOT EXISTS station_state(
    mnemonic TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL DEFAULT 0,
    changed_at REAL,
    last_use REAL
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


class StateStore:
    """Thread-safe access to the user and station tables of the state database."""

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

    def save_lockout(self, uid: str, failures: list[float], locked_at: float | None) -> None:
        self._upsert(uid)
        self._exec("UPDATE user_state SET failures = ?, locked_at = ? WHERE id = ?", (json.dumps(failures), locked_at, uid))

    def unlock(self, uid: str) -> bool:
        row = self.user(uid)
        self.save_lockout(uid, [], None)
        return row is not None and row.locked_at is not None

    def logon(self, uid: str, at: float) -> None:
        self._upsert(uid)
        self._exec("UPDATE user_state SET last_logon = ?, last_use = ?, failures = '[]' WHERE id = ?", (at, at, uid))

    def used(self, uids: dict[str, float]) -> None:
        for uid, at in uids.items():
            self._upsert(uid)
            self._exec("UPDATE user_state SET last_use = MAX(COALESCE(last_use, 0), ?) WHERE id = ?", (at, uid))

    def otp_step(self, uid: str, step: int) -> None:
        self._upsert(uid)
        self._exec("UPDATE user_state SET last_otp_step = ? WHERE id = ?", (step, uid))

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
