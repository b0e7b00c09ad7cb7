"""The daemon's local control socket (``data_dir/control.sock``, mode 0600).

The ``msc`` CLI uses it for what must happen *inside* the running switch: journal an ``ADMIN``
or ``AUDIT`` record (the daemon is the journal's only writer while it runs), and apply user and
station changes at once. One JSON object per line each way. Only local processes that can open
a 0600 socket in the 0700 data directory (the msc service account, root) reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from msc.journal.records import Entry, JournalError
from msc.outage import Outage
from msc.reasons import explain
from msc.storage.errors import STATE_ERRORS

log = structlog.get_logger("msc.control")

MAX_LINE = 1024 * 1024


# -- the requests: one typed struct per operation, tagged by its "op" -------------------------------
# A line that is not one of them (an unknown op, a missing or mistyped field) is answered
# {"ok": false, "error": "bad request: …"}; nothing is looked up by a name the client chose.

class _Op(msgspec.Struct, tag_field="op", forbid_unknown_fields=False):
    pass


class Record(_Op, tag="record"):
    """Journal these entries (the daemon is the journal's only writer while it runs)."""

    entries: list[Entry]


class Ping(_Op, tag="ping"):
    pass


class UsersChanged(_Op, tag="users_changed"):
    """users.toml changed: re-read it."""


class AuthChanged(_Op, tag="auth_changed"):
    """Logon state in state.db changed (a lockout, an unlock): re-read it."""


class Unlock(_Op, tag="unlock"):
    id: str


class Station(_Op, tag="station"):
    mnemonic: str
    disabled: bool


class Checkpoint(_Op, tag="checkpoint"):
    pass


class Purge(_Op, tag="purge"):
    actor: str | None = None


class VerifyFailed(_Op, tag="verify_failed"):
    first_bad: int | None = None


Request = Record | Ping | UsersChanged | AuthChanged | Unlock | Station | Checkpoint | Purge | VerifyFailed
_decoder = msgspec.json.Decoder(Request)

#: The requests that use the run-time state (an account's lockout, a station's status): one that
#: succeeds shows that its database answers again (``control.storage_available``).
STATE_OPS = (Unlock, Station, AuthChanged)


def decode(line: bytes) -> Request:
    """One request line. Raises ``msgspec.ValidationError``/``DecodeError`` for anything else."""
    return _decoder.decode(line)


def _op(req: Request | None) -> str | None:
    """A request's ``op`` (its tag), for a log line."""
    return None if req is None else type(req).__struct_config__.tag  # type: ignore[return-value]


class ControlServer:
    def __init__(self, switch: Any, path: Path) -> None:
        self.switch = switch
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        sw = switch
        self.handlers: dict[type, Callable[[Any], Awaitable[dict[str, Any]]]] = {
            Ping: sw.control_ping, UsersChanged: sw.control_users_changed, AuthChanged: sw.control_auth_changed,
            Unlock: sw.control_unlock, Station: sw.control_station, Checkpoint: sw.control_checkpoint,
            Purge: sw.control_purge, VerifyFailed: sw.control_verify_failed,
        }
        #: The run-time state's database away: every request that needs it is refused ``ok:
        #: false``, but said once per outage (a script or the web console retrying was a line per
        #: request), and once when a request that needs it succeeds again (msc.outage).
        self.storage = Outage("control.storage_unavailable", "control.storage_available", logger=log,
                              counted="refused")

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                req: Request | None = None
                try:
                    req = decode(line)
                    reply = await self.dispatch(req)
                except (ValueError, KeyError, TypeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except JournalError as exc:
                    reply = {"ok": False, "error": f"journal: {exc}"}
                except STATE_ERRORS as exc:  # the run-time state's database is away: refused, said why
                    # (PostgreSQL's StorageUnavailable names the store and the server; SQLite's
                    # OperationalError — state.db locked or failing — does not: it escaped here, a
                    # traceback per request and the client left with no answer.)
                    why = str(exc) if isinstance(exc, OSError) else f"run-time state (state.db): {explain(exc)}"
                    self.storage.failed(why, op=_op(req))
                    reply = {"ok": False, "error": f"storage unavailable: {why}"}
                else:
                    if isinstance(req, STATE_OPS) and reply.get("ok"):
                        self.storage.ok(op=_op(req))
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # The process is ending with a request pending (its client gets end-of-file: the
            # outcome is unknown to it). Ended quietly: Python 3.11's stream server would log a
            # CancelledError traceback for a cancelled handler (ops/http.py says why).
            pass
        finally:
            writer.close()

    async def dispatch(self, req: Request) -> dict[str, Any]:
        if isinstance(req, Record):
            seqs = await self.switch.journal.append(*req.entries)
            return {"ok": True, "seqs": seqs}
        return await self.handlers[type(req)](req)
