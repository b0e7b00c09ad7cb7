"""A station bound by client certificate (``client_cert_cn``) used from the web console, in a real
headless Chromium (Debian's /usr/bin/chromium, Playwright's ``client_certificates`` on the
context) against real ``msc stub``, ``msc serve`` and ``msc web`` processes (issue 17, docs/WEB.md
"Stations bound by certificate").

``[web] tls.client_ca`` makes ``msc web`` ask browsers for a certificate; the CN of one that
verified travels to the switch in the PROXY v2 header. So: the browser holding DESK7's certificate
logs on to ICS7 and its traffic is journaled exactly as a TLS terminal's holding the same
certificate (same kinds, mnemonic, TAF, ORI, message key, codes — compared record by record); a
browser without it is refused ICS7 (E210) but still works at an address-bound station; a session
cookie carried to a browser without the certificate is worth nothing; a certificate from another
CA never completes the TLS handshake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from msc.config.load import load
from msc.journal.search import Query, search
from msc.keyring import KeyRing
from msc.mnemonics import totp
from tests.conftest import PASSWORD, add_totp_user, free_port, make_config
from tests.e2e.conftest import Proc, start_serve, wait_for, wait_port
from tests.waiting import HANG_S
from tests.wire import WireClient

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make system-deps)"),
    pytest.mark.timeout(180),
]
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
# Playwright's assertions wait 5 s by default, its actions as long as the context says: on a loaded
# machine a browser is slow, not broken (a bound for a hang: tests/waiting.py).
expect.set_options(timeout=HANG_S * 1000)

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]

EXTRA = """
[[listener]]
name = "web"
bind = "127.0.0.1:{web_listener}"
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]

[[listener]]
name = "tls"
bind = "127.0.0.1:{tls_listener}"
tls = {{ cert = "tls/web.crt", key = "tls/web.key", client_ca = "tls/ca.crt", require_client_cert = true }}

[[station]]
mnemonic = "ICS7"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
client_cert_cn = "DESK7"
authorizations = ["cjis"]

[web]
bind = "127.0.0.1:{web_port}"
tls = {{ cert = "tls/web.crt", key = "tls/web.key", client_ca = "tls/ca.crt" }}
listener = "web"
header = "ICS1"
logon_attempts_per_minute = 30
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, stem: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(f"{stem} CA")).issuer_name(_name(f"{stem} CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def make_client(directory: Path, stem: str, cn: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    """A client certificate (``clientAuth``) for ``cn`` signed by ``ca``: ``stem.crt`` and ``stem.key``."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))


class Site:
    def __init__(self, tmp: Path, cfg: Path, port: int, tls_port: int, secrets: dict[str, bytes]):
        self.tmp, self.cfg, self.port, self.tls_port, self.secrets = tmp, cfg, port, tls_port, secrets
        self.url = f"https://127.0.0.1:{port}"
        self.tls = tmp / "tls"
        self.settings = load(cfg)
        self._used: dict[str, int] = {}

    def code(self, uid: str) -> str:
        """A one-time password not used yet (each 30-s step once; the next step is within drift)."""
        step = int(time.time()) // totp.STEP_S
        s = max(step, self._used.get(uid, step - 1) + 1)
        assert s <= step + 1, "no unused TOTP step within the drift"
        self._used[uid] = s
        return totp.code_at(self.secrets[uid], s * totp.STEP_S)

    def records(self, **q):
        ring = KeyRing(self.settings.data_dir / "keys", self.settings.key_file)
        return list(search(self.settings.journal_dir, ring, Query(**q)))

    def client_cert(self, stem: str) -> list[dict]:
        return [{"origin": self.url, "certPath": str(self.tls / f"{stem}.crt"), "keyPath": str(self.tls / f"{stem}.key")}]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from msc.web.certs import self_signed

    tmp = tmp_path_factory.mktemp("webcert")
    tls = tmp / "tls"
    self_signed(tls / "web.crt", tls / "web.key")
    agency = make_ca(tls, "ca")
    make_client(tls, "desk7", "DESK7", agency)
    make_client(tls, "desk8", "DESK8", agency)
    make_client(tls, "forged7", "DESK7", make_ca(tls, "other"))  # right CN, wrong CA
    up, web_port, tls_port = free_port(), free_port(), free_port()
    cfg = make_config(tmp, upstream_ports=[up], port=free_port(), metrics_port=free_port(),
                      extra=EXTRA.format(web_listener=free_port(), tls_listener=tls_port, web_port=web_port))
    secrets = {uid: add_totp_user(cfg, uid, name=name, role=role) for uid, name, role in (
        ("OP0001", "OPERATOR, ONE", "full"), ("OP0002", "OPERATOR, TWO", "full"), ("OP0003", "OPERATOR, THREE", "full"),
        ("OP0004", "OPERATOR, FOUR", "full"), ("OP0005", "OPERATOR, FIVE", "full"),
        ("IV0001", "INVESTIGATOR, IVAN", "investigator"))}
    procs: list[Proc] = []
    try:
        procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--control",
                          f"127.0.0.1:{free_port()}", "--seed", "1", "--parts", "QW=2@100", log=tmp / "stub.err"))
        wait_port(up)
        start_serve(procs, tmp, cfg)
        ready = tmp / "web.ready"
        web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=tmp / "web.err")
        procs.append(web)
        wait_for(ready, web)
        yield Site(tmp, cfg, web_port, tls_port, secrets)
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


