"""A listener behind a relay: the PROXY header first, then an ordinary :class:`Session`.

On a listener with ``proxy_protocol = true`` (CONFIG.md "Listeners") every connection is a relay
(``msc web``, HAProxy …) speaking for one client. :class:`ProxyGate` is the connection's first
protocol object:

* a peer whose address is not in the listener's ``trusted_proxies`` is closed at once, before a
  byte is read or the banner sent (nobody else may name an address);
* the header (:mod:`msc.protocol.proxy`, v1 or v2) must be complete within the listener's
  ``read_timeout_s``; anything malformed closes the connection;
* then the transport is handed to a :class:`~msc.server.session.Session` whose peer is the
  client the header names — its TAF, and the address (and, v2, the verified certificate CN)
  stations and pools admit — and whatever followed the header is fed to it.

With ``tls`` on the listener, the relay's TLS connection carries the header as its first bytes.
Refusals are counted in ``msc_proxy_refused_total{reason}`` and logged (never the bytes).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING

import structlog

from msc.protocol.proxy import ProxyHeaderError, ProxyReader

if TYPE_CHECKING:
    from msc.server.listener import ListenerRuntime
    from msc.server.services import Services

log = structlog.get_logger("msc.proxy")


def trusted(peer_ip: str | None, networks: tuple[str, ...]) -> bool:
    """Is ``peer_ip`` inside one of ``networks`` (IP or CIDR texts)? IPv4-mapped IPv6 counts as
    its IPv4 address."""
    if not peer_ip:
        return False
    try:
        ip = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for n in networks:
        net = ipaddress.ip_network(n, strict=False)
        if ip.version == net.version and ip in net:
            return True
    return False


class ProxyGate(asyncio.Protocol):
    """Reads the PROXY header of one connection, then hands the transport to a Session."""

    def __init__(self, services: Services, listener: ListenerRuntime) -> None:
        """``services``: what the session it hands the connection to is given (the switch's
        :class:`~msc.server.services.Services`); ``listener``: the listener it came through."""
        self.services = services
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.reader = ProxyReader()
        self.timer: asyncio.TimerHandle | None = None
        self.relay: str | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.relay = peer[0] if isinstance(peer, tuple) else None
        if not trusted(self.relay, self.listener.cfg.trusted_proxies):
            self._refuse("untrusted")
            return
        self.timer = asyncio.get_running_loop().call_later(self.listener.cfg.read_timeout_s, self._refuse, "timeout")

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            header = self.reader.feed(data)
        except ProxyHeaderError as exc:
            self._refuse("header", str(exc))
            return
        if header is None:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        from msc.server.session import Session

        t = self.transport
        assert t is not None  # set by connection_made before any data
        if header.local or header.source is None:
            proxied = None  # the relay's own connection (a health check): its own address
        else:
            proxied = (header.source[0], header.ssl_cn)
        session = Session(self.services, self.listener, proxied=proxied)
        t.set_protocol(session)
        session.connection_made(t)
        if self.reader.rest and not t.is_closing():
            session.data_received(self.reader.rest)

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def _refuse(self, reason: str, detail: str | None = None) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.services.metrics.proxy_refused.labels(reason).inc()
        log.warning("proxy.refused", reason=reason, detail=detail, relay=self.relay, listener=self.listener.cfg.name)
        if self.transport is not None:
            self.transport.abort()
