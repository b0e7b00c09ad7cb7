"""The web console (issue 17) in a real headless Chromium — Debian's /usr/bin/chromium driven by
Playwright, never a downloaded browser — against real processes: ``msc stub``, ``msc serve`` and
``msc web``.

One browser for the module, a fresh context (cookies, storage) per test. Scenarios: an operator
logs on with a TOTP code, sends a QW through the form, sees the answer, and the journal shows its
DELIVERED record; a refused field shown inline; a hit highlighted; lockout after five failures;
an investigator searches and downloads a bundle the offline verifier accepts; an administrator
disables a station and the operator's page is logged off (the issue asks "within a second": the
test waits on the condition and measures it, ``MSC_WEB_BENCH=1`` writes it to ``bench/results``); cookie flags and CSRF
refusal (also with a plain HTTP client), and a WebSocket from another origin refused.

Screenshots of each page go to ``$MSC_WEB_SCREENSHOTS`` when it is set (``docs/web`` holds the
committed ones: ``MSC_WEB_SCREENSHOTS=docs/web .venv/bin/python -m pytest tests/e2e/test_web_console.py``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.keyring import KeyRing
from msc.mnemonics import totp
from tests.conftest import PASSWORD, WEB_CONSOLE, add_totp_user, free_port, make_config
from tests.e2e.conftest import Proc, start_serve, wait_for, wait_port
from tests.waiting import HANG_S

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
HIT_DOB = "19800327"  # with seed 1, NAM/DOE, JOHN + this DOB is an NCIC wanted-person hit

WEB = WEB_CONSOLE + "logon_attempts_per_minute = 30\n"


class Site:
    def __init__(self, tmp: Path, cfg: Path, url: str, ctl: int, secrets: dict[str, bytes]):
        self.tmp, self.cfg, self.url, self.ctl, self.secrets = tmp, cfg, url, ctl, secrets
        self.settings = load(cfg)
        self.shots = Path(os.environ["MSC_WEB_SCREENSHOTS"]) if os.environ.get("MSC_WEB_SCREENSHOTS") else None

    def code(self, uid: str) -> str:
        """A one-time password not used yet: each 30-s step is accepted once (RFC 6238 §5.2),
        the next step's code is accepted too (one step of drift), so a test never waits."""
        secret = self.secrets[uid]
        step = int(time.time()) // totp.STEP_S
        used = getattr(self, "_used", {})
        self._used = used
        s = max(step, used.get(uid, step - 1) + 1)
        assert s <= step + 1, "no unused TOTP step within the drift (a user logged on 3 times in 30 s)"
        used[uid] = s
        return totp.code_at(secret, s * totp.STEP_S)

    def records(self, **q):
        ring = KeyRing(self.settings.data_dir / "keys", self.settings.key_file)
        return list(search(self.settings.journal_dir, ring, Query(**q)))

    def shot(self, page, name: str) -> None:
        if self.shots is not None:
            self.shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