def new_context(browser, site: Site, cert: str | None):
    kw = {"client_certificates": site.client_cert(cert)} if cert else {}
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900}, **kw)
    ctx.set_default_timeout(HANG_S * 1000)
    return ctx


def logon(site: Site, page, user: str, header: str) -> None:
    page.goto(site.url + "/")
    page.wait_for_selector("#banner-view:not([hidden]), #logon-view:not([hidden])")
    if page.is_visible("#banner-view"):
        page.keyboard.press("Enter")
    page.wait_for_selector("#logon-view:not([hidden])")
    page.check("input[name=console][value=operator]")
    page.fill("#logon-user", user)
    page.fill("#logon-password", PASSWORD)
    page.fill("#logon-otp", site.code(user))
    page.fill("#logon-header", header)
    page.press("#logon-password", "Enter")


def wait(predicate, timeout=HANG_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def shape(records) -> list[tuple]:
    """What a session's journal says, without what differs by person and moment (user, txn,
    the message's own reference, times, OSNs): kind, direction, mnemonic, TAF, ORI, key, code."""
    return sorted((r.kind, r.direction, r.mnemonic, r.taf, r.ori, r.mke, r.code or "") for r in records)


def session_records(site: Site, user: str) -> list:
    return [r for r in site.records(user=user) if r.mnemonic == "ICS7"]


async def tls_terminal_session(site: Site, user: str) -> None:
    """A TLS terminal holding DESK7's certificate: ICS7, one QW, both answers acknowledged, LOGOFF."""
    ctx = ssl.create_default_context(cafile=str(site.tls / "web.crt"))
    ctx.load_cert_chain(site.tls / "desk7.crt", site.tls / "desk7.key")
    c = await WireClient.connect(site.tls_port, ssl=ctx)
    await c.banner()
    assert (await c.logon("ICS7", user, PASSWORD, site.code(user))).type == "A"
    assert (await c.send("ICS7T1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")).type == "A"
    for _ in range(2):  # state file, then NCIC (auto-acknowledged by the client)
        await asyncio.wait_for(c.outputs.get(), HANG_S)
    assert (await c.send("ICS7.LOGOFF")).type == "A"
    c.close()


def test_browser_with_the_certificate_uses_the_certificate_station_like_a_tls_terminal(site, browser):
    # The reference: a TLS terminal with the same certificate.
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        pool.submit(asyncio.run, tls_terminal_session(site, "OP0002")).result(timeout=60)
    terminal = wait(lambda: (r := session_records(site, "OP0002")) and
                    sum(x.kind == "DELIVERED" for x in r) >= 2 and any(x.text == "LOGOFF" for x in r) and r)
    # The browser holding DESK7's certificate, through msc web.
    ctx = new_context(browser, site, "desk7")
    try:
        page = ctx.new_page()
        logon(site, page, "OP0001", "ICS7")
        page.wait_for_selector("#operator-view:not([hidden])")
        expect(page.locator("#status")).to_have_text("connected")
        assert page.inner_text("#who").startswith("OP0001 at ICS7")
        page.keyboard.press("Alt+1")  # the QW form, keyboard only
        page.keyboard.type("SMITH, JOHN")
        page.keyboard.press("Tab")
        page.keyboard.type("19800101")
        page.keyboard.press("Enter")
        page.wait_for_selector("#sent li.accepted")
        expect(page.locator("#inbox li")).to_have_count(2)
        assert "NO NCIC WANT" in page.inner_text("#inbox")
        page.keyboard.press("Alt+l")
        page.wait_for_selector("#ended-view:not([hidden])")
    finally:
        ctx.close()
    web = wait(lambda: (r := session_records(site, "OP0001")) and
               sum(x.kind == "DELIVERED" for x in r) >= 2 and any(x.text == "LOGOFF" for x in r) and r)
    # OIF/TAF, authorization and journal: the same records, field for field, as the TLS terminal's.
    assert shape(web) == shape(terminal)
    assert {r.taf for r in web if r.taf} == {"7F000001"}  # the browser's own address (PROXY header)
    assert any(r.kind == "FORWARDED" and r.mke == "QW" for r in web)


def test_browser_without_the_certificate_is_refused_the_certificate_station(site, browser):
    # No certificate; the agency's certificate of another desk (DESK8).
    for cert, user in ((None, "OP0003"), ("desk8", "OP0005")):
        ctx = new_context(browser, site, cert)
        try:
            page = ctx.new_page()
            logon(site, page, user, "ICS7")
            expect(page.locator("#logon-error")).to_contain_text("E210")
            assert page.is_visible("#logon-view")
            # The same browser is an ordinary operator at an address-bound station.
            page.fill("#logon-password", PASSWORD)
            page.fill("#logon-otp", site.code(user))
            page.fill("#logon-header", "ICS1")
            page.press("#logon-password", "Enter")
            page.wait_for_selector("#operator-view:not([hidden]), #logon-error:has-text('E')")
            assert page.is_visible("#operator-view"), page.inner_text("#logon-error")
            assert page.inner_text("#who").startswith(f"{user} at ICS1")
            page.keyboard.press("Alt+l")
            page.wait_for_selector("#ended-view:not([hidden])")
        finally:
            ctx.close()
        # At ICS7 the journal holds the refused claim, and nothing else of this person's.
        assert [(r.kind, r.code, r.taf) for r in session_records(site, user)] == [("REJECTED", "E210", "7F000001")]


def test_a_session_cookie_is_worth_nothing_without_its_certificate(site, browser):
    with_cert, without = new_context(browser, site, "desk7"), new_context(browser, site, None)
    try:
        page = with_cert.new_page()
        logon(site, page, "OP0004", "ICS7")
        page.wait_for_selector("#operator-view:not([hidden])")
        assert with_cert.request.get(site.url + "/api/forms").status == 200
        without.add_cookies(with_cert.cookies())
        assert without.request.get(site.url + "/api/forms").status == 401  # same cookie, no certificate
        assert with_cert.request.get(site.url + "/api/forms").status == 200  # the owner is not logged off
        page.keyboard.press("Alt+l")
        page.wait_for_selector("#ended-view:not([hidden])")
    finally:
        with_cert.close()
        without.close()


def test_a_certificate_from_another_ca_never_completes_the_handshake(site):
    """``client_cert_cn`` = DESK7 on a certificate the agency's CA did not sign: the TLS handshake
    fails (nothing reaches the console, no CN is ever read)."""
    ctx = ssl.create_default_context(cafile=str(site.tls / "web.crt"))
    ctx.load_cert_chain(site.tls / "forged7.crt", site.tls / "forged7.key")
    with socket.create_connection(("127.0.0.1", site.port), timeout=HANG_S) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if not tls.recv(1):  # TLS 1.3: the refusal arrives after the client's Finished
                    raise ConnectionError("closed")


def test_console_logons_reach_the_identity_service_as_web(site, browser):
    """Every attempt the web console makes at the authentication service is ``via="web"``: a
    refused investigator logon is journaled ``LOGON FAILED … WEB …`` and counted on the ``web``
    path of the shared logon counts (``msc_logon_failures_total{path="web"}``), never ``cli``."""
    from msc.mnemonics.state import StateStore

    def counts():
        store = StateStore(site.settings.state_db)
        try:
            return store.auth_counts()
        finally:
            store.close()

    before = counts()
    ctx = new_context(browser, site, "desk7")
    try:
        page = ctx.new_page()
        page.goto(site.url + "/")
        page.wait_for_selector("#banner-view:not([hidden]), #logon-view:not([hidden])")
        if page.is_visible("#banner-view"):
            page.keyboard.press("Enter")
        page.wait_for_selector("#logon-view:not([hidden])")
        page.check("input[name=console][value=investigator]")
        page.fill("#logon-user", "IV0001")
        page.fill("#logon-password", "not the password")
        page.fill("#logon-otp", site.code("IV0001"))
        page.press("#logon-password", "Enter")
        expect(page.locator("#logon-error")).to_contain_text("LOGON REFUSED")
    finally:
        ctx.close()
    after = counts()
    assert after.get(("web", "failure"), 0) == before.get(("web", "failure"), 0) + 1
    assert after.get(("cli", "failure"), 0) == before.get(("cli", "failure"), 0)
    failed = [r for r in site.records(kind="SESSION", user="IV0001") if r.text.startswith("LOGON FAILED")]
    assert failed and all(" WEB " in r.text for r in failed)
