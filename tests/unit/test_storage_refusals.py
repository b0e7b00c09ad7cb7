"""A LOGON or PWD whose run-time state fails at any of its store calls is refused E503 — not an
internal error — and says nothing about the account (issue 16: a logon during a database failover
ended in E502). Each path is run with its store failing at each of its calls in turn; the address
and account throttles are given back as for E307. And users' last use that could not be flushed
is kept for the next flush."""

from __future__ import annotations

import asyncio
import sqlite3
import types

import pytest

from msc.mnemonics.accounts import Accounts, Refused
from msc.mnemonics.throttle import AddressAttempts
from msc.ops.metrics import Metrics
from msc.protocol.codes import Reject
from msc.protocol.message import Logon, PasswordChange
from msc.routing.admission import LastUse
from msc.storage.errors import STATE_ERRORS, StorageUnavailable
from tests.unit.test_auth_service import PASSWORD, SECRET, Clock, FakeStore, make

NEW = "another long passphrase seven"


PG_DOWN = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): ConnectionRefusedError: refused")
SQLITE_LOCKED = sqlite3.OperationalError("database is locked")


class FailingStore(FakeStore):
    """The in-memory store whose ``fail_at``-th logon-state call (1-based) raises ``error``, as
    the PostgreSQL store does when its database is away (SQLite's: state.db locked too long)."""

    def __init__(self, fail_at: int, error: Exception = PG_DOWN) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.error = error
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error

    def update_attempts(self, *a, **kw):
        self._call()
        return super().update_attempts(*a, **kw)

    def claim_otp_step(self, *a, **kw):
        self._call()
        return super().claim_otp_step(*a, **kw)


class Gate:
    async def run(self, _key, fn, *args):
        return fn(*args)


class Busy(Exception):
    pass


def accounts_on(store: FailingStore) -> tuple[Accounts, AddressAttempts]:
    clock = Clock()
    auth, _ = make(store=store, clock=clock)
    attempts = AddressAttempts()
    settings = types.SimpleNamespace(config=types.SimpleNamespace(switch=types.SimpleNamespace(
        logon_throttle_delay_s=1.0)))
    acc = Accounts(auth=auth, directory=lambda: None, acp=None, gate=Gate(), busy=Busy, attempts=attempts,
                   metrics=Metrics(), clock=clock, reload_users=lambda: None, settings=lambda: settings,
                   in_pool=None, unavailable=STATE_ERRORS)
    return acc, attempts


def otp_now() -> str:
    from msc.mnemonics import totp

    return totp.code_at(SECRET, Clock()())


#: (what, its LOGON body, how many store calls its path makes before it is decided)
LOGONS = [
    ("right password", lambda: Logon("TS0001", None, PASSWORD), 2),  # reserve, succeeded
    ("wrong password", lambda: Logon("TS0001", None, "wrong one"), 2),  # reserve, failed
    ("unknown user", lambda: Logon("ZZ0009", None, PASSWORD), 2),  # reserve, failed
    ("disabled account", lambda: Logon("DS0001", None, PASSWORD), 2),
    ("TOTP, right code", lambda: Logon("MF0001", otp_now(), PASSWORD), 3),  # reserve, claim step, succeeded
    ("TOTP, wrong code", lambda: Logon("MF0001", "000000", PASSWORD), 2),  # reserve, failed (no step to claim)
]


@pytest.mark.parametrize("error", [PG_DOWN, SQLITE_LOCKED], ids=["postgresql", "sqlite"])
@pytest.mark.parametrize(("what", "body", "calls"), LOGONS, ids=[w for w, _, _ in LOGONS])
def test_a_logon_whose_store_fails_at_any_call_is_refused_e503(what, body, calls, error):
    for fail_at in range(1, calls + 1):
        store = FailingStore(fail_at, error)
        acc, attempts = accounts_on(store)
        out = asyncio.run(acc.logon(body(), source="127.0.0.1", station=None, pool=None))
        assert isinstance(out, Refused), (what, fail_at, out)
        assert out.reject is Reject.E503 and out.detail is None, (what, fail_at, out)
        assert out.failed is None and out.locked is None  # nothing journaled as an attempt of the account
        assert "run-time state" in (out.why or "") and str(error) in (out.why or "")
        # Like E307: the address's allowance is given back (another try now is not a new guess).
        assert attempts.reserve("127.0.0.1", Clock()()), (what, fail_at)


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_password_change_whose_store_fails_is_refused_e503(fail_at):
    acc, _ = accounts_on(FailingStore(fail_at))
    user = types.SimpleNamespace(id="TS0001")
    out = asyncio.run(acc.change_password(user, PasswordChange(f"{PASSWORD}.{NEW}")))
    assert isinstance(out, Refused) and out.reject is Reject.E503 and out.failed is None


@pytest.mark.parametrize(("before", "failed", "after"), [
    ({}, {"TS0001": 10.0}, {"TS0001": 10.0}),
    ({"TS0001": 20.0}, {"TS0001": 10.0}, {"TS0001": 20.0}),  # used again since: the later time wins
    ({"TS0001": 5.0}, {"TS0001": 10.0, "TS0002": 3.0}, {"TS0001": 10.0, "TS0002": 3.0}),
])
def test_last_use_that_could_not_be_stored_is_kept_for_the_next_flush(before, failed, after):
    lu = LastUse()
    lu.users.update(before)
    lu.give_back(failed, {"ICS1": 7.0})
    users, stations = lu.take()
    assert users == after and stations == {"ICS1": 7.0}
