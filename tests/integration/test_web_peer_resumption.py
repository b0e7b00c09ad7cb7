"""A browser that resumes its TLS session (TLS 1.2 session ID/ticket, TLS 1.3 PSK) still shows the
certificate it logged on with: msc.web.peer reads the resumed session's peer certificate, so the
web console's binding of a session to its certificate (docs/WEB.md "Stations bound by
certificate") does not log off a browser that resumes. Real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from msc.web.peer import tls_extension, verified_cn
from tests.unit.test_web_peer import pki  # noqa: F401  (the module's certificates)
from tests.waiting import HANG_S


class _Transport:
    def __init__(self, obj) -> None:
        self.obj = obj

    def get_extra_info(self, name, default=None):
        return self.obj if name == "ssl_object" else default


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_resumed_session_keeps_its_verified_certificate(pki, version):  # noqa: F811
    d = pki["dir"]
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(d / "server.crt", d / "server.key")
    sctx.load_verify_locations(d / "ca.crt")
    sctx.verify_mode = ssl.CERT_OPTIONAL
    cctx = ssl.create_default_context(cafile=str(d / "server.crt"))
    cctx.load_cert_chain(d / "desk7.crt", d / "desk7.key")
    cctx.maximum_version = version
    seen: list[tuple[bool, str | None]] = []
    with socket.create_server(("127.0.0.1", 0)) as ls:
        ls.settimeout(HANG_S)

        def serve() -> None:
            for _ in range(2):
                conn, _ = ls.accept()
                with sctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)  # after the client's Finished (TLS 1.3 tickets go out then)
                    seen.append((s.session_reused, verified_cn({"extensions": {"tls": tls_extension(_Transport(s))}})))
                    s.sendall(b"y")

        th = threading.Thread(target=serve)
        th.start()
        session = None
        for _ in range(2):
            with cctx.wrap_socket(socket.create_connection(ls.getsockname(), timeout=HANG_S), server_hostname="127.0.0.1",
                                  session=session) as c:
                c.sendall(b"x")
                c.recv(1)
                session = c.session
        th.join(10)
    assert seen == [(False, "DESK7"), (True, "DESK7")]
