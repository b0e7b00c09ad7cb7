"""`msc user passwd` / `user add --as` on a terminal ask for the new password — and refuse one the
policy refuses — before the administrator's password and one-time code (newcomer9: the code was
used up by the logon, then the new password was refused, exit 2; the corrected command needed a
new code). With --password-stdin: tests/e2e/test_msc_command.py."""

from __future__ import annotations

import argparse
import getpass
import sys

import pytest

from msc.cli import users
from msc.config.load import load
from tests.conftest import PASSWORD, make_config


class Terminal:
    """getpass on a terminal: answers by prompt, and the prompts in the order asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked = answers, []

    def __call__(self, prompt: str = "") -> str:
        self.asked.append(prompt)
        return next(v for k, v in self.answers.items() if prompt.startswith(k))


@pytest.fixture
def terminal(monkeypatch):
    def make(answers):
        t = Terminal(answers)
        monkeypatch.setattr(getpass, "getpass", t)
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        return t
    return make


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(as_user="AD0001", password_stdin=False, **kw)


def test_a_refused_new_password_is_refused_before_the_administrator_is_asked(tmp_path, terminal, capsys):
    s = load(make_config(tmp_path))
    t = terminal({"New password": "New-ts0001-secret-x", "Repeat": "New-ts0001-secret-x"})
    with pytest.raises(SystemExit) as exc:
        users.user_passwd(_args(id="TS0001"), s)
    assert exc.value.code == users.EXIT_USAGE
    assert capsys.readouterr().err.strip() == "error: a password may not contain the user ID"
    assert t.asked == ["New password for TS0001: ", "Repeat it: "]  # never the administrator's password or code


def test_a_good_new_password_is_asked_first_then_the_administrator_logs_on(tmp_path, terminal):
    s = load(make_config(tmp_path))
    t = terminal({"New password": "a new and long secret", "Repeat": "a new and long secret",
                  "Password for AD0001": PASSWORD, "One-time password": ""})
    assert users.user_passwd(_args(id="TS0001"), s) == users.EXIT_OK
    assert [p.split(" for ")[0] for p in t.asked] == ["New password", "Repeat it: ", "Password", "One-time password"]
