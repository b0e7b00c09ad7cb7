"""One outage, one warning (msc.outage) in the web console (``msc web``, a process of its own that
opens the storage for each request through msc.actions): an investigator's or administrator's
logon while the run-time state's database is away is answered 503 ``STORAGE UNAVAILABLE, TRY
AGAIN`` as before, but ``web.storage_unavailable`` is said once per outage of the process, not per
attempt (a browser retrying flooded the log); likewise a logon the journal cannot record (503,
``web.logon_not_journaled``, an error) and a console's logoff record refused
(``web.session_end_failed``: every idle session the sweep ended said it, an OSError with a
traceback). Each says when it works again, with how many were refused. OPERATIONS.md "One
outage, one warning"."""

from __future__ import annotations

import json
import time

import pytest
from structlog.testing import capture_logs

from msc.config.load import load
from msc.journal.records import JournalError
from msc.mnemonics.auth import Attempt
from msc.storage.errors import StorageUnavailable
from msc.web import app as web_app
from msc.web import logon as web_logon
from msc.web.app import WebConsole
from msc.web.sessions import WebSession
from tests.conftest import make_config
from tests.unit.test_web_sessions import WEB

REFUSED = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): ConnectionRefusedError: refused")
STARTING = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): CannotConnectNowError: starting up")
NO_JOURNAL = JournalError("journal: journal database: ConnectionRefusedError: refused")
OK = "ok"


@pytest.fixture
def console(tmp_path):
    (tmp_path / "tls").mkdir()
    for f in ("web.crt", "web.key"):
        (tmp_path / "tls" / f).write_text("x")
    return WebConsole(load(make_config(tmp_path, extra=WEB)))


class Script:
    """A call that meets the next item of ``script`` (an exception: raised), then ``result``."""

    def __init__(self, script: list, result) -> None:
        self.script, self.result, self.calls = list(script), result, 0

    def __call__(self, *_a, **_kw):
        self.calls += 1
        item = self.script.pop(0) if self.script else OK
        if isinstance(item, BaseException):
            raise item
        return self.result


def said(logs: list[dict], prefix: str = "web.") -> list[tuple]:
    return [(e["event"], e["log_level"]) for e in logs
            if e["event"].startswith(prefix) and e["event"] not in ("web.logon", "web.session_ended")]


async def logon(console: WebConsole) -> tuple[int, dict]:
    s = WebSession(sid="x", created=time.monotonic(), banner="b")
    resp = await console._console_logon(None, s, "investigator", "INV001", "a password", "")  # type: ignore[arg-type]
    return resp.status_code, json.loads(bytes(resp.body))


async def test_logons_refused_through_one_outage_are_said_once_each_and_their_recovery(console, monkeypatch):
    refused = Attempt(user_id="INV001", ok=False)
    monkeypatch.setattr(web_logon.identity, "authenticate", Script([REFUSED, STARTING, REFUSED], (refused, [])))
    monkeypatch.setattr(web_logon, "record", Script([NO_JOURNAL, NO_JOURNAL], [1]))
    with capture_logs() as logs:
        answers = [await logon(console) for _ in range(6)]
    # What the browser is told is unchanged.
    assert answers == [(503, {"error": "STORAGE UNAVAILABLE, TRY AGAIN"})] * 3 + [
        (503, {"error": "the journal cannot record the logon: refused (fail closed)"})] * 2 + [
        (403, {"error": "LOGON REFUSED"})]
    assert said(logs) == [("web.storage_unavailable", "warning"), ("web.storage_available", "info"),
                          ("web.logon_not_journaled", "error"), ("web.logon_journaled", "info")]
    by = {e["event"]: e for e in logs}
    assert by["web.storage_unavailable"]["error"] == str(REFUSED) and "exc_info" not in by["web.storage_unavailable"]
    assert by["web.storage_unavailable"]["console"] == "investigator"
    assert (by["web.storage_available"]["was"], by["web.storage_available"]["refused"]) == (str(REFUSED), 3)
    assert by["web.logon_not_journaled"]["error"] == str(NO_JOURNAL)
    assert (by["web.logon_journaled"]["was"], by["web.logon_journaled"]["refused"]) == (str(NO_JOURNAL), 2)


