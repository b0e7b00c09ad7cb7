"""The msc command as a user runs it: real `msc serve`, `msc stub`, `msc terminal` processes."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import Proc, run, start_serve, wait_port

# A test here runs the msc command a dozen times (each a Python start and a KDF): 67-72 s of 120 s
# under load average 12 — the bound is for a hang.
pytestmark = pytest.mark.timeout(300)


def test_serve_stub_and_terminal_end_to_end(tmp_path, procs):
    up = free_port()
    port = free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port())
    stub_log = tmp_path / "stub.log"
    procs.append(Proc("stub", "--role", "clets", "--listen", f"127.0.0.1:{up}", "--log", str(stub_log),
                      "--seed", "7", log=tmp_path / "stub.err"))
    wait_port(up)
    serve = start_serve(procs, tmp_path, cfg)
    r = run("terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001",
            "--password-stdin", "--send", "ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101",
            "--send", "QV.CA0130000.LIC/7ABC123", "--expect", "2", "--timeout", "20", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "A 1 MNE/ICS1.USR/TS0001"
    outputs = [ln for ln in lines if ln.startswith("M ")]
    assert len(outputs) == 2
    assert any(" ICS1A1.QW.CA0130000." in ln for ln in outputs)
    # The stub recorded what msc forwarded, with OIF and TAF.
    logged = stub_log.read_text().splitlines()
    assert "ICS1A1.*TS0001.#7F000001.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101" in logged
    # Logs are JSON lines and never contain message text or the password.
    serve.stop()
    err = (tmp_path / "serve.err").read_text()
    assert '"event": "switch.started"' in err and '"event": "switch.stopped"' in err
    for secret in (PASSWORD, "SMITH", "7ABC123"):
        assert secret not in err


def test_bad_password_exits_3(tmp_path, procs):
    port = free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=free_port())
    start_serve(procs, tmp_path, cfg)
    r = run("terminal", "--connect", f"127.0.0.1:{port}", "--header", "ICS1", "--user", "TS0001",
            "--password-stdin", input="wrong\n")
    assert r.returncode == 3
    assert "E202" in r.stdout


def test_config_check_exit_codes(tmp_path):
    cfg = make_config(tmp_path)
    r = run("config", "check", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ")
    cfg.write_text(cfg.read_text().replace('mnemonic = "ICS2"', 'mnemonic = "x"').replace("retention", "retention"))
    r = run("config", "check", "--config", str(cfg))
    assert r.returncode == 2
    assert "station[1].mnemonic" in r.stderr and "msc.toml:" in r.stderr


# The test directory's administrator (tests/conftest.py), as a script logs on: password, then an
# empty one-time password line (not enrolled); commands that take a new password read it next.
AS_ADMIN = ("--as", "AD0001", "--password-stdin")
ADMIN_LINES = PASSWORD + "\n\n"


def test_user_add_writes_a_hash_and_refuses_duplicates_and_weak_passwords(tmp_path):
    cfg = make_config(tmp_path)
    args = ("user", "add", "--config", str(cfg), "--id", "NW0001", "--name", "NEW, NORA", "--ori", "CA0130000",
            "--role", "full", "--dob", "1990-02-03", "--certified-until", "2030-01-01", *AS_ADMIN)
    r = run(*args, input=ADMIN_LINES + "a much better passphrase\n")
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "users.toml").read_text()
    assert 'id = "NW0001"' in text and "$scrypt$ln=4," in text  # at the configured cost
    assert "a much better passphrase" not in text
    assert run(*args, input=ADMIN_LINES + "a much better passphrase\n").returncode == 2  # exists
    for weak in ("password1", "abc123abc123", "trustno1!", "123qweasd"):
        r = run(*[a if a != "NW0001" else "NW0002" for a in args], input=ADMIN_LINES + weak + "\n")
        assert r.returncode == 2 and "too easy to guess" in r.stderr, (weak, r.stderr)
    r = run(*[a if a != "NW0001" else "NW0003" for a in args], input=ADMIN_LINES + "short\n")
    assert r.returncode == 2 and "at least 8" in r.stderr
    r = run(*[a if a != "NW0001" else "NW0004" for a in args], input=ADMIN_LINES + "nora nw0004 secret\n")
    assert r.returncode == 2 and "user ID" in r.stderr
    assert run("config", "check", "--config", str(cfg)).returncode == 0


def test_user_add_with_totp_prints_the_uri_once(tmp_path):
    cfg = make_config(tmp_path)
    r = run("user", "add", "--config", str(cfg), "--id", "MF0001", "--name", "MFA, MIA", "--ori", "CA0130000",
            "--role", "full", "--totp", *AS_ADMIN, input=ADMIN_LINES + "a much better passphrase\n")
    assert r.returncode == 0, r.stderr
    uri = [ln for ln in r.stdout.splitlines() if ln.startswith("otpauth://totp/")]
    assert len(uri) == 1 and "secret=" in uri[0]
    secret = uri[0].split("secret=")[1].split("&")[0]
    text = (tmp_path / "users.toml").read_text()
    assert 'totp = "enc:' in text and secret not in text


def test_make_run_demo_initialises_and_serves(tmp_path):
    """`msc demo` (what `make run` runs) creates config, keys and users, then serves until SIGINT."""

    d = tmp_path / "var"
    r = run("demo", "--dir", str(d), "--init-only")
    assert r.returncode == 0, r.stderr
    assert "JD1234" in r.stdout and "password: demo-" in r.stdout
    # Each operator is told where it may log on (another agency's pool is a bare E202: newweb 10).
    where = {ln.split()[0]: ln.split("password:")[0] for ln in r.stdout.splitlines() if "password: demo-" in ln}
    assert "pool ICSWEB" in where["JD1234"] and "ICS1" in where["JD1234"] and "ECMDT" not in where["JD1234"]
    assert "pool ECMDT" in where["EC0001"] and "ICSWEB" not in where["EC0001"]
    assert "web console" in where["INV001"]
    assert (d / "msc.toml").exists() and (d / "data" / "keys" / "master.key").exists()
    assert oct((d / "data" / "keys" / "master.key").stat().st_mode & 0o777) == "0o600"
    assert run("config", "check", "--config", str(d / "msc.toml")).returncode == 0
    # The administrator and the investigator have TOTP, shown once; every demo hash is at the
    # configured cost, the cost of the dummy hash for unknown users (issue 13: 48 vs 106 ms).
    lines = r.stdout.splitlines()
    for uid in ("ADM001", "INV001"):
        i = next(i for i, ln in enumerate(lines) if ln.strip().startswith(uid))
        assert "TOTP secret" in lines[i + 1] and "otpauth://totp/" in lines[i + 1]
    from msc.config.load import load
    from msc.journal.search import Query, search
    from msc.keyring import KeyRing
    from msc.mnemonics import passwords

    s = load(d / "msc.toml")
    assert {passwords.params_of(u.password) for u in s.users.user} == {(s.config.switch.password_cost, 8, 1)}
    assert s.config.switch.password_cost == passwords.LN
    boot = [x for x in search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file), Query(kind="ADMIN"))]
    # The actor is the OS account that ran the demo, not the administrator it made (issue 13 trial).
    assert [(x.user, x.text.split()[0]) for x in boot] == [(f"OS:{__import__('getpass').getuser()}", "BOOTSTRAP")]
    # An investigator session of the demo, as its output says to run it.
    secret = __import__("base64").b32decode(
        lines[next(i for i, ln in enumerate(lines) if ln.strip().startswith("INV001")) + 1].split()[2])
    pw = next(ln.split("password: ")[1].strip() for ln in lines if ln.strip().startswith("INV001"))
    from msc.mnemonics import totp

    r = run("journal", "search", "--config", str(d / "msc.toml"), "--as", "INV001", "--case", "DEMO-1",
            "--password-stdin", "--format", "jsonl", input=f"{pw}\n{totp.code_at(secret, time.time())}\n")
    assert r.returncode == 0, r.stderr
    assert "BOOTSTRAP DEMO USERS" in r.stdout


def _demo_port_offset() -> int:
    """An offset that puts every port of the demo (listeners, metrics, stubs and their control
    ports) on a port nothing listens on now: the test runs beside `make run` and other tests."""
    import random
    import re
    from importlib import resources

    from tests.ports import _band, claim

    text = resources.files("msc").joinpath("data/msc.toml").read_text()
    ports = {int(p) for p in re.findall(r'"[^"\s]+:(\d+)"', text)}
    ports |= {p + 100 for p in ports}  # the stubs' control ports (msc.cli.demo)
    # Below the kernel's ephemeral range, and reserved (tests/ports.py): no `port 0` socket and no
    # other test process (pytest -n 2) takes one of them while the demo starts.
    low, high = _band()
    rng = random.SystemRandom()
    for _ in range(100):
        offset = rng.randrange(low - min(ports), high - max(ports))
        if claim(p + offset for p in ports):
            return offset
    pytest.skip("no free set of demo ports found")


def test_msc_demo_runs_stubs_and_switch_and_stops_on_ctrl_c(tmp_path):
    """What `make run` does, on ports of its own (--port-offset): the demo's defaults may be in use."""
    import subprocess
    import sys

    offset = _demo_port_offset()  # the template's web listener and the web console's port (8443) included
    d = tmp_path / "var"
    # Its own process group, as `make run` in a shell is: Ctrl-C signals the whole group.
    p = subprocess.Popen([sys.executable, "-m", "msc", "demo", "--dir", str(d), "--port-offset", str(offset)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            lines.append(line)
            if "Press Ctrl-C to stop." in line or not line:
                break
        out = "".join(lines)
        assert "msc is running" in out, out + p.stderr.read()
        listen = f"127.0.0.1:{7400 + offset}"
        # The banner shows the demo's own addresses, and how to reach the stub's control port.
        assert f"--connect {listen} --header ICS1" in out and f"msc stub-control 127.0.0.1:{7601 + offset} " in out
        assert f"https://127.0.0.1:{8443 + offset}/" in out  # the web console, started by the demo (docs/WEB.md)
        pw = next(ln.split("password: ")[1].strip() for ln in lines if ln.strip().startswith("JD1234"))
        r = run("terminal", "--connect", listen, "--header", "ICS1", "--user", "JD1234",
                "--password-stdin", "--send", "QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101", "--expect", "1",
                input=pw + "\n")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        import os

        os.killpg(p.pid, signal.SIGINT)  # Ctrl-C on `make run`
        assert p.wait(timeout=60) == 0
    assert "stopping" in p.stdout.read()
    log = (d / "logs" / "msc.log").read_text()
    assert '"event": "switch.stopped"' in log
    # The switch, its journal writer and both stubs stopped cleanly: no traceback anywhere, no
    # failed commit, and the availability ledger's clean-stop mark (a scheduled outage).
    for f in (d / "logs").glob("*"):
        assert "Traceback" not in f.read_text(), f
    assert "commit_failed" not in log
    assert "switch.draining" in log and p.stderr.read().count("Traceback") == 0


def test_user_lifecycle_commands(tmp_path):
    cfg = make_config(tmp_path)
    c = str(cfg)
    r = run("user", "list", "--config", c)  # reads no journal and no secret: no logon
    assert r.returncode == 0 and "TS0001" in r.stdout and "investigator" in r.stdout
    assert run("user", "disable", "TS0001", "--config", c, *AS_ADMIN, input=ADMIN_LINES).returncode == 0
    assert 'status = "disabled"' in (tmp_path / "users.toml").read_text()
    assert run("user", "enable", "TS0001", "--config", c, *AS_ADMIN, input=ADMIN_LINES).returncode == 0
    r = run("user", "passwd", "TS0001", "--config", c, *AS_ADMIN, input=ADMIN_LINES + "qwerty123\n")
    assert r.returncode == 2 and "too easy to guess" in r.stderr
    r = run("user", "passwd", "TS0001", "--config", c, *AS_ADMIN, input=ADMIN_LINES + "a new and long secret\n")
    assert r.returncode == 0
    assert run("user", "unlock", "TS0001", "--config", c, *AS_ADMIN, input=ADMIN_LINES).returncode == 0
    assert run("user", "remove", "TS0002", "--config", c, *AS_ADMIN, input=ADMIN_LINES).returncode == 0
    from msc.mnemonics import userfile

    users = userfile.read(tmp_path / "users.toml")
    assert "TS0002" not in {u.id for u in users.user} and [r.id for r in users.removed] == ["TS0002"]  # a tombstone
    r = run("user", "add", "--config", c, "--id", "TS0002", "--name", "REUSE, RAY", "--ori", "CA0130000",
            "--role", "full", *AS_ADMIN, input=ADMIN_LINES + "another long secret\n")
    assert r.returncode == 2 and "may not be reassigned" in r.stderr
    r = run("user", "list", "--config", c, "--format", "json")
    import json

    doc = json.loads(r.stdout)
    assert doc["removed"][0]["id"] == "TS0002" and not any(u["id"] == "TS0002" for u in doc["users"])
    assert run("station", "disable", "ICS1", "--config", c, *AS_ADMIN, input=ADMIN_LINES).returncode == 0
    assert run("station", "disable", "NOPE", "--config", c, *AS_ADMIN, input=ADMIN_LINES).returncode == 2
    # Every change is an ADMIN journal record naming the administrator.
    from msc.config.load import load
    from msc.journal.search import Query, search
    from msc.keyring import KeyRing

    s = load(cfg)
    admin = [(x.user, x.text) for x in search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file),
                                              Query(kind="ADMIN"))]
    for t in ("USER DISABLE TS0001", "USER ENABLE TS0001", "USER PASSWD TS0001", "USER UNLOCK TS0001",
              "USER REMOVE TS0002", "STATION DISABLE ICS1"):
        assert ("AD0001", t) in admin, (t, admin)


