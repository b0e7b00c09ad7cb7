"""A text carrying a logon or password change — in any spelling the journal would redact
(PROTOCOL.md §7) — is neither relayed by the web console's message box nor given to
``msc terminal --send`` (a secret on the command line), and an option that is not a user ID or a
one-time password is refused without repeating it (it may be the password, newcomer trial)."""

from __future__ import annotations

import argparse
import json
import types

import pytest
from starlette.requests import Request

from msc.cli import options
from msc.web.operator import OperatorRoutes

SECRET = "demo-T4kdL0KLIhj6"
TEXTS = [f"LOGON.TS0001.-.{SECRET}", f"logon TS0001 - {SECRET}", f"ICS1.LOGON.TS0001.-.{SECRET}",
         f"PWD.{SECRET}.{SECRET}x", f"password {SECRET}", f"QW.LOG ON.TS0001.{SECRET}"]


@pytest.mark.parametrize("text", TEXTS)
def test_send_refuses_a_secret_text_without_repeating_it(text):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        options.message_text(text)
    assert SECRET not in str(exc.value)


def test_send_takes_other_traffic():
    assert options.message_text("QV.CA0130000.LIC/PWD123") == "QV.CA0130000.LIC/PWD123"


@pytest.mark.parametrize("value", [SECRET, "Pass.word-123"])
def test_user_and_otp_options_do_not_repeat_what_was_given(value):
    for check in (options.user_id, options.otp):
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            check(value)
        assert value not in str(exc.value) and "Pass." not in str(exc.value)


class _Link:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def request(self, text: str):
        self.sent.append(text)
        raise AssertionError("relayed")


def _request(text: str) -> Request:
    body = json.dumps({"text": text}).encode()

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/api/send", "headers": []}, receive)


@pytest.mark.parametrize("text", TEXTS)
async def test_the_web_console_does_not_relay_a_secret_text(text):
    link = _Link()
    session = types.SimpleNamespace(link=link, requests={}, mnemonic="ICS1")
    routes = types.SimpleNamespace(authed=lambda request, console: session)
    resp = await OperatorRoutes.send(routes, _request(text))  # type: ignore[arg-type]
    assert resp.status_code == 400
    assert link.sent == [] and session.requests == {}
    assert SECRET not in resp.body.decode()
