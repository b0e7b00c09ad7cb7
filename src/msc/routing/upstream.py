"""Links to the state/federal systems (PROTOCOL.md §4, PPP §1.4.1 two switching centres).

An :class:`UpstreamLink` keeps one connection to an upstream: the primary endpoint first, the
secondary when the primary cannot be reached, reconnecting with jittered exponential backoff. It
speaks the same framing as clients, sends heartbeats, declares the link dead after
3 × ``heartbeat_s`` of silence, and tracks every request it sent until the upstream's ``A`` or
``N``. When a connection is lost, requests the upstream had not yet acknowledged are handed back
(:attr:`on_lost`) so the operator is told ``E302`` — never silently dropped, never silently resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from msc.config.model import UpstreamSection
from msc.config.validate import parse_hostport
from msc.protocol import framing
from msc.protocol.codes import FramingError, Reject
from msc.protocol.framing import Framer
from msc.protocol.message import parse_nak

log = structlog.get_logger("msc.upstream")

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0
CONNECT_TIMEOUT_S = 3.0


@dataclass(eq=False)
class Sent:
    """A request handed to the upstream and not yet answered with A/N."""

    xid: int
    txn: str
    context: Any  # the router's in-flight record
    sent_at: float = field(default_factory=time.monotonic)


class LinkDown(Exception):
    pass


class _LinkProtocol(asyncio.Protocol):
    def __init__(self, link: UpstreamLink) -> None:
        self.link = link
        self.framer = Framer(max_frame=link.max_frame)
        self.transport: asyncio.Transport | None = None
        self.last_rx = time.monotonic()
        self.last_tx = time.monotonic()
        self._wbuf: list[bytes] = []
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.link._protocol_error(self, exc)
            return
        for f in frames:
            self.link._frame(self, f)
        if self.framer.failed is not None:
            self.link._protocol_error(self, self.framer.failed)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self.link._lost(self)

    def write(self, data: bytes) -> None:
        """Frames written in one event-loop iteration go out in one write() (one syscall): many
        terminals' requests share the link, so under load this saves most of its syscalls."""
        if self.transport is not None and not self.transport.is_closing():
            self._wbuf.append(data)
            if len(self._wbuf) == 1:
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        buf, self._wbuf = self._wbuf, []
        if buf and self.transport is not None and not self.transport.is_closing():
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))
            self.last_tx = time.monotonic()


