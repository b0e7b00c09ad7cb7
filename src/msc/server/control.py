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
from pathlib import Path
from typing import Any

import msgspec
import structlog

from msc.journal.records import Entry, JournalError

log = structlog.get_logger("msc.control")

MAX_LINE = 1024 * 1024


class ControlServer:
    def __init__(self, switch: Any, path: Path) -> None:
        self.switch = switch
        self.path = path
        self.server: asyncio.AbstractServer | None = None

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
                try:
                    req = json.loads(line)
                    reply = await self.dispatch(req)
                except (ValueError, KeyError, TypeError, msgspec.ValidationError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except JournalError as exc:
                    reply = {"ok": False, "error": f"journal: {exc}"}
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def dispatch(self, req: dict) -> dict:
        op = req["op"]
        if op == "record":
            entries = msgspec.convert(req["entries"], list[Entry])
            seqs = await self.switch.journal.append(*entries)
            return {"ok": True, "seqs": seqs}
        handler = getattr(self.switch, f"control_{op}", None)
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return await handler(req)
