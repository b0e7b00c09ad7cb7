"""``msc stub``: a simulator of an upstream system (the CLETS host, NCIC, Nlets, DMV).

It speaks PROTOCOL.md §4 from the upstream's side: answers every ``M`` with ``A`` (or ``N`` at
``--fail-rate``), then sends the response as ``M`` ``HEADER.TEXT`` after ``--latency-ms``; it
answers heartbeats and sends its own; it pushes unsolicited traffic typed into its ``--control``
port (one message text per line, with ``\\r``, ``\\n``, ``\\t``, ``\\f`` and ``\\xHH`` for any byte;
the control client gets back ``A``, ``N <code> <reason>``, or ``NOCONN`` once the switch has
answered). ``--log`` records every message received, one per line, as received (CR and LF
inside a message are written as ``\\r`` and ``\\n``).

It shares only the wire format with the switch (``msc.protocol``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from dataclasses import dataclass, field
from typing import IO

from msc.protocol import framing
from msc.protocol.codes import FramingError, ProtocolError, Reject
from msc.protocol.framing import Framer
from msc.protocol.message import format_upstream, parse_input
from msc.stubs.responses import ROLE_KEYS, answer

HEARTBEAT_S = 30.0


@dataclass
class StubConfig:
    role: str = "clets"
    host: str = "127.0.0.1"
    port: int = 7501
    control: tuple[str, int] | None = None
    log_path: str | None = None
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    seed: int = 1
    heartbeat_s: float = HEARTBEAT_S
    tls_cert: str | None = None  # serve TLS (as a state switching centre would)
    tls_key: str | None = None


@dataclass
class Stats:
    received: int = 0
    answered: int = 0
    failed: int = 0
    unsolicited: int = 0
    started: float = field(default_factory=time.time)


class _Conn(asyncio.Protocol):
    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.framer = Framer(max_frame=1024 * 1024)
        self.transport: asyncio.Transport | None = None
        self.xid = 0
        self.waiting: dict[int, asyncio.Future] = {}
        self.hb_probe: int | None = None
        self.last_rx = self.last_tx = time.monotonic()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stub.conns.add(self)

    def connection_lost(self, exc) -> None:
        self.stub.conns.discard(self)
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_result("NOCONN")
        self.waiting.clear()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_tx = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.write(framing.nak(0, exc.code, exc.detail))
            self.transport.close()
            return
        out = []
        for f in frames:
            if f.type == framing.MSG:
                self.stub._request(self, f.xid, f.payload, out)
            elif f.type == framing.HEARTBEAT:
                # Answer probes; an H carrying our own probe's xid is the answer to it.
                if f.xid == self.hb_probe:
                    self.hb_probe = None
                else:
                    out.append(framing.heartbeat(f.xid))
            elif f.type in (framing.ACK, framing.NAK):
                fut = self.waiting.pop(f.xid, None)
                if fut is not None and not fut.done():
                    fut.set_result("A" if f.type == framing.ACK else "N " + f.payload.decode("ascii", "replace"))
        if out:
            self.write(b"".join(out))
        if self.framer.failed is not None:
            self.write(framing.nak(0, Reject.E101.code, self.framer.failed.detail))
            self.transport.close()

    def push(self, text: bytes) -> asyncio.Future:
        self.xid = (self.xid % framing.MAX_XID) + 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.xid] = fut
        self.write(framing.message(self.xid, text))
        return fut


class Stub:
    """One simulated upstream."""

    def __init__(self, cfg: StubConfig) -> None:
        self.cfg = cfg
        self.keys = ROLE_KEYS.get(cfg.role)
        self.rng = random.Random(cfg.seed)
        self.conns: set[_Conn] = set()
        self.stats = Stats()
        self._log: IO[str] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        if self.cfg.log_path:
            self._log = open(self.cfg.log_path, "a", buffering=1, encoding="ascii", errors="backslashreplace")
        loop = asyncio.get_running_loop()
        ctx = None
        if self.cfg.tls_cert:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        srv = await loop.create_server(lambda: _Conn(self), self.cfg.host, self.cfg.port, reuse_address=True,
                                       backlog=1024, ssl=ctx)
        self._servers.append(srv)
        if self.cfg.control:
            host, port = self.cfg.control
            self._servers.append(await asyncio.start_server(self._control, host, port, reuse_address=True))
        self._tasks.append(asyncio.create_task(self._heartbeats()))

    @property
    def port(self) -> int:
        return self._servers[0].sockets[0].getsockname()[1]

    @property
    def control_port(self) -> int | None:
        return self._servers[1].sockets[0].getsockname()[1] if len(self._servers) > 1 else None

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for s in self._servers:
            s.close()
        for c in list(self.conns):
            if c.transport:
                c.transport.abort()
        if self._log:
            self._log.close()

    # -- requests -------------------------------------------------------------------------

    def _request(self, conn: _Conn, xid: int, payload: bytes, out: list[bytes]) -> None:
        self.stats.received += 1
        if self._log is not None:
            self._log.write(payload.decode("ascii", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n") + "\n")
        try:
            inp = parse_input(payload)
        except ProtocolError as exc:
            out.append(framing.nak(xid, exc.code, exc.detail))
            return
        if self.keys is not None and inp.mke not in self.keys and inp.mke != "AM":
            out.append(framing.nak(xid, Reject.E301.code, f"{self.cfg.role.upper()} DOES NOT ANSWER {inp.mke}"))
            return
        if self.cfg.fail_rate and self.rng.random() < self.cfg.fail_rate:
            self.stats.failed += 1
            out.append(framing.nak(xid, Reject.E302.code, f"{self.cfg.role.upper()} SYSTEM UNAVAILABLE"))
            return
        out.append(framing.ack(xid))
        text = answer(self.cfg.seed, inp)
        if text is None:
            return
        self.stats.answered += 1
        response = format_upstream(inp.header, text)
        if self.cfg.latency_ms > 0:
            asyncio.get_running_loop().call_later(self.cfg.latency_ms / 1000, self._respond, conn, response)
        else:
            conn.xid = (conn.xid % framing.MAX_XID) + 1
            out.append(framing.message(conn.xid, response))

    def _respond(self, conn: _Conn, response: bytes) -> None:
        conn.xid = (conn.xid % framing.MAX_XID) + 1
        conn.write(framing.message(conn.xid, response))

    # -- unsolicited traffic ---------------------------------------------------------------

    async def push(self, text: str, timeout: float = 10.0) -> str:
        """Send one unsolicited message to the connected switch; return its answer."""
        conns = [c for c in self.conns if c.transport and not c.transport.is_closing()]
        if not conns:
            return "NOCONN"
        self.stats.unsolicited += 1
        fut = conns[0].push(text.encode("latin-1", "replace"))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return "TIMEOUT"

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                text = line.decode("ascii", "replace").rstrip("\r\n")
                if not text:
                    continue
                result = await self.push(control_unescape(text))
                writer.write((result + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _heartbeats(self) -> None:
        hb = self.cfg.heartbeat_s
        while True:
            await asyncio.sleep(min(1.0, hb / 3))
            now = time.monotonic()
            for c in list(self.conns):
                if now - c.last_rx > 3 * hb and c.transport:
                    c.transport.abort()
                elif now - c.last_tx >= hb:
                    c.xid = (c.xid % framing.MAX_XID) + 1
                    c.hb_probe = c.xid
                    c.write(framing.heartbeat(c.xid))


_ESCAPE_RE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|([rntf\\]))")
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "f": "\f", "\\": "\\"}


def control_unescape(line: str) -> str:
    """A control-port line as the text to push: ``\\r``, ``\\n``, ``\\t``, ``\\f``, ``\\\\`` and
    ``\\xHH`` (any byte, 00–FF) stand for the bytes they name, so any byte can be sent."""
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else _SIMPLE[m.group(2)], line)


async def run(cfg: StubConfig, *, ready=None) -> None:
    stub = Stub(cfg)
    await stub.start()
    if ready is not None:
        ready(stub)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await stub.stop()
