"""The authentication service (msc.mnemonics.auth) with a fake clock and an in-memory store,
then with the real state store shared by two instances (two processes in production)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from msc.mnemonics import passwords, totp
from msc.mnemonics.auth import UNKNOWN_ROW, AuthService, Refusal
from msc.mnemonics.lockout import Attempts, LockoutRule
from msc.mnemonics.state import StateStore

COST = 4
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Acct:
    id: str
    role: str
    password_hash: str
    totp: str | None = None
    active: bool = True


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeStore:
    """The AttemptStore protocol in memory; counts writes to show every path costs the same."""

    def __init__(self) -> None:
        self.rows: dict[str, Attempts] = {}
        self.steps: dict[str, int] = {}
        self.writes: dict[str, int] = {}
        self.logons: dict[str, float] = {}
        self._lock = threading.Lock()

    def update_attempts(self, uid, step, *, logon_at=None, via=None, failed=False, account=True):
        with self._lock:
            new, out = step(self.rows.get(uid, Attempts()))
            self.rows[uid] = new
            self.writes[uid] = self.writes.get(uid, 0) + 1
            if logon_at is not None and out is True:
                self.logons[uid] = logon_at
            return out

    def claim_otp_step(self, uid, step):
        with self._lock:
            if self.steps.get(uid, -1) >= step:
                return False
            self.steps[uid] = step
            return True

    def locked_users(self):
        return {u for u, a in self.rows.items() if a.locked}

    def unlock(self, uid):
        with self._lock:
            was = self.rows.get(uid, Attempts()).locked
            self.rows[uid] = Attempts()
            return was


SECRET = b"12345678901234567890"


def make(store=None, clock=None, accounts=None, rehash=None, cost=COST):
    h = passwords.hash_password(PASSWORD, ln=cost)
    accts = accounts or {
        "TS0001": Acct("TS0001", "full", h),
        "DS0001": Acct("DS0001", "full", h, active=False),
        "MF0001": Acct("MF0001", "full", h, totp="sealed"),
        "IN0001": Acct("IN0001", "investigator", h),
        "AD0001": Acct("AD0001", "admin", h, totp="sealed"),
    }
    return AuthService(accounts=accts.get, store=store or FakeStore(), open_totp=lambda a: SECRET, cost=cost,
                       clock=clock or Clock(), rehash=rehash), accts


@pytest.fixture
def kdf_calls(monkeypatch):
    """Every KDF run: the parameters of the hash it checked against."""
    calls = []
    real = passwords.verify_password

    def counting(pw, encoded):
        calls.append((passwords.params_of(encoded), encoded))
        return real(pw, encoded)

    monkeypatch.setattr(passwords, "verify_password", counting)
    return calls


def test_a_right_password_logs_on_and_clears_the_failures():
    svc, _ = make()
    assert not svc.authenticate("TS0001", "wrong one", None).ok
    a = svc.authenticate("TS0001", PASSWORD, None)
    assert a.ok and a.account.id == "TS0001" and a.refusal is None
    assert svc.store.rows["TS0001"] == Attempts()
    assert svc.store.logons["TS0001"] == svc.clock()


# (user, password, otp, roles) → the reason the journal gets; the caller sees only ok=False.
REFUSALS = [
    ("NOSUCH", PASSWORD, None, None, Refusal.UNKNOWN),
    ("TS0001", "wrong password", None, None, Refusal.PASSWORD),
    ("TS0001", PASSWORD.upper(), None, None, Refusal.PASSWORD),
    ("TS0001", PASSWORD + " ", None, None, Refusal.PASSWORD),  # never truncated or trimmed
    ("MF0001", PASSWORD, "000000", None, Refusal.OTP),
    ("MF0001", PASSWORD, None, None, Refusal.OTP),
    ("MF0001", PASSWORD, "abcdef", None, Refusal.OTP),
    ("DS0001", PASSWORD, None, None, Refusal.DISABLED),
    ("DS0001", "wrong password", None, None, Refusal.PASSWORD),
    ("TS0001", PASSWORD, None, ("admin",), Refusal.ROLE),
    ("IN0001", PASSWORD, None, ("admin",), Refusal.ROLE),
    ("ts0001", PASSWORD, None, None, Refusal.UNKNOWN),  # user IDs are exact
]


@pytest.mark.parametrize(("uid", "pw", "otp", "roles", "reason"), REFUSALS)
def test_every_refusal_looks_the_same_and_costs_the_same(uid, pw, otp, roles, reason, kdf_calls):
    svc, _ = make()
    a = svc.authenticate(uid, pw, otp, roles=roles)
    assert (a.ok, a.account, a.refusal) == (False, None, reason)
    # One KDF at the current cost, two writes of the attempts row (reserve, settle).
    assert [p for p, _ in kdf_calls] == [(COST, 8, 1)]
    assert sum(svc.store.writes.values()) == 2


def test_a_locked_account_is_refused_with_the_same_cost_even_with_the_right_password(kdf_calls):
    svc, _ = make()
    for _ in range(5):
        assert svc.authenticate("TS0001", "wrong", None).refusal is Refusal.PASSWORD
    assert svc.is_locked("TS0001")
    kdf_calls.clear()
    writes = dict(svc.store.writes)
    a = svc.authenticate("TS0001", PASSWORD, None)
    assert (a.ok, a.refusal) == (False, Refusal.LOCKED)
    assert [p for p, _ in kdf_calls] == [(COST, 8, 1)] and svc.store.writes["TS0001"] - writes["TS0001"] == 2


def test_five_failures_in_the_window_lock_until_unlocked_and_older_ones_expire():
    clock = Clock()
    svc, _ = make(clock=clock)
    for _ in range(4):
        assert not svc.authenticate("TS0001", "wrong", None).locked_now
    clock.t += 15 * 60 + 1  # the four fall out of the 15-minute window
    for _ in range(4):
        assert not svc.authenticate("TS0001", "wrong", None).locked_now
    assert not svc.is_locked("TS0001")
    assert svc.authenticate("TS0001", "wrong", None).locked_now  # the 5th inside the window
    assert svc.is_locked("TS0001") and svc.oif_account("TS0001") is None
    clock.t += 86400  # locked "until an administrator releases it", not until a timer runs out
    assert not svc.authenticate("TS0001", PASSWORD, None).ok
    assert svc.unlock("TS0001")
    assert svc.authenticate("TS0001", PASSWORD, None).ok and svc.oif_account("TS0001") is not None


def test_unknown_users_leave_no_state_of_their_own():
    svc, _ = make()
    for uid in ("NOSUCH", "ZZ9999", "AAAAAA"):
        svc.authenticate(uid, "x" * 10, None)
    assert set(svc.store.rows) == {UNKNOWN_ROW}


def test_each_totp_step_is_accepted_once_within_the_drift():
    clock = Clock()
    svc, _ = make(clock=clock)
    code = totp.code_at(SECRET, clock())
    assert svc.authenticate("MF0001", PASSWORD, code).ok
    assert svc.authenticate("MF0001", PASSWORD, code).refusal is Refusal.OTP  # replayed
    # The previous step's code is within the drift, but older than the one used: refused.
    assert not svc.authenticate("MF0001", PASSWORD, totp.code_at(SECRET, clock() - 30)).ok
    assert svc.authenticate("MF0001", PASSWORD, totp.code_at(SECRET, clock() + 30)).ok  # the next step
    assert not svc.authenticate("MF0001", PASSWORD, totp.code_at(SECRET, clock() + 90)).ok  # beyond the drift
    svc.store.rows["MF0001"] = Attempts()
    clock.t += 60
    assert svc.authenticate("MF0001", PASSWORD, totp.code_at(SECRET, clock())).ok


def test_a_wrong_password_does_not_burn_the_otp_step():
    clock = Clock()
    svc, _ = make(clock=clock)
    code = totp.code_at(SECRET, clock())
    assert svc.authenticate("MF0001", "wrong", code).refusal is Refusal.PASSWORD
    assert svc.authenticate("MF0001", PASSWORD, code).ok


def test_an_unreadable_totp_secret_refuses():
    accounts = {"MF0001": Acct("MF0001", "full", passwords.hash_password(PASSWORD, ln=COST), totp="broken")}

    def broken(_a):
        raise ValueError("tag")

    svc = AuthService(accounts=accounts.get, store=FakeStore(), open_totp=broken, cost=COST, clock=Clock())
    assert svc.authenticate("MF0001", PASSWORD, "123456").refusal is Refusal.OTP


def test_a_hash_at_another_cost_is_replaced_at_the_next_logon():
    stored = {}

    def rehash(uid, old, new):
        stored[uid] = (old, new)
        return True

    old_hash = passwords.hash_password(PASSWORD, ln=COST)
    accounts = {"TS0001": Acct("TS0001", "full", old_hash)}
    svc = AuthService(accounts=accounts.get, store=FakeStore(), open_totp=lambda a: SECRET, cost=COST + 1,
                      clock=Clock(), rehash=rehash)
    assert not svc.authenticate("TS0001", "wrong", None).rehashed and not stored  # only on success
    a = svc.authenticate("TS0001", PASSWORD, None)
    assert a.ok and a.rehashed
    old, new = stored["TS0001"]
    assert old == old_hash and passwords.params_of(new) == (COST + 1, 8, 1)
    assert passwords.verify_password(PASSWORD, new)
    # At the current cost already: nothing to do.
    accounts["TS0001"] = Acct("TS0001", "full", new)
    stored.clear()
    assert svc.authenticate("TS0001", PASSWORD, None).ok and not stored


def test_unknown_users_cost_what_known_users_cost():
    svc, _ = make(cost=COST + 2)
    assert passwords.params_of(passwords.dummy_hash(svc.cost)) == (COST + 2, 8, 1)


def test_password_change_needs_the_old_password_counts_failures_and_not_when_locked():
    svc, _ = make()
    assert svc.change_password("TS0001", [("wrong", "New Secret 1")]).refusal is Refusal.PASSWORD
    a = svc.change_password("TS0001", [("correct", "horse battery.x"), (PASSWORD, "x.y")])
    assert a.ok and a.new_password == "x.y"
    for _ in range(5):
        svc.authenticate("TS0001", "wrong", None)
    a = svc.change_password("TS0001", [(PASSWORD, "Another Secret 2")])
    assert (a.ok, a.refusal) == (False, Refusal.LOCKED)
    assert svc.change_password("DS0001", [(PASSWORD, "Another Secret 2")]).refusal is Refusal.DISABLED


@pytest.mark.parametrize("n", [40, 200])
def test_simultaneous_guesses_check_at_most_five_passwords(n, kdf_calls, tmp_path):
    """The issue's attack on the real state store: n logons at once, n-1 wrong and the right one
    last. At most 5 passwords are checked against the user's hash; the right one is refused."""
    store = StateStore(tmp_path / "state.db")
    h = passwords.hash_password(PASSWORD, ln=COST)
    accounts = {"TS0001": Acct("TS0001", "full", h)}
    svc = AuthService(accounts=accounts.get, store=store, open_totp=lambda a: SECRET, cost=COST, clock=Clock())
    kdf_calls.clear()
    guesses = [f"wrong guess {i}" for i in range(n - 1)] + [PASSWORD]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda pw: svc.authenticate("TS0001", pw, None), guesses))
    assert not any(r.ok for r in results)
    assert results[-1].refusal is Refusal.LOCKED
    assert sum(r.locked_now for r in results) == 1
    assert len(kdf_calls) == n  # every attempt costs one KDF at the same cost …
    assert {p for p, _ in kdf_calls} == {passwords.params_of(h)}
    assert sum(1 for _, e in kdf_calls if e == h) <= 5  # … but at most 5 are checks of the password
    assert store.locked_users() == {"TS0001"}
    store.close()