def test_a_refused_new_password_does_not_spend_the_administrators_one_time_code(tmp_path):
    """newcomer9: `msc user passwd` logged the administrator on — using up their one-time code —
    and only then refused a new password containing the user ID (exit 2), so the corrected command
    needed a new code (30 s away). The new password is checked first now; so in `user add`."""
    from msc.mnemonics import totp
    from tests.conftest import add_totp_user

    cfg = make_config(tmp_path)
    c = str(cfg)
    secret = add_totp_user(cfg, "MF0001", name="ADMIN, ALMA", role="admin")
    code = totp.code_at(secret, time.time())
    admin = ("--as", "MF0001", "--password-stdin")
    r = run("user", "passwd", "TS0001", "--config", c, *admin, input=f"{PASSWORD}\n{code}\nNew-ts0001-secret-x\n")
    assert (r.returncode, r.stderr.strip()) == (2, "error: a password may not contain the user ID"), r.stderr
    r = run("user", "add", "--config", c, "--id", "TS0009", "--name", "NEW, NED", "--ori", "CA0130000", "--role",
            "full", *admin, input=f"{PASSWORD}\n{code}\nqwerty123\n")
    assert r.returncode == 2 and "too easy to guess" in r.stderr, r.stderr
    # The same code still logs the administrator on: neither refusal used it.
    r = run("user", "passwd", "TS0001", "--config", c, *admin, input=f"{PASSWORD}\n{code}\na new and long secret\n")
    assert r.returncode == 0, r.stderr
    # ... and now it is used (each code is good once).
    r = run("user", "passwd", "TS0001", "--config", c, *admin, input=f"{PASSWORD}\n{code}\nanother long secret\n")
    assert r.returncode == 3 and "authentication refused" in r.stderr, r.stderr
