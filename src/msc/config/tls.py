"""TLS contexts from the configuration's ``tls`` tables (CJIS SC-8/SC-13): TLS 1.2 minimum, AEAD
ciphers with forward secrecy only, no compression. One builder for the switch's listeners and
links and for the web console, so every TLS endpoint of msc has the same minimums."""

from __future__ import annotations

import ssl

#: ECDHE/DHE key exchange with AES-GCM or ChaCha20-Poly1305 (TLS 1.2); TLS 1.3's suites are all AEAD.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!RC4:!3DES:!EXPORT"


def server_ssl_context(settings, tls) -> ssl.SSLContext:
    """TLS for a listener (``ServerTls``): TLS 1.2 minimum, strong AEAD ciphers only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(settings.path(tls.cert), settings.path(tls.key))
    if tls.client_ca:
        ctx.load_verify_locations(settings.path(tls.client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(settings, tls) -> ssl.SSLContext:
    """TLS for a connection msc makes (``ClientTls``): the same minimums, the server verified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    if tls.ca:
        ctx.load_verify_locations(settings.path(tls.ca))
    else:
        ctx.load_default_certs()
    if tls.cert:
        ctx.load_cert_chain(settings.path(tls.cert), settings.path(tls.key) if tls.key else None)
    return ctx