def test_two_services_on_one_state_file_share_the_lockout_and_the_otp_steps(tmp_path):
    """The switch and an ``msc`` command are two processes with one state.db."""
    clock = Clock()
    a_store, b_store = StateStore(tmp_path / "state.db"), StateStore(tmp_path / "state.db")
    a, _ = make(store=a_store, clock=clock)
    b, _ = make(store=b_store, clock=clock)
    code = totp.code_at(SECRET, clock())
    assert a.authenticate("MF0001", PASSWORD, code).ok
    assert b.authenticate("MF0001", PASSWORD, code).refusal is Refusal.OTP
    for svc in (a, b, a, b):
        svc.authenticate("TS0001", "wrong", None)
    assert b.authenticate("TS0001", "wrong", None).locked_now
    assert a.authenticate("TS0001", PASSWORD, None).refusal is Refusal.LOCKED
    a.refresh()  # a's cached view (host OIF checks) catches up on refresh
    assert a.is_locked("TS0001") and a.oif_account("TS0001") is None
    b.unlock("TS0001")
    a.refresh()
    assert a.authenticate("TS0001", PASSWORD, None).ok
    a_store.close()
    b_store.close()


def test_lockout_rule_is_pure():
    rule = LockoutRule(max_failures=2, window_s=10)
    a, ok = rule.reserve(Attempts(), 0)
    assert ok and a.failures == (0,)
    a, ok = rule.reserve(a, 1)
    assert ok and a.failures == (0, 1)
    a2, ok = rule.reserve(a, 2)
    assert not ok and a2 == a  # two in flight: the third is not checked
    a, locked = rule.failed(a, 2)
    assert locked and a.locked and a.failures == ()
    assert rule.succeeded(a, 3) == (a, False)
    assert rule.reserve(Attempts((0, 1)), 20)[0].failures == (20,)  # expired ones drop out
