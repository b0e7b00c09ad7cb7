"""A listener's connection table: who holds its ``max_connections`` slots, and for how long.

Every connection holds one slot from the moment it is accepted — in the TLS handshake too — until
it closes. A connection is **pending** until it has logged on (a terminal or pool) or bound (a
host or printer); then it is **established** until it logs off (a LOGOFF, or msc logging it
off, makes it pending again: the deadline runs again and its slot may be taken). The rules
(SECURITY.md "Connections", OpenSSH's ``MaxStartups`` / ``PerSourceMaxStartups`` /
``LoginGraceTime`` are the model):

* a pending connection has ``logon_timeout_s`` to log on or bind, and a TLS connection
  ``tls_handshake_timeout_s`` to finish its handshake; then it is closed;
* at most ``max_pending_per_address`` pending connections per source address (an IPv6 address
  counts by its /64): a newer one takes the slot of that address's oldest;
* when the listener is full, a new connection takes the slot of a pending connection — one that
  has not acknowledged the banner before one that has, of the address with the most pending
  connections, the oldest (:meth:`ListenerRuntime._victim`); only when every slot is held by an
  established session is it refused (``E307``).

So connections that never log on hold slots for a bounded time and can never keep a terminal
out, and an established session is never closed to make room. A pending connection whose LOGON
is being checked is not taken (the check ends within ``logon_wait_s`` and a KDF).

TLS listeners accept TCP themselves (:class:`TlsServer`) and run each handshake with
``loop.connect_accepted_socket(ssl=…)``: with ``create_server(ssl=…)`` the protocol would learn
of a connection only after its handshake, so connections stalled in it would be invisible to the
table (issue 14 item 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from msc.config.model import ListenerSection
    from msc.ops.metrics import Metrics

log = structlog.get_logger("msc.listener")

#: Connections accepted per wake-up of a TLS listener's socket (the rest on the next one).
ACCEPT_BATCH = 64
#: How long a TLS listener stops accepting when the process is out of file descriptors.
ACCEPT_RETRY_S = 0.5


def source_of(ip: str | None) -> str:
    """The source a connection is counted under: its IPv4 address, or its IPv6 /64 (one
    subscriber's network; an attacker has a whole /64 to choose addresses from). An
    IPv4-mapped IPv6 address counts as the IPv4 address."""
    if not ip:
        return "?"
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(a, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None:
            return str(a.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(a) >> 64 << 64, 64)))
    return str(a)


class Member(Protocol):
    """What holds a slot: a :class:`~msc.server.session.Session` or a :class:`Handshake`."""

    source: str

    @property
    def evictable(self) -> bool: ...

    @property
    def acknowledged(self) -> bool:
        """Has it acknowledged the banner (a person reads it, then types a user ID)?"""
        ...

    def evict(self, reason: str) -> None: ...


class Handshake:
    """A TLS connection accepted and not yet through its handshake."""

    __slots__ = ("source", "peer_ip", "started", "task", "sock", "evicted", "attached")

    def __init__(self, sock: socket.socket, peer_ip: str | None) -> None:
        self.sock = sock
        self.peer_ip = peer_ip
        self.source = source_of(peer_ip)
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.evicted: str | None = None
        self.attached = False  # the event loop owns the socket (and closes it)

    @property
    def evictable(self) -> bool:
        return True

    @property
    def acknowledged(self) -> bool:
        return False

    def evict(self, reason: str) -> None:
        self.evicted = reason
        if not self.attached:
            self.sock.close()  # the handshake has not started: nobody else will close it
        if self.task is not None:
            self.task.cancel()  # closes the transport (and its socket) at once


@dataclass(eq=False)
class ListenerRuntime:
    """One configured listener: its server and its connection table."""

    cfg: ListenerSection
    server: Any = None
    metrics: Metrics | None = None
    sessions: set[Member] = field(default_factory=set)  # established and pending sessions (not handshakes)
    members: set[Member] = field(default_factory=set)  # everything holding a slot
    pending: OrderedDict[Member, None] = field(default_factory=OrderedDict)  # member -> None, oldest first
    by_source: dict[str, OrderedDict[Member, None]] = field(default_factory=dict)  # source -> its pending members
    handshakes: int = 0

    def admit(self, m: Member) -> bool:
        """Give ``m`` a slot (as pending), taking one from a pending connection if need be.
        False: every slot is held by an established session (or a LOGON being checked)."""
        cfg = self.cfg
        mine = self.by_source.get(m.source)
        if mine is not None and len(mine) >= cfg.max_pending_per_address:
            victim = self._victim(mine)
            if victim is None:
                self._closed("refused")
                return False
            self._evict(victim, "address_limit")
        if len(self.members) >= cfg.max_connections:
            victim = self._victim(self.pending)
            if victim is None:
                self._closed("refused")
                return False
            self._evict(victim, "evicted")
        self.members.add(m)
        self.pending[m] = None
        self.by_source.setdefault(m.source, OrderedDict())[m] = None
        if isinstance(m, Handshake):
            self.handshakes += 1
        else:
            self.sessions.add(m)
        self._gauges()
        return True

    def _victim(self, among: OrderedDict[Member, None]) -> Member | None:
        """The pending connection that gives its slot to a new one (SECURITY.md "Bounded under
        abuse", PROTOCOL §1): never one that acknowledged the banner while one that did not
        remains (a flood of connections that never say anything cannot push out an operator
        typing a logon); among those, one of the source address holding the most pending
        connections (a flood from a few addresses pays for itself); among those, the oldest.
        Never one whose LOGON is being checked. O(pending), only when the listener is full."""
        best: Member | None = None
        key: tuple[bool, int] | None = None
        for v in among:  # oldest first: a tie keeps the oldest
            if not v.evictable:
                continue
            k = (bool(v.acknowledged), -len(self.by_source.get(v.source, ())))
            if key is None or k < key:
                best, key = v, k
                if k[0] is False and -k[1] >= len(among):
                    break  # it cannot be beaten
        return best

    def established(self, m: Member) -> None:
        """``m`` logged on or bound: no deadline, never taken."""
        if self.pending.pop(m, False) is None:
            self._unsource(m)
            self._gauges()

    def pending_again(self, m: Member) -> None:
        """``m`` logged off and stays connected: pending again (the newest), its deadline anew."""
        if m not in self.members or m in self.pending:
            return
        self.pending[m] = None
        self.by_source.setdefault(m.source, OrderedDict())[m] = None
        self._gauges()

    def release(self, m: Member) -> None:
        """``m`` closed (idempotent)."""
        if m not in self.members:
            return
        self.members.discard(m)
        self.sessions.discard(m)
        if isinstance(m, Handshake):
            self.handshakes -= 1
        if self.pending.pop(m, False) is None:
            self._unsource(m)
        self._gauges()

    def _unsource(self, m: Member) -> None:
        mine = self.by_source.get(m.source)
        if mine is not None:
            mine.pop(m, None)
            if not mine:
                del self.by_source[m.source]

    def _evict(self, victim: Member, reason: str) -> None:
        self.release(victim)
        self._closed(reason)
        try:
            victim.evict(reason)
        except Exception:  # the new connection is admitted whatever happened to the old one
            log.exception("listener.evict_failed", listener=self.cfg.name)

    def _closed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_closed.labels(reason).inc()

    def _gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        name = self.cfg.name
        pending = len(self.pending)
        m.listener_connections.labels(name, "tls_handshake").set(self.handshakes)
        m.listener_connections.labels(name, "pending").set(pending - self.handshakes)
        m.listener_connections.labels(name, "established").set(len(self.members) - pending)

    def configured(self) -> None:
        """Publish the limit (at start and after a reload)."""
        if self.metrics is not None:
            self.metrics.listener_max_connections.labels(self.cfg.name).set(self.cfg.max_connections)
            self._gauges()


class TlsServer:
    """A TLS listener: TCP accepted here, each handshake run with its own deadline while holding
    a slot of the listener's table. Quacks like the ``asyncio.Server`` the switch uses
    (``sockets``, ``is_serving``, ``close``, ``wait_closed``)."""

    def __init__(self, rt: ListenerRuntime, ctx: ssl.SSLContext, factory: Callable[[Handshake], asyncio.Protocol],
                 on_failed: Callable[[Handshake, str, str], None]) -> None:
        self.rt = rt
        self.ctx = ctx
        self.factory = factory
        self.on_failed = on_failed  # (handshake, reason, detail): journal and count it
        self.loop = asyncio.get_running_loop()
        self.socks: list[socket.socket] = []
        self._serving = False
        self._retry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, host: str, port: int, backlog: int = 1024) -> None:
        """Listen on every address ``host`` resolves to (as ``create_server`` does; IPv6 sockets
        IPv6 only, so that a dual-stack host gets one socket per family)."""
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen = set()
        try:
            for family, stype, proto, _c, addr in infos:
                if (family, addr) in seen:
                    continue
                seen.add((family, addr))
                sock = socket.socket(family, stype, proto)
                self.socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            for sock in self.socks:
                sock.close()
            self.socks = []
            raise
        self._serving = True
        for sock in self.socks:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self.socks) if self._serving else []

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        if self._retry is not None:
            self._retry.cancel()
        for sock in self.socks:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(sock.fileno())
            sock.close()
        for task in list(self._tasks):  # handshakes still running: their connections close
            task.cancel()

    async def wait_closed(self) -> None:
        return None

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment (the kernel's backlog holds
                    # the rest) rather than spin on a socket that stays readable.
                    log.warning("listener.accept_failed", listener=self.rt.cfg.name, error=exc.strerror)
                    self.loop.remove_reader(sock.fileno())
                    self._retry = self.loop.call_later(ACCEPT_RETRY_S, self._resume, sock)
                    return
                raise
            self._handle(conn, addr)

    def _resume(self, sock: socket.socket) -> None:
        self._retry = None
        if self._serving:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _handle(self, conn: socket.socket, addr: Any) -> None:
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h = Handshake(conn, addr[0] if isinstance(addr, tuple) else None)
        if not self.rt.admit(h):
            conn.close()  # every slot is an established session: no handshake for this one
            return
        task = self.loop.create_task(self._handshake(h, conn))
        h.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, h: Handshake, conn: socket.socket) -> None:
        reason = detail = None
        h.attached = True  # connect_accepted_socket takes the socket before its first await
        try:
            await self.loop.connect_accepted_socket(
                lambda: self.factory(h), conn, ssl=self.ctx, ssl_handshake_timeout=self.rt.cfg.tls_handshake_timeout_s)
        except asyncio.CancelledError:
            reason = "evicted" if h.evicted else None  # its slot taken (counted there), or shutting down
        except ConnectionAbortedError as exc:
            reason, detail = "tls_handshake_timeout", str(exc)
        except Exception as exc:  # ssl.SSLError, a reset …: the client could not or would not do TLS
            reason, detail = "tls_handshake_failed", (getattr(exc, "reason", None) or type(exc).__name__)
        finally:
            self.rt.release(h)
        if reason is not None:
            if h.evicted is None:
                self.rt._closed(reason)
            self.on_failed(h, reason, str(detail))
