"""TLS on listeners and upstream links (CJIS SC-8/SC-13; CONFIG.md tls tables)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tests.conftest import PASSWORD
from tests.tlsutil import PKI
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(60)

TLS_STATION = '''
[[station]]
mnemonic = "TLS1"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
client_cert_cn = "TLS1"
authorizations = ["cjis"]
'''


@pytest.fixture
def pki(tmp_path):
    p = PKI(tmp_path / "pki")
    p.issue("server", "localhost", server=True)
    p.issue("tls1", "TLS1")
    p.issue("other", "OTHER1")
    return p


def client_ctx(pki, cert: str | None = None, *, max_version=None, min_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    if cert:
        ctx.load_cert_chain(pki.dir / f"{cert}.crt", pki.dir / f"{cert}.key")
    if max_version is not None:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the *client* offer old versions: the server must refuse
        ctx.minimum_version = min_version or ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = max_version
    return ctx


def listener_tls(pki, require: bool) -> str:
    return (f'tls = {{ cert = "{pki.dir}/server.crt", key = "{pki.dir}/server.key", '
            f'client_ca = "{pki.ca_path}", require_client_cert = {str(require).lower()} }}')


async def test_client_certificate_binds_its_station_and_none_does_not(harness, pki):
    await harness.start_switch(listener_extra=listener_tls(pki, False), extra=TLS_STATION)
    good = await WireClient.connect(harness.port, ssl=client_ctx(pki, "tls1"))
    await good.banner()
    assert (await good.logon("TLS1", "TS0001", PASSWORD)).type == "A"
    other = await WireClient.connect(harness.port, ssl=client_ctx(pki, "other"))
    await other.banner()
    assert (await other.logon("TLS1", "TS0002", PASSWORD)).code == "E210"  # wrong certificate
    anon = await WireClient.connect(harness.port, ssl=client_ctx(pki))
    await anon.banner()
    assert (await anon.logon("TLS1", "TS0002", PASSWORD)).code == "E210"  # no certificate
    # Address-bound stations work over TLS without a certificate.
    assert (await anon.logon("ICS1", "TS0002", PASSWORD)).type == "A"


async def test_required_client_certificate(harness, pki):
    await harness.start_switch(listener_extra=listener_tls(pki, True), extra=TLS_STATION)
    ok = await WireClient.connect(harness.port, ssl=client_ctx(pki, "tls1"))
    await ok.banner()
    # Without a certificate the handshake is refused: TLS 1.3 finishes the client's side first and
    # delivers the server's "certificate required" alert on the first read. What the client sees is
    # an SSL error or a closed connection, promptly (a hang fails by the timeout), and never a
    # byte of msc (no banner).
    got = b""
    try:
        r, w = await asyncio.open_connection("127.0.0.1", harness.port, ssl=client_ctx(pki))
        got = await asyncio.wait_for(r.read(1), HANG_S)
        w.close()
    except (ssl.SSLError, ConnectionError):
        pass
    assert got == b"", f"a client without a certificate read {got!r} from msc"
    # The station with its certificate is still served after the refusal.
    assert (await ok.logon("TLS1", "TS0001", PASSWORD)).type == "A"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_tls_1_0_and_1_1_handshakes_fail(harness, pki, version):
    # Control: this client really speaks the old version (against a server that allows it) …
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    permissive.load_cert_chain(pki.dir / "server.crt", pki.dir / "server.key")
    srv = await asyncio.start_server(lambda r, w: w.write(b"x"), "127.0.0.1", 0, ssl=permissive)
    r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1], ssl=client_ctx(pki, max_version=version))
    assert w.get_extra_info("ssl_object").version() in ("TLSv1", "TLSv1.1")
    w.close()
    srv.close()
    # … and msc refuses it.
    await harness.start_switch(listener_extra=listener_tls(pki, False))
    ctx = client_ctx(pki, max_version=version)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        r, w = await asyncio.open_connection("127.0.0.1", harness.port, ssl=ctx)
        await r.read(1)
    # TLS 1.2 with the same client settings otherwise works.
    ok = await WireClient.connect(harness.port, ssl=client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2,
                                                               min_version=ssl.TLSVersion.TLSv1_2))
    await ok.banner()


async def test_upstream_link_over_tls(harness, pki):
    await harness.start_stub(tls_cert=str(pki.dir / "server.crt"), tls_key=str(pki.dir / "server.key"))
    await harness.start_switch(upstream_extra=f'tls = {{ ca = "{pki.ca_path}", server_name = "localhost" }}')
    await harness.wait_upstream()
    c = await harness.operator()
    assert (await c.send("ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")).type == "A"
    assert (await c.output()).text.startswith("ICS1.QW.CA0130000.")


async def test_upstream_with_an_untrusted_certificate_stays_down(harness, pki, tmp_path):
    other = PKI(tmp_path / "other-pki")
    await harness.start_stub(tls_cert=str(pki.dir / "server.crt"), tls_key=str(pki.dir / "server.key"))
    await harness.start_switch(upstream_extra=f'tls = {{ ca = "{other.ca_path}", server_name = "localhost" }}')
    link = harness.switch.router.links["clets"]
    assert not await link.wait_up(1.5)
    c = await harness.operator()
    assert (await c.send("ICS1.QW.CA0130000.NAM/X.DOB/19800101")).code == "E302"
