"""One outage, one warning (msc.outage) for the control socket: a request that needs the run-time
state while its database is away is refused ``{"ok": false, "error": "storage unavailable: …"}``
as before, but ``control.storage_unavailable`` is said once per outage — not once per request
(a script or the web console retrying flooded the log) — and ``control.storage_available`` once
when such a request succeeds again, with how many were refused. OPERATIONS.md "One outage, one
warning"; against a real PostgreSQL: tests/integration/test_pg_storage_outage.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from structlog.testing import capture_logs

from msc.server.control import ControlServer
from msc.storage.errors import StorageUnavailable

REFUSED = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): ConnectionRefusedError: refused")
STARTING = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): CannotConnectNowError: starting up")
OK = "ok"


class Switch:
    """The switch's control handlers as the socket calls them: each call that uses the run-time
    state (unlock, station, auth_changed) meets the next item of ``script``."""

    def __init__(self, script: list) -> None:
        self.script = list(script)

    async def _state(self, _req) -> dict:
        item = self.script.pop(0) if self.script else OK
        if isinstance(item, BaseException):
            raise item
        return {"ok": True}

    control_unlock = control_station = control_auth_changed = _state

    async def control_ping(self, _req) -> dict:
        return {"ok": True}

    control_users_changed = control_checkpoint = control_purge = control_verify_failed = control_ping


class Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


async def ask(server: ControlServer, *requests: dict) -> list[dict]:
    """One connection's requests, each answered on its own line."""
    reader = asyncio.StreamReader()
    reader.feed_data(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    reader.feed_eof()
    w = Writer()
    await server._handle(reader, w)  # type: ignore[arg-type]
    return [json.loads(line) for line in bytes(w.out).splitlines()]


UNLOCK = {"op": "unlock", "id": "TS0002"}
STATION = {"op": "station", "mnemonic": "ICS9", "disabled": False}
PING = {"op": "ping"}


def said(logs: list[dict]) -> list[tuple]:
    return [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("control.")]


async def test_requests_refused_through_one_outage_warn_once_and_their_recovery_counts_them():
    server = ControlServer(Switch([REFUSED, REFUSED, STARTING, REFUSED, REFUSED]), Path("/nonexistent"))
    with capture_logs() as logs:
        replies = await ask(server, UNLOCK, STATION, {"op": "auth_changed"}, UNLOCK)
        replies += await ask(server, STATION)  # another connection: the same outage
        # Neither a ping nor a bad request ends it (they do not use the state); the unlock that works does.
        replies += await ask(server, PING, {"op": "nonsense"}, UNLOCK)
    # What the client is told is unchanged: each refused, with the cause.
    assert [r["ok"] for r in replies] == [False] * 5 + [True, False, True]
    assert replies[0]["error"] == f"storage unavailable: {REFUSED}"
    assert replies[2]["error"] == f"storage unavailable: {STARTING}"
    assert said(logs) == [("control.storage_unavailable", "warning"), ("control.storage_available", "info")]
    began, ended = (e for e in logs if e["event"].startswith("control."))
    assert began["error"] == str(REFUSED) and began["op"] == "unlock" and "exc_info" not in began
    assert ended["was"] == str(REFUSED) and ended["refused"] == 5 and ended["op"] == "unlock"


async def test_a_second_outage_is_said_again():
    server = ControlServer(Switch([REFUSED, OK, STARTING, STARTING, OK]), Path("/nonexistent"))
    with capture_logs() as logs:
        replies = await ask(server, UNLOCK, UNLOCK, STATION, STATION, STATION)
    assert [r["ok"] for r in replies] == [False, True, False, False, True]
    assert said(logs) == [("control.storage_unavailable", "warning"), ("control.storage_available", "info")] * 2
    assert [e.get("refused") for e in logs if e["event"] == "control.storage_available"] == [1, 2]



async def test_state_db_locked_or_failing_is_refused_and_said_once_like_postgresql():
    """The embedded SQLite backend: ``state.db`` locked beyond its busy timeout, or its disk
    failing, raises ``sqlite3.OperationalError`` — refused ``storage unavailable`` naming
    state.db, said once per outage (it escaped the handler: asyncio's "Unhandled exception in
    client_connected_cb" with a traceback per request, and no answer for the client)."""
    import sqlite3

    locked = sqlite3.OperationalError("database is locked")
    server = ControlServer(Switch([locked, sqlite3.OperationalError("disk I/O error"), locked]), Path("/nonexistent"))
    with capture_logs() as logs:
        replies = await ask(server, UNLOCK, STATION, UNLOCK, UNLOCK)
    assert [r["ok"] for r in replies] == [False, False, False, True]
    assert replies[0]["error"] == "storage unavailable: run-time state (state.db): OperationalError: database is locked"
    assert said(logs) == [("control.storage_unavailable", "warning"), ("control.storage_available", "info")]
    assert [e.get("refused") for e in logs if e["event"] == "control.storage_available"] == [3]
