"""A flood of system-use acknowledgements from one address (probe14 case 6) against a real
``msc web``: ``POST /api/banner`` is rate-limited per browser address (429), and a browser at
another address acknowledges the notification and reaches the logon check (not ``409 acknowledge
the system-use notification first``). Loopback has many addresses: the flood comes from
127.0.0.2, the browser from 127.0.0.1. Only ``msc web`` runs (no switch is needed)."""

from __future__ import annotations

import pytest

from msc.web.app import BANNER_PER_MINUTE
from tests.conftest import free_port, make_config
from tests.e2e.conftest import Proc, wait_for
from tests.e2e.test_web_console import WEB
from tests.waiting import HANG_S

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.timeout(120)


def _client(address: str):
    return httpx.Client(verify=False, timeout=HANG_S, transport=httpx.HTTPTransport(verify=False, local_address=address))


def test_a_banner_flood_from_one_address_is_refused_and_keeps_no_one_else_out(tmp_path):
    from msc.web.certs import self_signed

    self_signed(tmp_path / "tls" / "web.crt", tmp_path / "tls" / "web.key")
    port = free_port()
    cfg = make_config(tmp_path, extra=WEB.format(web_listener=free_port(), web_port=port))
    ready = tmp_path / "web.ready"
    web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "web.err")
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for(ready, web)
        with _client("127.0.0.1") as browser, _client("127.0.0.2") as flood:
            token = browser.get(url + "/api/state").json()["csrf"]
            assert browser.post(url + "/api/banner", json={}, headers={"x-csrftoken": token}).status_code == 200
            flood_token = flood.get(url + "/api/state").json()["csrf"]
            codes = []
            for _ in range(BANNER_PER_MINUTE + 5):
                flood.cookies.delete("__Host-msc")  # a new unauthenticated session every time
                codes.append(flood.post(url + "/api/banner", json={}, headers={"x-csrftoken": flood_token}).status_code)
            assert codes.count(200) == BANNER_PER_MINUTE and set(codes[BANNER_PER_MINUTE:]) == {429}
            # The browser's own session is intact: its logon is checked (a wrong password: 403).
            r = browser.post(url + "/api/logon", headers={"x-csrftoken": token},
                             json={"console": "investigator", "user": "IV0001", "password": "wrong", "otp": "123456"})
            assert r.status_code == 403 and r.json()["error"] == "LOGON REFUSED"
            # Another browser at the browser's address still acknowledges the notification.
            with _client("127.0.0.1") as other:
                t = other.get(url + "/api/state").json()["csrf"]
                assert other.post(url + "/api/banner", json={}, headers={"x-csrftoken": t}).status_code == 200
    finally:
        web.stop()
    assert '"web.banner_rate_limited"' in (tmp_path / "web.err").read_text()
