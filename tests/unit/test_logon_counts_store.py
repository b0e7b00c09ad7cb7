"""The shared logon counts of state.db (SECURITY.md AC-7): counted by the auth service in the
attempt's own transaction, the same numbers seen by every process that opens the file."""

from __future__ import annotations

import pytest

from msc.mnemonics import passwords
from msc.mnemonics.auth import AuthService
from msc.mnemonics.state import StateStore
from tests.conftest import PASSWORD, TEST_COST


class Acct:
    def __init__(self, uid: str, active: bool = True) -> None:
        self.id, self.role, self.totp, self.active = uid, "full", None, active
        self.password_hash = passwords.hash_password(PASSWORD, ln=TEST_COST)


ACCOUNTS = {"TS0001": Acct("TS0001"), "DS0001": Acct("DS0001", active=False)}


def service(store: StateStore, via: str) -> AuthService:
    return AuthService(accounts=ACCOUNTS.get, store=store, open_totp=lambda a: b"", cost=TEST_COST, via=via)


# (attempts: (via, user, password, "logon"|"pwd")), expected counts
ROWS = [
    ([("cli", "TS0001", "x", "logon")] * 5, {("cli", "failure"): 5, ("cli", "lockout"): 1}),
    ([("web", "TS0001", "x", "logon")] * 6, {("web", "failure"): 6, ("web", "lockout"): 1}),
    ([("terminal", "TS0001", PASSWORD, "logon")] * 3, {}),  # successes count nothing
    ([("cli", "NOSUCH", "x", "logon")] * 7, {("cli", "failure"): 7}),  # the unknown-ID row is no account
    ([("pwd", "TS0001", "x", "pwd")] * 5, {("pwd", "failure"): 5, ("pwd", "lockout"): 1}),
    ([("pwd", "NOSUCH", "x", "pwd")] * 2, {("pwd", "failure"): 2}),
    ([("cli", "DS0001", PASSWORD, "logon")], {("cli", "failure"): 1}),  # disabled: refused, counted
    ([("cli", "TS0001", "x", "logon")] * 4 + [("pool", "TS0001", "x", "logon"), ("cli", "TS0001", PASSWORD, "logon")],
     {("cli", "failure"): 5, ("pool", "failure"): 1, ("pool", "lockout"): 1}),
]


@pytest.mark.parametrize(("attempts", "expected"), ROWS)
def test_counts_are_shared_by_every_process(tmp_path, attempts, expected):
    path = tmp_path / "state.db"
    one, other = StateStore(path), StateStore(path)  # two processes: a command and the switch
    try:
        for via, user, password, how in attempts:
            svc = service(one, via)
            if how == "logon":
                svc.authenticate(user, password, None)
            else:
                svc.change_password(user, [(password, "a brand new passphrase")], via=via)
        assert other.auth_counts() == expected
    finally:
        one.close()
        other.close()