def control(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from msc.web.certs import self_signed

    tmp = tmp_path_factory.mktemp("web")
    self_signed(tmp / "tls" / "web.crt", tmp / "tls" / "web.key")
    up, ctl, web_port = free_port(), free_port(), free_port()
    cfg = make_config(tmp, upstream_ports=[up], port=free_port(), metrics_port=free_port(),
                      extra=WEB.format(web_listener=free_port(), web_port=web_port))
    secrets = {uid: add_totp_user(cfg, uid, name=name, role=role) for uid, name, role in (
        ("OP0001", "OPERATOR, ONE", "full"), ("OP0002", "OPERATOR, TWO", "full"), ("OP0003", "OPERATOR, THREE", "full"),
        ("OP0004", "OPERATOR, FOUR", "full"), ("OP0005", "OPERATOR, FIVE", "full"),
        ("OP0006", "OPERATOR, SIX", "full"), ("OP0007", "OPERATOR, SEVEN", "full"),
        ("IV0001", "INVESTIGATOR, IVAN", "investigator"), ("IV0002", "INVESTIGATOR, IRIS", "investigator"),
        ("IV0003", "INVESTIGATOR, INES", "investigator"),
        ("AM0001", "ADMINISTRATOR, ANN", "admin"))}
    procs: list[Proc] = []
    try:
        procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--control", f"127.0.0.1:{ctl}",
                          "--seed", "1", "--parts", "QW=2@100", log=tmp / "stub.err"))
        wait_port(up)
        start_serve(procs, tmp, cfg)
        ready = tmp / "web.ready"
        web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=tmp / "web.err")
        procs.append(web)
        wait_for(ready, web)
        yield Site(tmp, cfg, f"https://127.0.0.1:{web_port}", ctl, secrets)
    finally:
        for p in reversed(procs):
            p.stop()
        log = (tmp / "web.err").read_text() if (tmp / "web.err").exists() else ""
        assert PASSWORD not in log, "a password reached the web console's log"


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser, tmp_path):
    ctx = browser.new_context(ignore_https_errors=True, accept_downloads=True, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(HANG_S * 1000)
    yield ctx
    ctx.close()


def logon(site: Site, page, user: str, *, console: str = "operator", otp: str | None = None, header: str | None = None,
          password: str = PASSWORD, shots: bool = False):
    page.goto(site.url + "/")
    page.wait_for_selector("#banner-view:not([hidden]), #logon-view:not([hidden])")
    if page.is_visible("#banner-view"):  # once per browser session (CJIS AC-8)
        if shots:
            site.shot(page, "1-banner")
        page.keyboard.press("Enter")  # acknowledges the system-use notification (keyboard first)
    page.wait_for_selector("#logon-view:not([hidden])")
    page.check(f"input[name=console][value={console}]")
    page.fill("#logon-user", user)
    page.fill("#logon-password", password)
    if otp is not None:
        page.fill("#logon-otp", otp)
    if header is not None:
        page.fill("#logon-header", header)
    if shots:
        site.shot(page, "2-logon")
    page.press("#logon-password", "Enter")


def operator(site, context, user="OP0001", header="ICS1", shots=False):
    page = context.new_page()
    logon(site, page, user, otp=site.code(user), header=header, shots=shots)
    page.wait_for_selector("#operator-view:not([hidden])")
    expect(page.locator("#status")).to_have_text("connected")
    return page


WAIT_MS = 10_000  # a bound on waiting for a condition, never a figure the test asserts


def record_logoff_latency(t_click: float, t_returned: float, t_ended: float) -> None:
    """Print the station-disable → operator-logged-off latency (issue 17: "within a second"); with
    ``MSC_WEB_BENCH=1`` also write it to ``bench/results/web-logoff-<stamp>.json`` and a line of
    ``bench/results/web-logoff.md``. The times are the test process's monotonic clock around
    Playwright calls, so each figure is an upper bound (it includes Playwright's round trips)."""
    click_to_off, returned_to_off = (t_ended - t_click) * 1000, (t_ended - t_returned) * 1000
    print(f"operator page logged off {click_to_off:.0f} ms after the administrator's click, "
          f"{returned_to_off:.0f} ms after the disable request returned")
    if not os.environ.get("MSC_WEB_BENCH"):
        return
    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    load1 = os.getloadavg()[0]
    row = {"stamp": stamp, "click_to_logged_off_ms": round(click_to_off, 1),
           "request_returned_to_logged_off_ms": round(returned_to_off, 1),
           "admin_request_ms": round((t_returned - t_click) * 1000, 1), "loadavg_1min": round(load1, 2),
           "command": "MSC_WEB_BENCH=1 .venv/bin/python -m pytest tests/e2e/test_web_console.py -k disables -s"}
    (results / f"web-logoff-{stamp}.json").write_text(json.dumps(row, indent=2) + "\n")
    md = results / "web-logoff.md"
    if not md.exists():
        md.write_text("# Station disabled → operator's browser page logged off (tests/e2e/test_web_console.py)\n\n"
                      "`MSC_WEB_BENCH=1 .venv/bin/python -m pytest tests/e2e/test_web_console.py -k disables -s`: real\n"
                      "`msc serve`, `msc web`, `msc stub` and headless Chromium on one 2-core machine. Times are the\n"
                      "test's monotonic clock around Playwright calls (upper bounds). Issue 17 asks for \"within a\n"
                      "second\"; the test itself only waits (bound 10 s) and asserts the page ended with the reason.\n\n"
                      "| run | click → logged off (ms) | disable returned → logged off (ms) | admin request (ms) | load (1 min) |\n"
                      "|---|---|---|---|---|\n")
    with md.open("a") as f:
        f.write(f"| {stamp} | {row['click_to_logged_off_ms']} | {row['request_returned_to_logged_off_ms']} | "
                f"{row['admin_request_ms']} | {row['loadavg_1min']} |\n")


def wait(predicate, timeout=HANG_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# -- the operator --------------------------------------------------------------------------------

def test_operator_logs_on_with_totp_sends_qw_sees_answer_and_it_is_delivered(site, context):
    page = operator(site, context, "OP0001", shots=True)
    assert page.inner_text("#who").startswith("OP0001 at ICS1")
    # Keyboard only: the QW form is the first (Alt+1); type, Enter sends.
    page.keyboard.press("Alt+1")
    page.keyboard.type("SMITH, JOHN")
    page.keyboard.press("Tab")
    page.keyboard.type("19800101")
    page.keyboard.press("Enter")
    page.wait_for_selector("#sent li.accepted")
    ref = page.inner_text("#sent li .ref")
    # Both parts of the answer (state file, then NCIC), linked to the request by its reference.
    expect(page.locator("#inbox li")).to_have_count(2)
    texts = page.inner_text("#inbox")
    assert f"answer to {ref}" in texts and "NO NCIC WANT" in texts and "NO CALIFORNIA WANT" in texts
    expect(page.locator(f"#req-{ref} .answers")).to_have_text("2 answer(s)")  # the sent list counts both
    site.shot(page, "3-operator")
    # Each output was acknowledged only once shown: the journal says DELIVERED for both.
    delivered = wait(lambda: [r for r in site.records(kind="DELIVERED", mnemonic="ICS1", user="OP0001")
                              if r.txn] if len(site.records(kind="DELIVERED", mnemonic="ICS1", user="OP0001")) >= 2 else None)
    txns = {r.txn for r in site.records(kind="FORWARDED", mnemonic="ICS1", user="OP0001")}
    assert {r.txn for r in delivered} <= txns and delivered
    fwd = [r for r in site.records(kind="FORWARDED", mnemonic="ICS1", user="OP0001") if f"ICS1{ref}." in r.text]
    assert fwd and fwd[0].taf == "7F000001"  # the browser's own address, passed on in the PROXY header
    page.keyboard.press("Alt+l")
    page.wait_for_selector("#ended-view:not([hidden])")
    # The page is cleared first (WEB.md "Security"), the LOGOFF at the switch follows: wait for it.
    assert wait(lambda: any(r.text == "LOGOFF" for r in site.records(kind="SESSION", user="OP0001")))


def test_refused_field_shown_inline_and_nothing_sent(site, context):
    page = operator(site, context, "OP0002")
    page.keyboard.press("Alt+1")
    page.fill("#f-NAM", "SMITH, JOHN")
    page.fill("#f-DOB", "19801301")  # month 13
    expect(page.locator("#e-DOB")).to_contain_text("IS NOT A DATE")
    assert page.get_attribute("#f-DOB", "aria-invalid") == "true"
    page.press("#f-DOB", "Enter")
    expect(page.locator("#send-result")).to_contain_text("Not sent")
    assert page.inner_text("#sent") == ""
    # An identifier rule (the edit table's one_of) is named too, in the switch's own words.
    page.fill("#f-DOB", "")
    expect(page.locator("#general-errors")).to_contain_text("IDENTIFIERS MISSING")
    # Free-form: a QH without PUR/ and ATN/ (PPP §1.7.1 A) — both named.
    page.keyboard.press("Alt+0")
    page.fill("#f-free", "QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101")
    expect(page.locator("#general-errors")).to_contain_text("PUR/ REQUIRED")
    assert "ATN/ REQUIRED" in page.inner_text("#general-errors")
    # A password change or logon typed as a message is not sent (it would sit in the sent list).
    page.fill("#f-free", "PWD.correct horse battery.a new secret phrase")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#general-errors")).to_contain_text("NOT SENT FROM THE WEB CONSOLE")
    assert page.inner_text("#sent") == ""
    page.keyboard.press("Alt+l")


# Forms whose last field typed is a drop-down; Enter there sends the form as everywhere else
# (docs/WEB.md "Keyboard"): (Alt+n, fields filled, drop-down choices, the drop-down Enter is pressed on).
ENTER_ON_SELECT = [
    ("Alt+1", {"NAM": "DOE, JANE"}, {"SEX": "F", "RAC": "W"}, "RAC"),  # NAM+SEX+RAC: one of QW's identifier sets
    ("Alt+1", {"NAM": "ROE, RICHARD", "DOB": "19700101"}, {"SEX": "M"}, "SEX"),
    ("Alt+5", {"ATN": "DET SMITH", "NAM": "DOE, JANE", "DOB": "19800101"}, {"PUR": "C"}, "PUR"),
]


def test_enter_on_a_drop_down_sends_the_form(site, context):
    page = operator(site, context, "OP0007")
    for n, (form, typed, chosen, last) in enumerate(ENTER_ON_SELECT, start=1):
        page.keyboard.press(form)
        for tag, value in typed.items():
            page.fill(f"#f-{tag}", value)
        for tag, value in chosen.items():
            page.select_option(f"#f-{tag}", value)
        page.focus(f"#f-{last}")
        page.keyboard.press("Enter")
        expect(page.locator("#sent li.accepted")).to_have_count(n)
    # Chosen with the keyboard alone: Tab to SEX, a letter picks F, Enter sends.
    page.keyboard.press("Alt+1")
    page.keyboard.type("DOE, JANE")
    page.keyboard.press("Tab")
    page.keyboard.type("19800101")
    page.keyboard.press("Tab")
    page.keyboard.press("f")
    assert page.input_value("#f-SEX") == "F"
    page.keyboard.press("Enter")
    expect(page.locator("#sent li.accepted")).to_have_count(len(ENTER_ON_SELECT) + 1)
    # What the status line says is true (newweb 8): a refusal with no field to mark names itself;
    # a corrected form clears it; an AM is not promised an answer.
    page.keyboard.press("Alt+0")
    page.fill("#f-free", "ZZ.CA0130000.NAM/DOE, JANE")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#send-result")).to_have_text(re.compile(r"^Not sent: E301 UNKNOWN MESSAGE KEY ZZ"))
    page.fill("#f-free", "AM.CA0130000.ICS2.TXT SHIFT BRIEFING AT 0700")
    expect(page.locator("#send-result")).to_have_text("")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#send-result")).to_contain_text("an administrative message gets no answer")
    page.evaluate("document.activeElement.blur()")  # "?" in a field is a character, elsewhere the help
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    assert "in the inbox: open" not in page.inner_text("#help")
    page.keyboard.press("Escape")
    page.keyboard.press("Alt+l")


# New passwords the switch's rules refuse (CJIS IA-5(1)), each named in the switch's words.
WEAK = [("short7!", "AT LEAST 8 CHARACTERS"), ("xx OP0005 xx yy", "MAY NOT CONTAIN THE USER ID"),
        ("operator five horse", "PART OF THE USER'S NAME"), ("password1", "TOO EASY TO GUESS")]
NEW_PASSWORD = "plum kettle orbit 1907"


def test_operator_changes_own_password_through_the_switch(site, context):
    page = operator(site, context, "OP0005")
    page.keyboard.press("Alt+w")  # keyboard first: focus on the current password
    page.keyboard.type("not the password")
    page.fill("#pw-new", NEW_PASSWORD)
    page.fill("#pw-repeat", NEW_PASSWORD)
    page.press("#pw-repeat", "Enter")
    expect(page.locator("#pw-result")).to_contain_text("E202")  # wrong current password: the switch's answer
    page.fill("#pw-old", PASSWORD)
    page.fill("#pw-new", NEW_PASSWORD)
    page.fill("#pw-repeat", NEW_PASSWORD + "x")
    page.press("#pw-repeat", "Enter")
    expect(page.locator("#pw-result")).to_contain_text("differ")  # checked before anything is sent
    for weak, why in WEAK:
        page.fill("#pw-old", PASSWORD)
        page.fill("#pw-new", weak)
        page.fill("#pw-repeat", weak)
        page.press("#pw-repeat", "Enter")
        expect(page.locator("#pw-result")).to_contain_text("E108")
        assert why in page.inner_text("#pw-result").upper(), weak
    page.fill("#pw-old", PASSWORD)
    page.fill("#pw-new", NEW_PASSWORD)
    page.fill("#pw-repeat", NEW_PASSWORD)
    page.press("#pw-repeat", "Enter")
    expect(page.locator("#pw-result")).to_contain_text("Password changed")
    assert page.input_value("#pw-old") == page.input_value("#pw-new") == ""  # not left in the page
    assert page.inner_text("#sent") == ""  # never in the sent list
    assert any(r.text == "USER PASSWD OP0005 BY PWD" for r in site.records(kind="ADMIN", user="OP0005"))
    texts = [r.text for r in site.records(user="OP0005")]
    assert "PASSWORD CHANGED" in texts and not any(NEW_PASSWORD in t or PASSWORD in t for t in texts)
    page.keyboard.press("Alt+l")
    page.wait_for_selector("#ended-view:not([hidden])")
    # The new password is the one that works now.
    again = context.new_page()
    logon(site, again, "OP0005", otp=site.code("OP0005"), header="ICS1", password=NEW_PASSWORD)
    again.wait_for_selector("#operator-view:not([hidden])")
    again.keyboard.press("Alt+l")
    assert NEW_PASSWORD not in (site.tmp / "web.err").read_text()


def test_hit_and_hit_confirmation_request_are_impossible_to_miss(site, context):
    page = operator(site, context, "OP0003", header="ICS1")  # the duty station: staffed 24 x 7
    page.keyboard.press("Alt+1")
    page.fill("#f-NAM", "DOE, JOHN")
    page.fill("#f-DOB", HIT_DOB)
    page.press("#f-DOB", "Enter")
    page.wait_for_selector("#alerts .alert-hit")
    assert "WANTED PERSON HIT" in page.inner_text("#alerts")
    page.wait_for_selector("#inbox li.alert-hit .badge")
    assert "has-hit" in page.get_attribute("body", "class")
    # An Nlets hit confirmation request (YQ) pushed by the upstream reaches the station too.
    assert control(site.ctl, "NOTIFY YQ ICS1 CA0130000") == "A"
    page.wait_for_selector("#alerts .alert-confirm")
    page.wait_for_selector("#inbox li.alert-confirm")
    site.shot(page, "4-operator-hit")
    page.keyboard.press("Alt+h")  # seen: the newest alert goes, the other stays
    page.keyboard.press("Alt+h")
    expect(page.locator("body")).not_to_have_class(re.compile("has-hit"))
    page.keyboard.press("Alt+l")


def test_an_unacknowledged_hit_survives_reload_and_shows_in_every_tab_until_acknowledged(site, context):
    """Showing a hit (and acknowledging the output to msc) is not the person acknowledging it:
    the alert stays raised across a reload and on a second tab of the same session until Alt+H,
    and Alt+H on one tab lowers it on the others."""
    page = operator(site, context, "OP0006", header="ICS1")  # the agency's duty station gets its notices
    for kind in ("$.H.", "YQ"):  # an NCIC hit notification, an Nlets hit confirmation request
        assert control(site.ctl, f"NOTIFY {kind} ICS1 CA0130000") == "A"
    expect(page.locator("#alerts .alert")).to_have_count(2)
    # Both were drawn and acknowledged to msc (DELIVERED): the person has not acknowledged them.
    wait(lambda: len(site.records(kind="DELIVERED", mnemonic="ICS1", user="OP0006")) >= 2)
    page.reload()
    page.wait_for_selector("#operator-view:not([hidden])")
    expect(page.locator("#alerts .alert-hit")).to_have_count(1)
    expect(page.locator("#alerts .alert-confirm")).to_have_count(1)
    expect(page.locator("body")).to_have_class(re.compile("has-hit"))
    second = context.new_page()  # a second tab on the same session
    second.goto(site.url + "/")
    second.wait_for_selector("#operator-view:not([hidden])")
    expect(second.locator("#alerts .alert")).to_have_count(2)
    expect(second.locator("#status")).to_have_text("connected")
    second.keyboard.press("Alt+h")  # the newest: the hit confirmation request
    expect(page.locator("#alerts .alert-confirm")).to_have_count(0)
    expect(page.locator("#alerts .alert-hit")).to_have_count(1)
    page.click("#alerts .alert-hit button:has-text('Seen')")  # its button, on the other tab
    expect(second.locator("#alerts .alert")).to_have_count(0)
    expect(second.locator("body")).not_to_have_class(re.compile("has-hit"))
    second.reload()
    second.wait_for_selector("#operator-view:not([hidden])")
    expect(second.locator("#inbox li.alert-hit .badge")).to_have_count(1)  # still marked in the inbox
    expect(second.locator("#status")).to_have_text("connected")
    expect(second.locator("#alerts .alert")).to_have_count(0)
    expect(second.locator("body")).not_to_have_class(re.compile("has-hit"))
    second.keyboard.press("Alt+l")


def test_a_tab_left_on_the_logon_form_joins_the_session_another_tab_logged_on(site, context):
    """newweb 12: the second tab got "already logged on" and stayed on the logon form."""
    waiting = context.new_page()
    waiting.goto(site.url + "/")
    waiting.wait_for_selector("#banner-view:not([hidden])")
    waiting.keyboard.press("Enter")
    waiting.wait_for_selector("#logon-view:not([hidden])")
    page = operator(site, context, "OP0007")  # the other tab logs this browser on
    waiting.check("input[name=console][value=investigator]")
    waiting.fill("#logon-user", "IV0002")
    waiting.fill("#logon-password", "anything")
    waiting.press("#logon-password", "Enter")
    waiting.wait_for_selector("#operator-view:not([hidden])")
    assert waiting.inner_text("#who").startswith("OP0007 at ICS1")
    page.keyboard.press("Alt+l")


def test_lockout_after_five_failures(site, context):
    page = context.new_page()
    for _ in range(5):
        logon(site, page, "TS0002", password="not the password")
        expect(page.locator("#logon-error")).to_contain_text("LOGON REFUSED")
    logon(site, page, "TS0002", header="ICS2")  # the right password, now refused: locked
    expect(page.locator("#logon-error")).to_contain_text("LOGON REFUSED")
    # E202 never says which; the page names what it may be (a pool of another agency among them).
    assert "a locked account, or a station or pool (ICS2) that does not serve your agency" in \
        page.inner_text("#logon-error")
    assert page.is_visible("#logon-view")
    assert wait(lambda: [r for r in site.records(kind="SESSION", user="TS0002") if r.text == "LOCKOUT"])
    failed = [r for r in site.records(kind="SESSION", user="TS0002") if r.text.startswith("LOGON FAILED")]
    assert len(failed) == 6 and all(r.taf == "7F000001" for r in failed)


# -- the investigator ------------------------------------------------------------------------------

def test_investigator_searches_and_downloads_a_bundle_the_offline_verifier_accepts(site, context, tmp_path):
    page = context.new_page()
    logon(site, page, "IV0001", console="investigator", otp=site.code("IV0001"))
    page.wait_for_selector("#investigator-view:not([hidden])")
    page.keyboard.press("Enter")  # no case reference: refused before any search
    expect(page.locator("#q-error")).to_contain_text("case reference")
    page.fill("#q-case", "IA-2026-17")
    page.fill("#q-user", "OP0001")
    page.press("#q-user", "Enter")
    page.wait_for_selector("#report table.records")
    report = page.inner_text("#report")
    assert "Case: IA-2026-17" in report and "Investigator: IV0001" in report and "OP0001" in report
    site.shot(page, "5-investigator")
    with page.expect_download() as dl:
        page.keyboard.press("Alt+e")
    bundle = tmp_path / "bundle.zip"
    dl.value.save_as(bundle)
    assert dl.value.suggested_filename == "msc-export-IA-2026-17.zip"
    with zipfile.ZipFile(bundle) as z:
        z.extract("verify_bundle.py", tmp_path)
    fp = KeyRing(site.settings.data_dir / "keys", site.settings.key_file).signing_identity().fingerprint
    r = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "verify_bundle.py"), "--fingerprint", fp, str(bundle)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    page.click("#q-verify")
    expect(page.locator("#q-status")).to_contain_text("Journal verified")
    audits = [json.loads(r.text) for r in site.records(kind="AUDIT", user="IV0001")]
    ops = [a["op"] for a in audits]
    assert "search" in ops and "export" in ops and "verify" in ops
    assert all(a.get("case") == "IA-2026-17" for a in audits if a["op"] in ("search", "export"))
    assert any(r.text == "LOGON OK WEB INVESTIGATOR CONSOLE" for r in site.records(kind="SESSION", user="IV0001"))


# (field, bad value, the words shown) — the focus goes to that field.
BAD_FILTERS = [("from", "yesterday", "From: 'yesterday' is not a time"), ("to", "31/01/2026", "To:"),
               ("limit", "abc", "Limit: 'abc' is not a whole number"), ("user", "JD12", "User:"),
               ("kind", None, None)]


def test_investigator_filter_errors_name_the_field_and_focus_it(site, context):
    page = context.new_page()
    logon(site, page, "IV0002", console="investigator", otp=site.code("IV0002"))
    page.wait_for_selector("#investigator-view:not([hidden])")
    page.fill("#q-case", "IA-2026-18")
    for name, value, says in BAD_FILTERS:
        if value is None:
            continue
        page.fill(f"#q-{name}", value)
        page.press("#q-case", "Enter")
        expect(page.locator("#q-error")).to_contain_text(says)
        assert page.evaluate("document.activeElement.id") == f"q-{name}"
        assert page.get_attribute(f"#q-{name}", "aria-invalid") == "true"
        assert "isoformat" not in page.inner_text("#q-error") and "literal" not in page.inner_text("#q-error")
        # Export with the same bad field: refused on the page (no download, no navigation).
        page.keyboard.press("Alt+e")
        expect(page.locator("#q-error")).to_contain_text(says)
        assert page.url.rstrip("/") == site.url and page.is_visible("#investigator-view")
        page.fill(f"#q-{name}", "")
    page.press("#q-case", "Enter")
    page.wait_for_selector("#report table.records")
    assert page.inner_text("#q-error") == ""
    audits = [json.loads(r.text) for r in site.records(kind="AUDIT", user="IV0002")]
    assert [a["op"] for a in audits] == ["search"]  # the refused ones never searched nor exported
    page.keyboard.press("Alt+l")


# -- the administrator -----------------------------------------------------------------------------

def test_admin_disables_a_station_and_the_operators_page_is_logged_off(site, browser):
    op_ctx = browser.new_context(ignore_https_errors=True)
    admin_ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    try:
        op = operator(site, op_ctx, "OP0004", header="ICS2")
        admin = admin_ctx.new_page()
        logon(site, admin, "AM0001", console="admin", otp=site.code("AM0001"))
        admin.wait_for_selector("#stations tr#st-ICS2")
        assert "disable the user" in admin.inner_text("#stations-pools")  # a pool's operators are ended by user
        site.shot(admin, "6-admin-stations")
        t_click = time.monotonic()
        with admin.expect_response("**/api/admin/station") as resp:
            admin.click("#st-ICS2 button")
        assert resp.value.ok
        t_returned = time.monotonic()
        # Waits on the condition with a generous bound (no timing threshold in a test, the project's
        # rule); how long it took is measured and written by record_logoff_latency.
        op.wait_for_selector("#ended-view:not([hidden])", timeout=WAIT_MS)
        t_ended = time.monotonic()
        assert "STATION DISABLED" in op.inner_text("#ended-why")
        record_logoff_latency(t_click, t_returned, t_ended)
        assert any(r.text == "STATION DISABLE ICS2" for r in site.records(kind="ADMIN", user="AM0001"))
        admin.wait_for_selector("#st-ICS2.disabled")
        admin.click("#st-ICS2 button")  # enable it again
        admin.wait_for_selector("#st-ICS2.active")
        assert wait(lambda: any(r.text == "STATION ENABLE ICS2" for r in site.records(kind="ADMIN", user="AM0001")))
        # Users: add one with TOTP enrolment shown as a QR code, disable, enable.
        admin.keyboard.press("Alt+2")
        admin.wait_for_selector("#users tr#user-OP0001")
        admin.fill("#u-id", "NW0001")
        admin.fill("#u-name", "NEWCOMER, NINA")
        admin.fill("#u-password", "a long and unguessable passphrase")
        admin.fill("#u-repeat", "a long and unguessable passphrase")
        admin.click("#u-add")
        admin.wait_for_selector("#enrolment:not([hidden]) #enrol-qr[src^='data:image/svg+xml']")
        secret = admin.inner_text("#enrol-secret")
        assert len(secret) == 32  # 160 bits, base32
        site.shot(admin, "7-admin-users")
        admin.click("#enrol-done")
        admin.click("#user-NW0001 button")  # disable
        admin.wait_for_selector("#user-NW0001.disabled")
        texts = [r.text for r in site.records(kind="ADMIN", user="AM0001")]
        assert "USER ADD NW0001 ROLE/full ORI/CA0130000 TOTP" in texts and "USER DISABLE NW0001" in texts
        admin.keyboard.press("Alt+3")
        admin.wait_for_selector("#avail-chart[src^='data:image/svg+xml']")
        assert "Last 365 days" in admin.inner_text("#avail-summary")
        admin.click("#rep-misuse-run")
        expect(admin.locator("#rep-misuse")).to_contain_text("Misuse signals")
        site.shot(admin, "8-admin-reports")
        assert any(json.loads(r.text).get("op") == "report misuse" for r in site.records(kind="AUDIT", user="AM0001"))
    finally:
        op_ctx.close()
        admin_ctx.close()


# -- web security ------------------------------------------------------------------------------------

def test_session_cookie_flags_and_rotation_in_the_browser(site, context):
    page = context.new_page()
    page.goto(site.url + "/")
    page.wait_for_selector("#banner-view:not([hidden])")
    before = {c["name"]: c for c in context.cookies()}
    s = before["__Host-msc"]
    assert s["httpOnly"] and s["secure"] and s["sameSite"] == "Strict" and s["path"] == "/"
    assert before["__Host-msc-csrf"]["secure"] and before["__Host-msc-csrf"]["sameSite"] == "Strict"
    page.keyboard.press("Enter")
    # A password manager is told which field is which (and never offers the one-time code's field).
    assert page.get_attribute("#logon-password", "autocomplete") == "current-password"
    assert page.get_attribute("#logon-otp", "autocomplete") == "one-time-code"
    # The one-time password is obscured like the password (CJIS IA-6: a password typed there by
    # mistake is not shown) and offers a phone's digit keypad; nothing typed there is cut short.
    assert page.eval_on_selector("#logon-otp", "e => e.type") == "password"
    assert page.get_attribute("#logon-otp", "inputmode") == "numeric"
    page.check("input[name=console][value=investigator]")
    page.fill("#logon-user", "IV0001")
    page.fill("#logon-password", PASSWORD)
    page.fill("#logon-otp", PASSWORD)  # the password typed in the wrong field: whole, refused, unchecked
    assert page.input_value("#logon-otp") == PASSWORD
    page.press("#logon-otp", "Enter")
    expect(page.locator("#logon-error")).to_contain_text("That is not a one-time password")
    expect(page.locator("#logon-otp")).to_be_focused()
    assert page.input_value("#logon-otp") == "" and PASSWORD not in page.inner_text("#logon-error")
    page.fill("#logon-password", PASSWORD)
    page.fill("#logon-otp", site.code("IV0001"))
    page.press("#logon-password", "Enter")
    page.wait_for_selector("#investigator-view:not([hidden])")
    after = {c["name"]: c for c in context.cookies()}
    assert after["__Host-msc"]["value"] != s["value"]  # a new session ID at logon
    # Nothing in browser storage, nothing secret in the URL.
    assert all(not o.get("localStorage") for o in context.storage_state()["origins"])
    assert page.url.rstrip("/") == site.url
    page.keyboard.press("Alt+l")


def _client():
    import httpx

    return httpx.Client(verify=False, timeout=HANG_S)


def test_csrf_refusal_and_security_headers_with_a_plain_http_client(site):
    with _client() as c:
        r = c.get(site.url + "/api/state")
        assert r.status_code == 200
        for h in ("content-security-policy", "strict-transport-security", "x-content-type-options", "referrer-policy",
                  "x-frame-options"):
            assert h in r.headers
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "'unsafe-inline'" not in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert c.get(site.url + "/static/icon.svg").headers["content-type"].startswith("image/svg+xml")  # no 404 per page
        cookies = r.headers.get_list("set-cookie")
        session = next(x for x in cookies if x.startswith("__Host-msc="))
        for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
            assert flag.lower() in session.lower()
        token = r.json()["csrf"]
        # Without the token, with a wrong one, with it only in a cookie: refused, nothing done.
        assert c.post(site.url + "/api/banner", json={}).status_code == 403
        assert c.post(site.url + "/api/banner", json={}, headers={"x-csrftoken": token + "x"}).status_code == 403
        assert c.post(site.url + "/api/logon", json={"user": "OP0001"}).status_code == 403
        assert c.post(site.url + "/api/banner", json={}, headers={"x-csrftoken": token}).status_code == 200
        r = c.post(site.url + "/api/logon", headers={"x-csrftoken": token},
                   json={"console": "investigator", "user": "IV0001", "password": "wrong password", "otp": "123456"})
        assert r.status_code == 403 and r.json()["error"] == "LOGON REFUSED"
    with _client() as other:  # a request from a page that never had this site's cookies
        assert other.post(site.url + "/api/logon", json={"user": "OP0001", "password": "x"},
                          headers={"x-csrftoken": token}).status_code == 403
        assert other.post(site.url + "/api/send", json={"text": "QW.CA0130000.NAM/X.DOB/19800101"}).status_code in (401, 403)
    with _client() as c:  # plain HTTP on the HTTPS port is no way in
        import httpx

        with pytest.raises(httpx.HTTPError):
            httpx.get(site.url.replace("https://", "http://") + "/api/state", timeout=5)


# Not a one-time password: refused by the server before the logon check (the rule's table of
# inputs is tests/unit/test_web_logon_otp.py; these are the kinds, through HTTP).
NOT_CODES = [PASSWORD, "123456" + PASSWORD, "12345", "1234567", "12-34-56", "１２３４５６", 123456, None]


def test_a_one_time_password_field_without_a_code_is_refused_unchecked(site):
    with _client() as c:
        token = c.get(site.url + "/api/state").json()["csrf"]
        assert c.post(site.url + "/api/banner", json={}, headers={"x-csrftoken": token}).status_code == 200
        # More refusals than the lockout's 5 failures, with the right password each time.
        for otp in NOT_CODES:
            r = c.post(site.url + "/api/logon", headers={"x-csrftoken": token},
                       json={"console": "investigator", "user": "IV0003", "password": PASSWORD, "otp": otp})
            assert r.status_code == 400, otp
            assert r.json()["field"] == "otp" and r.json()["error"].startswith("That is not a one-time password")
            assert PASSWORD not in r.text
        # Nothing was checked: no failure journaled, no lockout — the code, grouped as an app shows
        # it, logs on at once.
        code = site.code("IV0003")
        r = c.post(site.url + "/api/logon", headers={"x-csrftoken": token},
                   json={"console": "investigator", "user": "IV0003", "password": PASSWORD,
                         "otp": f"{code[:3]} {code[3:]}"})
        assert r.status_code == 200, r.text
    texts = [r.text for r in site.records(kind="SESSION", user="IV0003")]
    assert not [t for t in texts if t.startswith("LOGON FAILED") or t == "LOCKOUT"], texts
    assert [t for t in texts if t.startswith("LOGON OK")], texts


def test_websocket_from_another_origin_is_refused(site, context):
    import asyncio
    import concurrent.futures

    import websockets
    from websockets.asyncio.client import connect

    page = operator(site, context, "OP0001")
    sid = next(c["value"] for c in context.cookies() if c["name"] == "__Host-msc")
    host = site.url.removeprefix("https://")

    async def opening(origin: str, cookie: str) -> str:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            async with connect(f"wss://{host}/api/inbox", ssl=ctx, origin=origin, additional_headers={"Cookie": cookie},
                               open_timeout=HANG_S) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), HANG_S))["type"]
        except websockets.exceptions.WebSocketException:
            return "refused"

    def attempt(origin: str, cookie: str = f"__Host-msc={sid}") -> str:
        # The asyncio client, one thread. The sync client reads its TLS socket on a thread of its
        # own while the caller writes the opening request on it: OpenSSL forbids SSL_read and
        # SSL_write on one SSL object from two threads (openssl/openssl#20446), and with TLS 1.3's
        # session tickets arriving just then the request was sometimes never sent — the client
        # waited out its handshake, then hung joining its thread (CI, 2026-12-02; 2 runs of 3 here).
        # (On a thread of its own: Playwright's sync API keeps an event loop running in this one.)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, asyncio.wait_for(opening(origin, cookie), 2 * HANG_S)).result()

    assert attempt("https://evil.example") == "refused"  # cross-site WebSocket hijacking
    assert attempt(site.url, cookie="__Host-msc=forged") == "refused"
    assert attempt(site.url) == "hello"
    page.keyboard.press("Alt+l")


def test_logon_rate_limit_per_address(site):
    with _client() as c:
        token = c.get(site.url + "/api/state").json()["csrf"]
        c.post(site.url + "/api/banner", json={}, headers={"x-csrftoken": token})
        codes = []
        for _ in range(40):
            r = c.post(site.url + "/api/logon", headers={"x-csrftoken": token},
                       json={"console": "investigator", "user": "ZZ9999", "password": "nope", "otp": ""})
            codes.append(r.status_code)
            if r.status_code == 429:
                break
        assert codes[-1] == 429 and codes.count(403) <= 30


def test_web_command_refuses_a_config_without_web(tmp_path):
    cfg = make_config(tmp_path)
    r = subprocess.run([sys.executable, "-m", "msc", "web", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "no [web] table" in r.stderr