class UpstreamLink:
    """One upstream system, reached through its primary or secondary endpoint."""

    def __init__(
        self,
        cfg: UpstreamSection,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_frame: int = 1024 * 1024,
        on_message: Callable[[UpstreamLink, Any, int, bytes], None],
        on_lost: Callable[[UpstreamLink, list[Sent]], None],
        on_state: Callable[[UpstreamLink], None] | None = None,
        on_frame: Callable[[str], None] | None = None,
    ) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.endpoints = [parse_hostport(e) for e in cfg.endpoints]
        self.ssl_context = ssl_context
        self.max_frame = max_frame
        self.on_message = on_message
        self.on_lost = on_lost
        self.on_state = on_state
        self.on_frame = on_frame
        self.sent: dict[int, Sent] = {}
        self.endpoint_index: int | None = None  # which endpoint is connected (0 primary)
        self._proto: _LinkProtocol | None = None
        self._xid = 0
        self._hb_xid = -1
        self._task: asyncio.Task | None = None
        self._hb_task: asyncio.Task | None = None
        self._stopping = False
        self._connected = asyncio.Event()
        self.log = log.bind(upstream=self.name)

    # -- state ----------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._proto is not None

    @property
    def in_flight(self) -> int:
        return len(self.sent)

    def endpoint_label(self) -> str | None:
        if self.endpoint_index is None:
            return None
        return "primary" if self.endpoint_index == 0 else "secondary"

    async def wait_up(self, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.up

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"upstream-{self.name}")
        self._hb_task = asyncio.create_task(self._heartbeats(), name=f"upstream-hb-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        for t in (self._task, self._hb_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if self._proto and self._proto.transport:
            self._proto.transport.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        while not self._stopping:
            for index, (host, port) in enumerate(self.endpoints):
                try:
                    _t, proto = await asyncio.wait_for(
                        loop.create_connection(lambda: _LinkProtocol(self), host, port, ssl=self.ssl_context,
                                               server_hostname=(self.cfg.tls.server_name or host) if self.ssl_context and self.cfg.tls else None),
                        CONNECT_TIMEOUT_S,
                    )
                except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                    self.log.debug("upstream.connect_failed", endpoint=index, error=type(exc).__name__)
                    continue
                self._proto = proto
                self.endpoint_index = index
                self._connected.set()
                self.log.info("upstream.up", endpoint="primary" if index == 0 else "secondary")
                if self.on_state:
                    self.on_state(self)
                backoff = BACKOFF_MIN_S
                await proto.closed
                break
            if self._stopping:
                return
            # Jitter spreads reconnects of many switches after a centre outage.
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _heartbeats(self) -> None:
        hb = self.cfg.heartbeat_s
        while True:
            await asyncio.sleep(min(hb / 3, 1.0))
            proto = self._proto
            if proto is None:
                continue
            now = time.monotonic()
            if now - proto.last_rx > 3 * hb:
                self.log.warning("upstream.dead", silent_s=round(now - proto.last_rx, 1))
                if proto.transport:
                    proto.transport.abort()
                continue
            if now - proto.last_tx >= hb:
                self._xid = (self._xid + 1) & framing.MAX_XID or 1
                self._hb_xid = self._xid
                proto.write(framing.heartbeat(self._xid))

    # -- traffic --------------------------------------------------------------------------

    def send(self, payload: bytes, txn: str, context: Any) -> Sent:
        """Send one request. Raises :class:`LinkDown` if there is no connection."""
        proto = self._proto
        if proto is None:
            raise LinkDown(self.name)
        self._xid = (self._xid + 1) & framing.MAX_XID or 1
        sent = Sent(self._xid, txn, context)
        self.sent[sent.xid] = sent
        proto.write(framing.message(sent.xid, payload))
        if self.on_frame:
            self.on_frame("sent")
        return sent

    def reply(self, frame: bytes, generation: _LinkProtocol | None) -> bool:
        """Answer an upstream ``M`` (A or N) on the connection it arrived on."""
        proto = self._proto
        if proto is None or proto is not generation:
            return False
        proto.write(frame)
        if self.on_frame:
            self.on_frame("sent")
        return True

    def _frame(self, proto: _LinkProtocol, f: framing.Frame) -> None:
        if self.on_frame:
            self.on_frame("received")
        t = f.type
        if t == framing.MSG:
            self.on_message(self, proto, f.xid, f.payload)
        elif t == framing.ACK:
            sent = self.sent.pop(f.xid, None)
            if sent is not None:
                sent.context.acked(self, sent)
        elif t == framing.NAK:
            sent = self.sent.pop(f.xid, None)
            if sent is not None:
                code, reason = parse_nak(f.payload)
                sent.context.refused(self, sent, code, reason)
        elif t == framing.HEARTBEAT:
            # Answer the upstream's own probes; a reply to ours needs nothing (any frame
            # received already counts as proof of life).
            if f.xid == self._hb_xid:
                self._hb_xid = -1
            else:
                proto.write(framing.heartbeat(f.xid))

    def _protocol_error(self, proto: _LinkProtocol, exc: FramingError) -> None:
        self.log.warning("upstream.framing_error", code=exc.code)
        proto.write(framing.nak(0, Reject.E101.code, exc.detail))
        proto._flush()
        if proto.transport:
            proto.transport.close()

    def _lost(self, proto: _LinkProtocol) -> None:
        if self._proto is not proto:
            return
        self._proto = None
        self._connected.clear()
        label = self.endpoint_label()
        self.endpoint_index = None
        if not self._stopping:
            self.log.warning("upstream.down", endpoint=label)
        lost = list(self.sent.values())
        self.sent.clear()
        if self.on_state:
            self.on_state(self)
        if lost:
            self.on_lost(self, lost)
