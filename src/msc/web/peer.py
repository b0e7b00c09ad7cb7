"""The browser's TLS client certificate, from uvicorn's connection to the ASGI app (docs/WEB.md
"Stations bound by certificate").

uvicorn (0.x) does not put the connection's TLS facts into the ASGI scope. :class:`TlsH11Protocol`
is uvicorn's own h11 protocol with one addition: once the TLS handshake is done (asyncio and uvloop
call ``connection_made`` only then), it reads the connection's ``ssl_object`` and gives every HTTP
request on that connection ``scope["extensions"]["tls"]`` as the ASGI TLS extension specifies
(https://asgi.readthedocs.io/en/latest/specs/tls.html): ``client_cert_chain`` (the client's own
certificate, PEM; the ``ssl`` module of Python 3.11 does not expose the rest of the verified
chain), ``client_cert_name`` (RFC 4514), ``client_cert_error`` (None when the certificate verified
or none was presented), ``tls_version``; ``server_cert`` and ``cipher_suite`` are None (the ``ssl``
module gives neither the server's PEM nor the suite's IANA number).

A certificate counts only if it **verified** against ``[web] tls.client_ca``: the context asks for
one only when ``client_ca`` is set (``CERT_OPTIONAL``, or ``CERT_REQUIRED`` with
``require_client_cert``), and then OpenSSL fails the handshake for one that does not verify; a
presented certificate on a context that verifies nothing (which OpenSSL does not let happen) is
reported with ``client_cert_error`` set and never read. :func:`verified_cn` is the one reader.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import structlog
from cryptography import x509
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger("msc.web")

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(transport: Any) -> dict[str, Any] | None:
    """The ASGI ``tls`` extension of a connection, or None for a connection without TLS."""
    obj = transport.get_extra_info("ssl_object")
    if obj is None:
        return None
    der = obj.getpeercert(binary_form=True)
    chain: list[str] = []
    name: str | None = None
    error: str | None = None
    if der:
        # getpeercert() (not binary) is {} unless the context verified the peer (CPython's ssl):
        # with verification on, a certificate that did not verify never completes the handshake.
        verified = obj.context.verify_mode != ssl.CERT_NONE and bool(obj.getpeercert())
        if verified:
            chain = [ssl.DER_cert_to_PEM_cert(der)]
            try:
                name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
            except ValueError:
                error = "certificate subject unreadable"
                chain = []
        else:
            error = "certificate not verified"
    return {"server_cert": None, "client_cert_chain": chain, "client_cert_name": name,
            "client_cert_error": error, "tls_version": _TLS_VERSIONS.get(obj.version() or ""),
            "cipher_suite": None}


def verified_cn(scope: Mapping[str, Any]) -> str | None:
    """The subject CN of the client certificate that verified on this request's connection, or
    None (no TLS extension, no certificate, not verified, no CN). With several CN attributes the
    last one counts — what the switch's own TLS listener takes from the same certificate
    (``msc.server.session``), so a station bound by ``client_cert_cn`` admits the same browsers
    through the console as terminals over TLS."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not tls or tls.get("client_cert_error") is not None or not tls.get("client_cert_chain"):
        return None
    try:
        cert = x509.load_pem_x509_certificate(tls["client_cert_chain"][0].encode("ascii"))
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if not cns:
        return None
    value = cns[-1].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _with_tls(inner: Any, info: dict[str, Any]) -> Any:
    async def app(scope, receive, send):
        scope["extensions"] = {**(scope.get("extensions") or {}), "tls": info}
        return await inner(scope, receive, send)

    return app


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose HTTP requests — and the WebSockets it upgrades to — carry
    ``scope["extensions"]["tls"]``."""

    tls_info: dict[str, Any] | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.tls_info = tls_extension(transport)
        if self.tls_info is not None:
            self.app = _with_tls(self.app, self.tls_info)

    def handle_websocket_upgrade(self, event: Any) -> None:
        """uvicorn's own upgrade (h11_impl ``handle_websocket_upgrade``), the WebSocket protocol's
        app given the connection's TLS extension before it sees a byte."""
        self.connections.discard(self)
        output = [event.method, b" ", event.target, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        protocol: Any = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state)
        if self.tls_info is not None:
            protocol.app = _with_tls(protocol.app, self.tls_info)
        protocol.connection_made(self.transport)
        protocol.data_received(b"".join(output))
        self.transport.set_protocol(protocol)
