"""The investigator's and administrator's pages end the moment the server ends their session
(docs/WEB.md "time limits"; CJIS AC-11/AC-12): the page clears what it showed (decrypted journal
text, the users list) and says why, without waiting for the person's next keypress. Real headless
Chromium (Debian's /usr/bin/chromium) against a real ``msc web`` with a short ``idle_logoff_s``;
these consoles do not need the switch, so only ``msc web`` runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port, make_config
from tests.e2e.conftest import Proc, wait_for
from tests.e2e.test_web_console import CHROMIUM, LAUNCH_ARGS, WEB, Site, logon
from tests.waiting import HANG_S

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make system-deps)"),
    pytest.mark.timeout(120),
]
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
# Playwright's assertions wait 5 s by default, its actions as long as the context says: on a loaded
# machine a browser is slow, not broken (a bound for a hang: tests/waiting.py).
expect.set_options(timeout=HANG_S * 1000)

#: The server's idle logoff for this module: short, so the test waits seconds, not minutes — but
#: each test's steps before it goes idle (a logon, a search, a key press) must each come within it,
#: and a browser on a loaded machine may take seconds for one (2 s left it little room).
IDLE_S = 5


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from msc.web.certs import self_signed
    from tests.conftest import add_totp_user

    tmp = tmp_path_factory.mktemp("webend")
    self_signed(tmp / "tls" / "web.crt", tmp / "tls" / "web.key")
    web_port = free_port()
    cfg = make_config(tmp, idle_logoff_s=IDLE_S, extra=WEB.format(web_listener=free_port(), web_port=web_port))
    secrets = {uid: add_totp_user(cfg, uid, name=name, role=role) for uid, name, role in (
        ("IV0001", "INVESTIGATOR, IVAN", "investigator"), ("AM0001", "ADMINISTRATOR, ANN", "admin"))}
    ready = tmp / "web.ready"
    web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=tmp / "web.err")
    try:
        wait_for(ready, web)
        yield Site(tmp, cfg, f"https://127.0.0.1:{web_port}", 0, secrets)
    finally:
        web.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(ignore_https_errors=True)
    ctx.set_default_timeout(HANG_S * 1000)
    yield ctx.new_page()
    ctx.close()


def test_investigator_page_clears_and_says_idle_when_the_server_logs_it_off(site, page):
    logon(site, page, "IV0001", console="investigator", otp=site.code("IV0001"))
    page.wait_for_selector("#investigator-view:not([hidden])")
    page.fill("#q-case", "IDLE-1")
    page.press("#q-case", "Enter")
    page.wait_for_selector("#report table.records")
    assert "IV0001" in page.inner_text("#report")
    # Nobody touches the page: the server's idle logoff ends the session and the page follows
    # at once (waited on, bound well above IDLE_S; nothing is pressed meanwhile).
    page.wait_for_selector("#ended-view:not([hidden])", timeout=(IDLE_S + HANG_S) * 1000)
    expect(page.locator("#ended-why")).to_have_text("Session ended: IDLE.")
    assert page.inner_text("#report") == "" and page.input_value("#q-case") == ""
    assert page.locator("#report table").count() == 0
    assert site.records(kind="SESSION", user="IV0001")[-1].text == "LOGOFF WEB IDLE"


def test_administrator_page_clears_and_says_idle_when_the_server_logs_it_off(site, page):
    logon(site, page, "AM0001", console="admin", otp=site.code("AM0001"))
    page.wait_for_selector("#stations tr#st-ICS1")
    page.keyboard.press("Alt+2")
    page.wait_for_selector("#users tr#user-IV0001")
    page.wait_for_selector("#ended-view:not([hidden])", timeout=(IDLE_S + HANG_S) * 1000)
    expect(page.locator("#ended-why")).to_have_text("Session ended: IDLE.")
    assert page.locator("#users tbody tr").count() == 0 and page.locator("#stations tbody tr").count() == 0


def test_a_request_after_the_end_names_the_reason(site, page):
    """A page that learns of the end from a refused request (its socket lost) says why too."""
    logon(site, page, "IV0001", console="investigator", otp=site.code("IV0001"))
    page.wait_for_selector("#investigator-view:not([hidden])")
    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-msc")
    page.wait_for_selector("#ended-view:not([hidden])", timeout=(IDLE_S + HANG_S) * 1000)
    import httpx

    with httpx.Client(verify=False, timeout=HANG_S, cookies={"__Host-msc": cookie["value"]}) as c:
        r = c.post(site.url + "/api/journal/verify", headers={"x-csrftoken": "x"})
        assert r.status_code in (401, 403)
        r = c.get(site.url + "/api/admin/stations")
        assert r.status_code == 401 and r.json()["ended"] == "IDLE"
