"""The web console's investigator's and administrator's routes while the storage is away: a real
``msc web`` process driven over HTTPS, its log read as an operator would.

Before, every route but the logon caught only JournalError: PostgreSQL stopped (StorageUnavailable)
or, on the embedded SQLite backend, ``state.db`` locked or failing (``sqlite3.OperationalError``,
which the logon did not catch either) was a 500 and uvicorn's "Exception in ASGI application" with
its traceback per request. Now each is answered 503 with ``Retry-After`` — JSON for the page's own
requests, a short page in the console's style for a navigation — and the outage is said once when
it starts and once when a route works again (``web.storage_unavailable`` / ``web.storage_available``
with ``refused``; docs/WEB.md "When the storage is away", OPERATIONS.md "One outage, one warning").

This module: SQLite, ``state.db`` held by another connection's ``BEGIN EXCLUSIVE`` (each refused
request waits out the 10 s busy timeout first). PostgreSQL stopped under a running switch:
tests/integration/test_pg_storage_outage.py, with :class:`Browser` and :func:`events` from here.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from msc.config.load import load
from tests.conftest import PASSWORD, WEB_CONSOLE, free_port, make_config
from tests.e2e.conftest import Proc, wait_for

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.timeout(240)

WEB = WEB_CONSOLE
#: What the page's own requests are told (the logon keeps its shorter, older words).
UNAVAILABLE = "STORAGE UNAVAILABLE, TRY AGAIN: msc's storage (its database) cannot be used right now"
MAYBE_DONE = "check whether it was done before you repeat it"
NAVIGATION = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # a browser's form submit


class Browser:
    """One browser session with the console (its cookies, the CSRF token), over a new connection
    per request: a refusal may take longer than uvicorn's 5-s keep-alive."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.c = httpx.AsyncClient(verify=False, timeout=60, headers={"connection": "close"})
        self.token = ""

    async def logon(self, console: str, user: str) -> httpx.Response:
        self.token = (await self.c.get(self.url + "/api/state")).json()["csrf"]
        assert (await self.post("/api/banner", {})).status_code == 200
        return await self.post("/api/logon", {"console": console, "user": user, "password": PASSWORD})

    async def post(self, path: str, body: dict, accept: str = "*/*") -> httpx.Response:
        return await self.c.post(self.url + path, json=body, headers={"x-csrftoken": self.token, "accept": accept})

    async def get(self, path: str, accept: str = "*/*") -> httpx.Response:
        return await self.c.get(self.url + path, headers={"accept": accept})

    async def export(self, case: str) -> httpx.Response:
        """The investigator's export form, submitted as the page does (a navigation: a download)."""
        return await self.c.post(self.url + "/api/journal/export", data={"case": case, "csrftoken": self.token},
                                 headers={"x-csrftoken": self.token, "accept": NAVIGATION})

    async def close(self) -> None:
        await self.c.aclose()


def start_web(cfg: Path, log: Path) -> Proc:
    ready = cfg.parent / "web.ready"
    ready.unlink(missing_ok=True)
    web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=log)
    wait_for(ready, web)
    return web


def events(log: Path) -> list[dict]:
    """The ``msc web`` process's log lines (JSON, one a line)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def assert_no_traceback(log: Path) -> None:
    text = log.read_text()
    assert "Exception in ASGI application" not in text and "Traceback" not in text, text[-3000:]
    assert not [e for e in events(log) if e.get("level") in ("error", "critical")], text[-3000:]


def assert_unavailable(r, *, changing: bool = False) -> None:
    """A refusal for the storage: 503, Retry-After, the JSON error (or the page), no reason."""
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert r.headers["retry-after"] == "10"
    if r.headers["content-type"].startswith("text/html"):
        assert "<h1 id=\"unavailable-title\">Storage unavailable</h1>" in r.text
        assert "msc's storage (its database) cannot be used right now" in r.text and "Try again" in r.text
        assert '<link rel="stylesheet" href="/static/app.css">' in r.text
    else:
        assert r.json()["error"].startswith(UNAVAILABLE), r.text
    assert (MAYBE_DONE in r.text) == changing, r.text
    for leak in ("OperationalError", "locked", "PostgreSQL", "127.0.0.1", "postgresql://", "Traceback"):
        assert leak not in r.text, (leak, r.text)


@pytest.fixture
def sqlite_site(tmp_path):
    from msc.web.certs import self_signed

    self_signed(tmp_path / "tls" / "web.crt", tmp_path / "tls" / "web.key")
    port = free_port()
    cfg = make_config(tmp_path, extra=WEB.format(web_listener=free_port(), web_port=port))
    web = start_web(cfg, tmp_path / "web.err")
    try:
        yield cfg, f"https://127.0.0.1:{port}", tmp_path / "web.err"
    finally:
        web.stop()


async def test_state_db_locked_is_refused_503_and_said_once_not_a_500_per_request(sqlite_site):
    cfg, url, log = sqlite_site
    admin = Browser(url)
    try:
        assert (await admin.logon("admin", "AD0001")).status_code == 200
        lock = sqlite3.connect(load(cfg).state_db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds state.db (beyond the 10 s busy timeout)
        try:
            unlock = await admin.post("/api/admin/user/status", {"id": "TS0002", "action": "unlock"})
            # A read goes through (WAL) but does not end the outage a write began: one pair of
            # lines for the whole lock, not one per read in between (msc.outage).
            assert (await admin.get("/api/admin/stations")).status_code == 200
            report = await admin.get("/api/admin/report/users", accept=NAVIGATION)
            late = Browser(url)
            try:
                logon = await late.logon("admin", "AD0001")
            finally:
                await late.close()
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert_unavailable(unlock, changing=True)  # an action: it may have been half done
        assert_unavailable(report)  # a navigation: the page, in the console's style
        assert report.headers["content-type"].startswith("text/html")
        assert (logon.status_code, logon.json(), logon.headers["retry-after"]) == (
            503, {"error": "STORAGE UNAVAILABLE, TRY AGAIN"}, "10")
        # The session is untouched: the same browser goes on once state.db is free again.
        assert (await admin.get("/api/admin/stations")).status_code == 200
        assert (await admin.post("/api/admin/user/status", {"id": "TS0002", "action": "unlock"})).status_code == 200
    finally:
        await admin.close()
    said = [e for e in events(log) if e["event"].startswith("web.storage_")]
    assert [e["event"] for e in said] == ["web.storage_unavailable", "web.storage_available"], said
    began, ended = said
    assert began["level"] == "warning" and began["path"] == "/api/admin/user/status"
    assert began["error"] == "SQLite: OperationalError: database is locked", began
    assert (ended["level"], ended["refused"], ended["was"]) == ("info", 3, began["error"]), ended
    assert_no_traceback(log)
