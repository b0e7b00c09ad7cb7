"""The operations endpoint: ``GET /metrics``, ``/healthz``, ``/readyz`` (OPERATIONS.md).

A deliberately small HTTP/1.1 responder on the switch's own event loop (one request per
connection, bounded request size and time). The Prometheus text itself is produced by
prometheus-client; nothing here formats metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog

from msc.aio import bounded
from msc.config.validate import parse_hostport

log = structlog.get_logger("msc.ops")

MAX_REQUEST = 8192
REQUEST_TIMEOUT_S = 5.0


class OpsServer:
    def __init__(self, switch: Any) -> None:
        self.switch = switch
        self.server: asyncio.Server | None = None

    async def start(self, bind: str) -> None:
        host, port = parse_hostport(bind)
        self.server = await asyncio.start_server(self._handle, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self.server is None:
            raise RuntimeError("the HTTP endpoint is not started")
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await bounded(self.server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request. A request still pending when the process ends (a load balancer's
        ``/readyz`` to a node paused and then stepping down) is cancelled: its connection closes
        and the task ends quietly — on Python 3.11 asyncio's stream server calls
        ``task.exception()`` on a cancelled handler and logs a ``CancelledError`` traceback
        (3.12 checks ``task.cancelled()`` first), a non-JSON line in the JSON log."""
        try:
            await self._respond(reader, writer)
        except asyncio.CancelledError:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await bounded(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        if len(head) > MAX_REQUEST:
            writer.close()
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, ctype, body = 405, "text/plain", b"method not allowed\n"
        elif path == "/metrics":
            self.switch.refresh_gauges() if hasattr(self.switch, "refresh_gauges") else None
            # In a worker thread: a collector reads the shared logon counts from the run-time
            # state, which may be a PostgreSQL database that is slow or restarting.
            body, ctype = await asyncio.to_thread(self.switch.metrics.exposition)
            status = 200
        elif path == "/healthz":
            status, ctype, body = 200, "application/json", b'{"status":"ok"}\n'
        elif path == "/readyz":
            ready, reasons = self.switch.readiness()
            status = 200 if ready else 503
            ctype = "application/json"
            node = self.switch.node_status() if hasattr(self.switch, "node_status") else None
            standby = node is not None and node["role"] != "active"
            doc = {"status": "ready" if ready else "standby" if standby else "not ready", "reasons": reasons}
            if node is not None:
                doc["node"] = node
            if (key_ring := getattr(self.switch, "key_ring_problem", None)) is not None:
                doc["key_ring"] = key_ring  # keyring.unusable; an active node serves on with the keys it holds
            if (refused := getattr(self.switch, "last_reload_error", None)) is not None:
                doc["last_reload_error"] = refused  # the running configuration was kept
            body = (json.dumps(doc) + "\n").encode()
        else:
            status, ctype, body = 404, "text/plain", b"not found\n"
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode() + (body if method != "HEAD" else b"")
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
