"""The ``--as`` prompts of every ``msc`` command (newcomer8: the one-time password was echoed, so
a password typed there by mistake showed in clear): password and code are both read without echo,
an answer that is not a code is asked for again and never used, and ``--password-stdin`` reads
its lines exactly as before."""

from __future__ import annotations

import getpass
import io
import sys
from types import SimpleNamespace

import pytest

from msc.cli import auth

PROMPT = "One-time password for ADM001 (empty if none): "


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("typed,got,asked", [
    (["343002"], "343002", 1),
    ([""], "", 1),  # no TOTP
    (["343 002"], "343002", 1),  # as an authenticator app groups it
    (["Tsecret-Pass-8x", "343002"], "343002", 2),  # the password by mistake: not used, asked again
    (["12345", "1234567", "x", "343002"], "343002", 4),
])
def test_the_otp_is_read_without_echo_and_asked_again_until_it_is_a_code(monkeypatch, capsys, typed, got, asked):
    answers = iter(typed)
    prompts = []
    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr(getpass, "getpass", lambda prompt: prompts.append(prompt) or next(answers))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("input() echoes what is typed"))
    assert auth.read_otp(SimpleNamespace(password_stdin=False), PROMPT) == got
    assert prompts == [PROMPT] * asked
    err = capsys.readouterr().err
    assert err.count("That is not a one-time password") == asked - 1
    for wrong in typed[:-1]:
        assert wrong not in err


def test_password_stdin_lines_are_taken_as_written(monkeypatch):
    """A script's dialog is not second-guessed: its second line goes to the check as it is."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("Secret-Pass-1\n343002\n"))
    args = SimpleNamespace(password_stdin=True)
    assert auth.read_line(args, "Password: ") == "Secret-Pass-1"
    assert auth.read_otp(args, PROMPT) == "343002"
    assert auth.read_otp(args, PROMPT) is None  # no third line


def test_without_a_terminal_and_without_password_stdin_nothing_is_asked(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(getpass, "getpass", lambda prompt: pytest.fail("asked without a terminal"))
    assert auth.read_otp(SimpleNamespace(password_stdin=False), PROMPT) is None
