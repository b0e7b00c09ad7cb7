"""Links to the state/federal systems (PROTOCOL.md §4, PPP §1.4.1 two switching centres).

An :class:`UpstreamLink` keeps one connection to an upstream, through its primary or its
secondary endpoint. It speaks the same framing as clients and tracks every request it sent until
the upstream's ``A`` or ``N``.

Link health (PROTOCOL.md §4 "Link health and failover"):

* **Handshake.** A new connection is not used until the upstream has answered an ``H`` sent on
  connect. A host that accepts TCP connections but never answers (half dead) therefore never
  receives a request.
* **Acknowledgement timeout.** The upstream must answer each ``M`` (``A``/``N``) and each ``H``
  within ``ack_timeout_s``. A request or heartbeat left unanswered that long, ``3 × heartbeat_s``
  with nothing received at all, or a framing error from the upstream *fails* the connection: it
  is closed and the next dial starts from the other endpoint, at once.
* **Staying.** A connection that was healthy and was closed (by the upstream or the network) is
  redialled on the same endpoint first: traffic that moved to the secondary stays there while
  the secondary works; the other endpoint is tried when this one cannot be reached or fails.
* Rounds of dialling that reach nothing wait with jittered exponential backoff.

* **Inbound backpressure.** Messages the upstream sends (answers, unsolicited traffic) each wait
  for their journal commit before msc answers them ``A`` or ``N``. At most ``max_inbound``
  (default 128) of them per connection wait at once: beyond that msc stops reading the
  connection until half are answered, so a burst waits in the upstream's queue and the network,
  not in msc's memory (the acknowledgement and silence rules do not count the time msc itself
  was not reading).

A message whose ``A`` could not be written (its connection was gone when its journal commit
ended) is sent again by the upstream on a later connection: the router knows that resend
(:mod:`msc.routing.resends`) and answers it without a second record.

When a connection that carried traffic is lost, :attr:`on_lost` is called at once with the
requests the upstream had not acknowledged; the router tells the operators of every request
still without an answer (acknowledged or not) ``E302`` — never silently dropped, never silently
resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from msc.aio import bounded
from msc.config.model import UpstreamSection
from msc.config.validate import parse_hostport
from msc.flow import Outbox
from msc.protocol import framing
from msc.protocol.codes import FramingError, Reject
from msc.protocol.framing import Framer
from msc.protocol.message import parse_nak

log = structlog.get_logger("msc.upstream")

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0
CONNECT_TIMEOUT_S = 3.0

#: Why a connection was declared failed (the ``reason`` label of msc_upstream_failures_total).
FAILURE_REASONS = ("handshake", "ack_timeout", "heartbeat_timeout", "silent", "framing")


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
        self.outbox = Outbox()  # write coalescing, as a client session's (msc.flow)
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self.proven = loop.create_future()  # set when the upstream answers the handshake H
        self.hb_xid: int | None = None  # our heartbeat waiting for its answer
        self.hb_sent_at = 0.0
        self.failed: str | None = None  # a FAILURE_REASONS entry once declared failed
        self.index = 0  # which endpoint (0 primary)
        self.inbound = 0  # messages received from the upstream and not answered yet
        self.paused = False  # not reading: too many inbound messages waiting (max_inbound)
        self.resumed_at = 0.0  # monotonic, when reading last resumed (the ack rules wait from then)
        self.backlog: deque[framing.Frame] = deque()  # frames received, not handled yet (paused)
        self._not_reading = False  # the transport's reading is paused

    def pause(self) -> None:
        """Stop handling frames (and reading) until :meth:`resume`."""
        if self.paused or self.transport is None or self.transport.is_closing():
            return
        self.paused = True
        if not self._not_reading:
            self._not_reading = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self.resumed_at = self.last_rx = time.monotonic()
        self._process()  # what was read already first; it may pause again
        if not self.paused and self._not_reading:
            self._not_reading = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.outbox.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.link._protocol_error(self, exc)
            return
        self.backlog.extend(frames)
        self._process()
        if self.framer.failed is not None:
            self.link._protocol_error(self, self.framer.failed)

    def _process(self) -> None:
        """Handle received frames in order until msc stops reading (inbound backpressure): the
        rest of a read wait here, as bytes, until it reads again."""
        backlog = self.backlog
        while backlog and not self.paused:
            self.link._frame(self, backlog.popleft())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        if not self.proven.done():
            self.proven.set_result(False)
        self.link._lost(self)

    @property
    def up(self) -> bool:
        return self.proven.done() and self.proven.result() is True

    @property
    def last_tx(self) -> float:
        return self.outbox.last_tx

    def write(self, data: bytes) -> bool:
        """Frames written in one event-loop iteration go out in one write() (one syscall): many
        terminals' requests share the link, so under load this saves most of its syscalls.
        False: the connection is gone or closing (nothing was written)."""
        return self.outbox.write(data)

    def fail(self, reason: str) -> None:
        """Declare this connection failed and drop it (the next dial goes to the other endpoint)."""
        if self.failed is None:
            self.failed = reason
        self.outbox.flush()  # the A of a message committed in this iteration goes first (msc.routing.resends)
        if self.transport is not None:
            self.transport.abort()


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
        on_failure: Callable[[UpstreamLink, str, str], None] | None = None,
        on_pause: Callable[[UpstreamLink], None] | None = None,
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
        self.on_failure = on_failure  # (link, "primary"/"secondary", reason)
        self.on_pause = on_pause  # msc stopped reading the link: max_inbound messages wait
        self.sent: dict[int, Sent] = {}
        self.endpoint_index: int | None = None  # which endpoint carries traffic (0 primary)
        self._proto: _LinkProtocol | None = None  # the current connection, proven or not
        self._xid = 0
        self._task: asyncio.Task | None = None
        self._hb_task: asyncio.Task | None = None
        self._stopping = False
        self._connected = asyncio.Event()
        #: Monotonic time the current connection answered its handshake; None while down.
        self.up_at: float | None = None
        self.log = log.bind(upstream=self.name)

    # -- state ----------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Connected, and the upstream answered the handshake: requests may be sent."""
        return self._proto is not None and self._proto.up

    @property
    def in_flight(self) -> int:
        return len(self.sent)

    @property
    def inbound(self) -> int:
        """Messages received on the current connection and not answered yet (max_inbound)."""
        return self._proto.inbound if self._proto is not None else 0

    @property
    def holding(self) -> bool:
        """msc is not reading this link now: ``max_inbound`` of its messages (answers of requests
        in flight, unsolicited traffic) wait for their journal commit, the rest in the upstream."""
        return self._proto is not None and self._proto.paused

    def label(self, index: int | None) -> str | None:
        if index is None:
            return None
        return "primary" if index == 0 else "secondary"

    def endpoint_label(self) -> str | None:
        return self.label(self.endpoint_index)

    async def wait_up(self, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await bounded(self._connected.wait(), timeout)
        return self.up

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"upstream-{self.name}")
        self._hb_task = asyncio.create_task(self._watch(), name=f"upstream-hb-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        for t in (self._task, self._hb_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if self._proto and self._proto.transport:
            self._proto.transport.close()

    async def _dial(self, index: int) -> _LinkProtocol | None:
        host, port = self.endpoints[index]
        loop = asyncio.get_running_loop()
        server_hostname = (self.cfg.tls.server_name or host) if self.ssl_context and self.cfg.tls else None
        try:
            _t, proto = await bounded(
                loop.create_connection(lambda: _LinkProtocol(self), host, port, ssl=self.ssl_context,
                                       server_hostname=server_hostname),
                CONNECT_TIMEOUT_S,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            self.log.debug("upstream.connect_failed", endpoint=index, error=type(exc).__name__)
            return None
        return proto

    async def _handshake(self, proto: _LinkProtocol) -> bool:
        """Send ``H`` and wait ``ack_timeout_s`` for its answer: is anybody home?"""
        self._probe(proto)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.proven), self.cfg.ack_timeout)
        if proto.up:
            return True
        self._failed(proto, proto.failed or "handshake")
        proto.fail(proto.failed or "handshake")
        if not proto.closed.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.closed), 1.0)
        return False

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        start = 0  # the endpoint dialled first: where traffic last went, or the other one after a failure
        while not self._stopping:
            n = len(self.endpoints)
            for k, index in enumerate([(start + k) % n for k in range(n)]):
                proto = await self._dial(index)
                if proto is None:
                    continue
                proto.index = index
                self._proto = proto
                if not await self._handshake(proto):
                    continue  # half dead (or not speaking our protocol): the other endpoint, now
                if proto.transport is None or proto.transport.is_closing():
                    continue
                self.endpoint_index = index
                self.up_at = time.monotonic()
                self._connected.set()
                self.log.info("upstream.up", endpoint=self.label(index))
                if self.on_state:
                    self.on_state(self)
                backoff = BACKOFF_MIN_S
                await proto.closed
                if self._stopping:
                    return
                if proto.failed is None:
                    start = index  # a healthy connection ended: dial the same endpoint first
                    break
                start = (index + 1) % n  # failed: the other endpoint, without waiting
                if k == n - 1:
                    break
            if self._stopping:
                return
            # Jitter spreads reconnects of many switches after a centre outage.
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _tick(self) -> float:
        return max(0.01, min(self.cfg.heartbeat_s / 3, self.cfg.ack_timeout / 4, 1.0))

    async def _watch(self) -> None:
        """Heartbeats and the failure rules: unanswered M or H, silence, once per tick."""
        while True:
            await asyncio.sleep(self._tick())
            proto = self._proto
            if proto is None or not proto.up or proto.failed is not None:
                continue  # the handshake watches a new connection itself
            if proto.paused:
                continue  # msc is not reading it (inbound backpressure): its answers wait unread
            now = time.monotonic()
            hb, ack = self.cfg.heartbeat_s, self.cfg.ack_timeout
            oldest = next(iter(self.sent.values()), None)
            if oldest is not None and now - max(oldest.sent_at, proto.resumed_at) > ack:
                self._declare(proto, "ack_timeout", waited_s=round(now - oldest.sent_at, 2))
            elif proto.hb_xid is not None and now - max(proto.hb_sent_at, proto.resumed_at) > ack:
                self._declare(proto, "heartbeat_timeout", waited_s=round(now - proto.hb_sent_at, 2))
            elif now - proto.last_rx > 3 * hb:
                self._declare(proto, "silent", silent_s=round(now - proto.last_rx, 1))
            elif now - proto.last_tx >= hb and proto.hb_xid is None:
                self._probe(proto)

    def _probe(self, proto: _LinkProtocol) -> None:
        self._xid = (self._xid + 1) & framing.MAX_XID or 1
        proto.hb_xid = self._xid
        proto.hb_sent_at = time.monotonic()
        proto.write(framing.heartbeat(self._xid))

    def _declare(self, proto: _LinkProtocol, reason: str, **why: float) -> None:
        self.log.warning("upstream.failed", endpoint=self.label(proto.index), reason=reason, **why)
        self._failed(proto, reason)
        proto.fail(reason)

    def _failed(self, proto: _LinkProtocol, reason: str) -> None:
        if self.on_failure is not None and proto.failed is None:
            self.on_failure(self, self.label(proto.index) or "primary", reason)
        if proto.failed is None:
            proto.failed = reason

    # -- traffic --------------------------------------------------------------------------

    def send(self, payload: bytes, txn: str, context: Any) -> Sent:
        """Send one request. Raises :class:`LinkDown` if there is no proven connection."""
        proto = self._proto
        if proto is None or not proto.up:
            raise LinkDown(self.name)
        self._xid = (self._xid + 1) & framing.MAX_XID or 1
        sent = Sent(self._xid, txn, context)
        self.sent[sent.xid] = sent
        proto.write(framing.message(sent.xid, payload))
        if self.on_frame:
            self.on_frame("sent")
        return sent

    def reply(self, frame: bytes, generation: _LinkProtocol | None) -> bool:
        """Answer an upstream ``M`` (A or N) on the connection it arrived on (once per M), while
        that connection is open — whether or not :meth:`_run` has made it the link's current one
        yet: an upstream may send the moment it accepts (a centre flushing its backlog after an
        outage), before msc's dial has returned, and an answer given at once (a refusal past the
        link's journal budget) was dropped then, leaving the upstream waiting for it. False when
        the connection is gone (an ``xid`` means nothing on another connection: the upstream
        sends the message again, and :mod:`msc.routing.resends` knows it)."""
        if generation is None:
            return False
        generation.inbound -= 1
        if generation.paused and generation.inbound <= self.cfg.max_inbound // 2:
            generation.resume()
        if not generation.write(frame):
            return False
        if self.on_frame:
            self.on_frame("sent")
        return True

    def _frame(self, proto: _LinkProtocol, f: framing.Frame) -> None:
        if self.on_frame:
            self.on_frame("received")
        t = f.type
        if t == framing.MSG:
            proto.inbound += 1
            if proto.inbound >= self.cfg.max_inbound and not proto.paused:
                proto.pause()
                if self.on_pause is not None:
                    self.on_pause(self)
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
            # The answer to our probe proves the connection; anything else is the upstream's own
            # probe, which we answer.
            if f.xid == proto.hb_xid:
                proto.hb_xid = None
                if not proto.proven.done():
                    proto.proven.set_result(True)
            else:
                proto.write(framing.heartbeat(f.xid))

    def _protocol_error(self, proto: _LinkProtocol, exc: FramingError) -> None:
        self.log.warning("upstream.framing_error", code=exc.code)
        self._failed(proto, "framing")
        proto.write(framing.nak(0, Reject.E101.code, exc.detail))
        proto.outbox.close()

    def _lost(self, proto: _LinkProtocol) -> None:
        if self._proto is not proto:
            return
        self._proto = None
        self._connected.clear()
        self.up_at = None
        label = self.label(proto.index)
        self.endpoint_index = None
        was_up = proto.proven.done() and proto.proven.result() is True
        if not was_up:
            return  # never carried traffic
        if not self._stopping:
            # Why, always: declared failed by msc (a FAILURE_REASONS entry), or the connection
            # ended under it — closed by the upstream (a killed stub, EOF) or a socket error.
            exc = proto.closed.result() if proto.closed.done() else None
            reason = proto.failed or ("closed_by_peer" if exc is None else f"error: {exc}")
            self.log.warning("upstream.down", endpoint=label, failed=reason)
        lost = list(self.sent.values())
        self.sent.clear()
        if self.on_state:
            self.on_state(self)
        self.on_lost(self, lost)
