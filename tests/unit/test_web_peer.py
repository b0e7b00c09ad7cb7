"""The browser's client certificate as the web console reads it (msc.web.peer): the ASGI TLS
extension built from a real TLS handshake (in memory, OpenSSL on both sides), and the one CN
reader — a CN is read only from a certificate that verified against ``[web] tls.client_ca``."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from msc.web.certs import self_signed
from msc.web.peer import tls_extension, verified_cn

NOW = dt.datetime.now(dt.UTC)


def _cert(subject: x509.Name, issuer: x509.Name, key, signer, *, ca: bool):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(minutes=5))
         .not_valid_after(NOW + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(signer, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    self_signed(d / "server.crt", d / "server.key")
    out = {"dir": d}
    for stem in ("ca", "other"):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{stem} CA")])
        out[stem] = (_cert(name, name, key, key, ca=True), key)
        (d / f"{stem}.crt").write_bytes(_pem(out[stem][0]))

    def client(stem: str, subject: x509.Name, ca: str = "ca") -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        ca_cert, ca_key = out[ca]
        (d / f"{stem}.crt").write_bytes(_pem(_cert(subject, ca_cert.subject, key, ca_key, ca=False)))
        (d / f"{stem}.key").write_bytes(_pem(key))

    cn = NameOID.COMMON_NAME
    client("desk7", x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ICS"), x509.NameAttribute(cn, "DESK7")]))
    client("two_cns", x509.Name([x509.NameAttribute(cn, "FIRST"), x509.NameAttribute(cn, "DESK9")]))
    client("no_cn", x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ICS")]))
    client("forged", x509.Name([x509.NameAttribute(cn, "DESK7")]), ca="other")
    return out


class _Transport:
    def __init__(self, obj) -> None:
        self.obj = obj

    def get_extra_info(self, name, default=None):
        return self.obj if name == "ssl_object" else default


def handshake(pki, *, client_ca: str | None, client: str | None, require: bool = False):
    """A TLS handshake in memory between msc.config.tls's server context and a client; returns
    the server's SSLObject (or raises ssl.SSLError as the server would)."""
    from msc.config.tls import server_ssl_context

    d = pki["dir"]

    class Tls:
        cert, key = "server.crt", "server.key"

    Tls.client_ca = client_ca  # type: ignore[attr-defined]
    Tls.require_client_cert = require  # type: ignore[attr-defined]

    class Settings:
        @staticmethod
        def path(name):
            return d / name

    sctx = server_ssl_context(Settings, Tls)
    cctx = ssl.create_default_context(cafile=str(d / "server.crt"))
    if client:
        cctx.load_cert_chain(d / f"{client}.crt", d / f"{client}.key")
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    cl = cctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj, out, peer_in in (("c", cl, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            if data := out.read():
                peer_in.write(data)
        if all(done.values()):
            # TLS 1.3: the server learns of a refused client certificate once it reads the
            # client's Finished; reading application data brings that out.
            cl.write(b"x")
            s_in.write(c_out.read())
            server.read(1)
            return server
    raise AssertionError("handshake did not finish")


def test_a_verified_certificate_is_in_the_extension_and_its_cn_read(pki):
    ext = tls_extension(_Transport(handshake(pki, client_ca="ca.crt", client="desk7")))
    assert ext["client_cert_error"] is None and len(ext["client_cert_chain"]) == 1
    assert ext["client_cert_name"] == "CN=DESK7,O=ICS"
    assert ext["tls_version"] in (0x0303, 0x0304)
    assert verified_cn({"extensions": {"tls": ext}}) == "DESK7"


def test_the_last_cn_counts_as_at_the_switchs_tls_listener(pki):
    ext = tls_extension(_Transport(handshake(pki, client_ca="ca.crt", client="two_cns")))
    assert verified_cn({"extensions": {"tls": ext}}) == "DESK9"


def test_no_certificate_no_cn(pki):
    for ca, client in (("ca.crt", None), (None, "desk7"), (None, None)):  # not presented / never asked for
        ext = tls_extension(_Transport(handshake(pki, client_ca=ca, client=client)))
        assert ext["client_cert_chain"] == [] and ext["client_cert_error"] is None, (ca, client)
        assert verified_cn({"extensions": {"tls": ext}}) is None
    ext = tls_extension(_Transport(handshake(pki, client_ca="ca.crt", client="no_cn")))
    assert ext["client_cert_chain"] and verified_cn({"extensions": {"tls": ext}}) is None


def test_a_certificate_from_another_ca_fails_the_handshake(pki):
    with pytest.raises(ssl.SSLError):
        handshake(pki, client_ca="ca.crt", client="forged")


def test_a_plain_connection_has_no_extension():
    assert tls_extension(_Transport(None)) is None


# Scopes that must never yield a CN (however they came about).
NOT_VERIFIED = [
    {},
    {"extensions": None},
    {"extensions": {}},
    {"extensions": {"tls": None}},
    {"extensions": {"tls": {"client_cert_chain": [], "client_cert_error": None}}},
    {"extensions": {"tls": {"client_cert_chain": ["-----BEGIN CERTIFICATE-----\nnot base64\n"], "client_cert_error": None}}},
    {"extensions": {"tls": {"client_cert_chain": ["garbage"], "client_cert_error": None}}},
]


@pytest.mark.parametrize("scope", NOT_VERIFIED)
def test_scopes_without_a_verified_certificate(scope):
    assert verified_cn(scope) is None


def test_an_error_hides_even_a_readable_certificate(pki):
    ext = tls_extension(_Transport(handshake(pki, client_ca="ca.crt", client="desk7")))
    assert verified_cn({"extensions": {"tls": {**ext, "client_cert_error": "certificate not verified"}}}) is None