async def test_a_second_outage_is_said_again(console, monkeypatch):
    refused = Attempt(user_id="INV001", ok=False)
    monkeypatch.setattr(web_logon.identity, "authenticate", Script([REFUSED, OK, STARTING, STARTING], (refused, [])))
    monkeypatch.setattr(web_logon, "record", Script([], [1]))
    with capture_logs() as logs:
        codes = [(await logon(console))[0] for _ in range(5)]
    assert codes == [503, 403, 503, 503, 403]
    assert said(logs) == [("web.storage_unavailable", "warning"), ("web.storage_available", "info")] * 2
    assert [e["error"] for e in logs if e["event"] == "web.storage_unavailable"] == [str(REFUSED), str(STARTING)]


def consoles(n: int) -> list[WebSession]:
    now = time.monotonic()
    return [WebSession(sid=f"s{i}", created=now, console="admin", user="ADM001", logon_at=now, last_activity=now)
            for i in range(n)]


async def test_console_logoffs_the_journal_refuses_are_said_once_per_outage(console, monkeypatch):
    """The sweep ends idle sessions one after another (end(), as _sweep calls it) and a link's end
    fires end() off (end_later): each logoff record refused — by the journal (JournalError) or by
    its database opened here (StorageUnavailable, an OSError) — is not a line of its own."""
    writes = Script([REFUSED, NO_JOURNAL, REFUSED, REFUSED], [1])
    monkeypatch.setattr(web_app, "record", writes)
    sessions = consoles(6)
    with capture_logs() as logs:
        for s in sessions[:4]:
            await console.end(s, "IDLE", logoff=True)
        await console.end(sessions[4], "SESSION MAXIMUM", logoff=True)  # recorded: the outage is over
        await console.end(sessions[5], "IDLE", logoff=True)
    assert writes.calls == 6 and all(s.ended for s in sessions)
    assert said(logs) == [("web.session_end_failed", "warning"), ("web.session_end_journaled", "info")]
    began, ended = (e for e in logs if e["event"] in ("web.session_end_failed", "web.session_end_journaled"))
    assert began["error"] == str(REFUSED) and began["console"] == "admin" and "exc_info" not in began
    assert (ended["was"], ended["refused"]) == (str(REFUSED), 4)
    assert [e["why"] for e in logs if e["event"] == "web.session_ended"] == ["IDLE"] * 4 + ["SESSION MAXIMUM", "IDLE"]


async def test_operator_logons_to_a_closed_switch_are_said_once_per_outage(console, monkeypatch):
    """The operator's logon is relayed to this machine's node: its listeners closed (the standby's
    ``msc web``, a stopped switch) answered each attempt 503 and said ``web.switch_unreachable``
    each time — a browser retrying flooded the log. Now once per outage, with why, and once when
    a logon reaches the switch again (``web.switch_reachable``, with ``refused``)."""
    from starlette.requests import Request

    from tests.conftest import free_port

    closed = ("127.0.0.1", free_port())  # nothing listens there
    monkeypatch.setattr(console, "switch_address", lambda: closed)
    request = Request({"type": "http", "method": "POST", "path": "/api/logon", "headers": [],
                       "client": ("127.0.0.1", 40000)})

    async def attempt() -> tuple[int, dict]:
        s = WebSession(sid="x", created=time.monotonic(), banner="b")
        resp = await console._operator_logon(request, s, "TS0001", "a password", "", "ABCD")
        return resp.status_code, json.loads(bytes(resp.body))

    with capture_logs() as logs:
        answers = [await attempt() for _ in range(4)]
    assert answers == [(503, {"error": "msc is not reachable; try again shortly"})] * 4
    assert said(logs) == [("web.switch_unreachable", "warning")]
    began = next(e for e in logs if e["event"] == "web.switch_unreachable")
    assert "ConnectionRefusedError" in began["error"] and began["console"] == "operator" and "exc_info" not in began
    assert console.switch.failures == 4

    # A switch that answers again (its banner differs from what this session acknowledged: the
    # logon stops there, 409, but the switch was reached) ends the outage.
    import asyncio

    async def banner_then_close(reader, writer):
        from msc.protocol import framing

        writer.write(framing.message(0, b"SYS.BANNER.ANOTHER BANNER"))
        await writer.drain()
        await reader.read()  # until the console closes its side
        writer.close()

    server = await asyncio.start_server(banner_then_close, "127.0.0.1", closed[1])
    try:
        with capture_logs() as logs:
            code, _body = await attempt()
    finally:
        server.close()
        await server.wait_closed()
    assert code == 409 and said(logs) == [("web.switch_reachable", "info")], (code, logs)
    ended = next(e for e in logs if e["event"] == "web.switch_reachable")
    assert ended["refused"] == 4 and "ConnectionRefusedError" in ended["was"]
