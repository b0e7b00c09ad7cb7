"""``msc web`` reloads on SIGHUP (docs/WEB.md "Reload"), as ``msc serve`` does: a valid change of
``msc.toml`` applies without ending a session, a configuration that ``load`` refuses changes
nothing, and a renewed certificate is served to new connections. No browser: the banner a page
is shown (``/api/state``) and the certificate a TLS handshake presents are what a user sees.
The switch is not needed for either, so only ``msc web`` runs.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

from msc.config.load import load
from msc.web.app import WebConsole
from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import Proc, wait_for
from tests.waiting import HANG_S

pytest.importorskip("httpx")

WEB = """
[[listener]]
name = "web"
bind = "127.0.0.1:{web_listener}"
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]

[[listener]]
name = "web2"
bind = "127.0.0.1:{web_listener2}"
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]

[web]
bind = "127.0.0.1:{web_port}"
tls = {{ cert = "tls/web.crt", key = "tls/web.key" }}
listener = "web"
header = "ICS1"
logon_attempts_per_minute = 30
"""


def _config(tmp: Path) -> tuple[Path, int]:
    from msc.web.certs import self_signed

    self_signed(tmp / "tls" / "web.crt", tmp / "tls" / "web.key")
    web_port = free_port()
    cfg = make_config(tmp, switch_extra='banner = "FIRST NOTICE: USE IS MONITORED"',
                      extra=WEB.format(web_listener=free_port(), web_listener2=free_port(), web_port=web_port))
    return cfg, web_port


def _wait(predicate, timeout=HANG_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _served_cert(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        return s.getpeercert(binary_form=True)


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


# Configurations `load` refuses: each leaves the running console exactly as it was.
REFUSED = [
    ("not TOML", lambda t: t + "\n[switch\n"),
    ("no [web] table", lambda t: t[:t.index("[web]")]),
    ("web.listener names no listener", lambda t: t.replace('listener = "web"\n', 'listener = "nowhere"\n')),
    ("web.logon_attempts_per_minute out of range", lambda t: t.replace("logon_attempts_per_minute = 30",
                                                                       "logon_attempts_per_minute = 0")),
    ("web.header neither pool nor station", lambda t: t.replace('header = "ICS1"', 'header = "NOPE"')),
    ("web.tls missing", lambda t: t.replace('tls = { cert = "tls/web.crt", key = "tls/web.key" }\n', "")),
]


def test_sighup_applies_a_valid_change_refuses_a_bad_one_and_serves_a_renewed_certificate(tmp_path):
    import httpx

    from msc.web.certs import self_signed

    cfg, port = _config(tmp_path)
    ready = tmp_path / "web.ready"
    web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=tmp_path / "web.err")
    try:
        wait_for(ready, web)
        url = f"https://127.0.0.1:{port}/api/state"
        with httpx.Client(verify=False, timeout=HANG_S) as c:
            def banner() -> str:
                return c.get(url).json()["banner"]

            assert banner() == "FIRST NOTICE: USE IS MONITORED"
            first_cert = _served_cert(port)
            assert first_cert == _der(tmp_path / "tls" / "web.crt")

            # A valid change: the banner every new page shows.
            good = cfg.read_text().replace("FIRST NOTICE", "SECOND NOTICE")
            cfg.write_text(good)
            web.p.send_signal(signal.SIGHUP)
            _wait(lambda: banner() == "SECOND NOTICE: USE IS MONITORED")
            assert web.p.poll() is None

            # Refused configurations: logged, nothing changed, still serving.
            for n, (_why, breaks) in enumerate(REFUSED, start=1):
                cfg.write_text(breaks(good).replace("SECOND NOTICE", "THIRD NOTICE"))
                web.p.send_signal(signal.SIGHUP)
                _wait(lambda n=n: (tmp_path / "web.err").read_text().count('"web.reload_failed"') >= n)
                assert banner() == "SECOND NOTICE: USE IS MONITORED", _why
            cfg.write_text(good)

            # A renewed certificate (same paths): new connections get it.
            self_signed(tmp_path / "tls" / "web.crt", tmp_path / "tls" / "web.key", name="renewed")
            renewed = _der(tmp_path / "tls" / "web.crt")
            assert renewed != first_cert
            web.p.send_signal(signal.SIGHUP)
            _wait(lambda: _served_cert(port) == renewed)

            # A key that does not match its certificate: refused, the renewed one still served.
            key = (tmp_path / "tls" / "web.key").read_bytes()
            self_signed(tmp_path / "other.crt", tmp_path / "other.key")
            (tmp_path / "tls" / "web.key").write_bytes((tmp_path / "other.key").read_bytes())
            web.p.send_signal(signal.SIGHUP)
            _wait(lambda: '"web.reload_tls_failed"' in (tmp_path / "web.err").read_text())
            assert _served_cert(port) == renewed and banner() == "SECOND NOTICE: USE IS MONITORED"
            (tmp_path / "tls" / "web.key").write_bytes(key)
        assert web.p.poll() is None
    finally:
        web.stop()
    events = [json.loads(line) for line in (tmp_path / "web.err").read_text().splitlines() if line.startswith("{")]
    reloaded = [e for e in events if e["event"] == "web.reloaded"]
    # banner; the renewed certificate; the mismatched key (the rest of that reload applied: nothing changed)
    assert [e["changes"] for e in reloaded] == [["switch.banner"], ["web.tls"], []]
    assert PASSWORD not in (tmp_path / "web.err").read_text()


def test_reload_reports_what_changed_and_what_needs_a_restart(tmp_path):
    """The console's own reload (what SIGHUP calls): each setting a running console applies is
    named and applied; web.bind is named as needing a restart and left as it is."""
    cfg, _port = _config(tmp_path)
    console = WebConsole(load(cfg))
    assert console.reload()[1:] == ([], [])
    text = cfg.read_text()
    cfg.write_text(text.replace('listener = "web"\n', 'listener = "web2"\n').replace('header = "ICS1"', 'header = "ICS2"')
                   .replace("logon_attempts_per_minute = 30", "logon_attempts_per_minute = 7")
                   .replace("idle_logoff_s = 1800", "idle_logoff_s = 600"))
    _settings, changed, restart = console.reload()
    assert changed == ["web.header", "web.listener", "web.logon_attempts_per_minute", "switch.idle_logoff_s"]
    assert restart == []
    assert (console.web.header, console.listener.name, console.limiter.per_minute, console.idle_s) == \
        ("ICS2", "web2", 7, 600)
    bind = console.web.bind
    cfg.write_text(cfg.read_text().replace(bind, f"127.0.0.1:{free_port()}"))
    assert console.reload()[1:] == ([], ["web.bind"])
    cfg.write_text("[switch\n")
    assert console.reload() is None and console.web.header == "ICS2"


def test_the_web_console_systemd_unit_reloads_with_sighup_and_runs_as_the_switch_account():
    """config/systemd/msc-web.service: `systemctl reload msc-web` is the SIGHUP tested above; the
    same account as msc.service (msc web refuses any other than the master key's owner)."""
    root = Path(__file__).resolve().parents[2]
    unit = (root / "config" / "systemd" / "msc-web.service").read_text()
    switch = (root / "config" / "systemd" / "msc.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "msc web --config /etc/msc/msc.toml" in unit
    for line in ("User=msc", "Group=msc", "UMask=0077", "Restart=always", "NoNewPrivileges=yes"):
        assert line in unit.splitlines() and line in switch.splitlines()


def _events(log: Path, name: str) -> list[dict]:
    return [e for e in (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
            if e["event"] == name]


# Changes of what browsers' certificates are checked against, each a security setting a running
# TLS context cannot take back (an SSLContext adds trusted CAs, never drops one).
CLIENT_TLS = [
    ("client_ca added", 'client_ca = "tls/ca.crt"', ["web.tls.client_ca"]),
    ("client_ca and require_client_cert added", 'client_ca = "tls/ca.crt", require_client_cert = true',
     ["web.tls.client_ca", "web.tls.require_client_cert"]),
    ("another CA file at the same path", 'client_ca = "tls/ca.crt"', ["web.tls.client_ca"]),
]


def test_sighup_reports_client_certificate_settings_as_restart_needed_never_ignores_them(tmp_path):
    """``[web] tls`` client_ca / require_client_cert changed and SIGHUP: the reload names them in
    ``restart_needed`` (and warns) every time until the restart, and the rest of the change applies."""
    from msc.web.certs import self_signed

    cfg, port = _config(tmp_path)
    ready, log = tmp_path / "web.ready", tmp_path / "web.err"
    web = Proc("web", "--config", str(cfg), "--ready-file", str(ready), log=log)
    plain = 'tls = { cert = "tls/web.crt", key = "tls/web.key" }'
    try:
        wait_for(ready, web)
        original = cfg.read_text()
        assert plain in original
        self_signed(tmp_path / "tls" / "ca.crt", tmp_path / "tls" / "ca.key", name="agency ca")
        for n, (why, extra, expected) in enumerate(CLIENT_TLS, start=1):
            if why.startswith("another CA"):
                self_signed(tmp_path / "tls" / "ca.crt", tmp_path / "tls" / "ca.key", name="another ca")
            cfg.write_text(original.replace(plain, plain[:-2] + ", " + extra + " }")
                           .replace("FIRST NOTICE", f"NOTICE {n}"))
            web.p.send_signal(signal.SIGHUP)
            _wait(lambda n=n: len(_events(log, "web.reloaded")) >= n)
            last = _events(log, "web.reloaded")[-1]
            assert last["restart_needed"] == expected, why
            assert last["changes"] == ["switch.banner"], why  # the rest applied
            assert _events(log, "web.client_certificates_need_restart")[-1]["settings"] == expected
        # Back to what is served: nothing pending.
        cfg.write_text(original)
        web.p.send_signal(signal.SIGHUP)
        _wait(lambda: len(_events(log, "web.reloaded")) > len(CLIENT_TLS))
        assert _events(log, "web.reloaded")[-1]["restart_needed"] == []
        assert web.p.poll() is None
    finally:
        web.stop()


def _section_blocks(doc: str, heading: str, lang: str) -> list[str]:
    section = doc.split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split(f"```{lang}\n")[1:]]


def test_the_docs_certificate_station_passes_config_check_and_its_openssl_commands_make_a_desk_certificate(tmp_path):
    """docs/WEB.md "Stations bound by certificate", followed as written: its openssl commands make
    an agency CA and DESK7's certificate; its msc.toml snippet passes the configuration check; a
    handshake with the context ``msc web`` builds from it verifies DESK7 (CN as the switch takes it)."""
    import shutil
    import subprocess
    import threading

    from msc.config.tls import server_ssl_context
    from msc.web.certs import self_signed

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "WEB.md").read_text()
    heading = "### Stations bound by certificate"
    (toml,) = _section_blocks(doc, heading, "toml")
    (commands,) = _section_blocks(doc, heading, "sh")
    cfg, _port = _config(tmp_path)
    # The p12 export asks for a password on the terminal; here it is given on the command line.
    script = commands.replace("-out desk7.p12", "-passout pass:test -out desk7.p12")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "desk7.p12").stat().st_size > 0
    web_table, station = toml.split("[[station]]", 1)
    tls_line = next(line for line in web_table.splitlines() if line.startswith("tls = "))
    text = cfg.read_text()
    old_tls = next(line for line in text.splitlines() if line.startswith('tls = { cert = "tls/web.crt"'))
    cfg.write_text(text.replace(old_tls, tls_line) + "\n[[station]]" + station)
    settings = load(cfg)  # what `msc config check` runs: raises ConfigError naming each problem
    assert any(st.client_cert_cn == "DESK7" for st in settings.config.station)
    r = subprocess.run([sys.executable, "-m", "msc", "config", "check", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

    server_ctx = server_ssl_context(settings, settings.config.web.tls)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    client_ctx.load_cert_chain(tmp_path / "desk7.crt", tmp_path / "desk7.key")
    a, b = socket.socketpair()
    seen: dict = {}

    def serve_side():
        with server_ctx.wrap_socket(a, server_side=True) as s:
            seen["cert"] = s.getpeercert()
            s.sendall(b"ok")

    t = threading.Thread(target=serve_side)
    t.start()
    with client_ctx.wrap_socket(b) as c:
        assert c.recv(2) == b"ok"
    t.join(10)
    subject = dict(x[0] for x in seen["cert"]["subject"])
    assert subject["commonName"] == "DESK7"
    # A certificate the agency CA did not issue never verifies.
    self_signed(tmp_path / "rogue.crt", tmp_path / "rogue.key", name="DESK7")
    rogue = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    rogue.check_hostname, rogue.verify_mode = False, ssl.CERT_NONE
    rogue.load_cert_chain(tmp_path / "rogue.crt", tmp_path / "rogue.key")
    a, b = socket.socketpair()
    failed: list = []

    def refuse_side():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except ssl.SSLError as exc:
            failed.append(exc)
        finally:
            a.close()

    t = threading.Thread(target=refuse_side)
    t.start()
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)), rogue.wrap_socket(b) as c:
        c.sendall(b"x")
        c.recv(1)
    t.join(10)
    assert failed
