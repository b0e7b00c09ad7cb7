"""Every action has a name (issue 13 items 1 and 3), through the real ``msc`` command.

From an empty directory: the first administrator is made (the bootstrap, journaled), who adds an
investigator; each then works through ``msc`` as a script would (``--password-stdin``, TOTP codes
from their secrets). Every ADMIN and AUDIT record names the person; refusals exit 3 and are
journaled; one-time passwords are good once.
"""

from __future__ import annotations

import base64
import json
import os
import time
from urllib.parse import parse_qs, urlparse

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.keyring import KeyRing
from msc.mnemonics import totp
from tests.conftest import USERS, free_port, make_config, write_users
from tests.e2e.conftest import run, start_serve, start_stub

pytestmark = pytest.mark.timeout(240)

BOSS_PW = "the first administrator's passphrase"
SLEUTH_PW = "an investigator's long passphrase"


class Authenticator:
    """The phone app of one person: the current code, never one already used (a real app shows
    the same code for 30 s; a script that runs several commands waits for the next one)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.last = -10**9

    def code(self) -> str:
        while True:
            now = time.time()
            now_step = int(now) // 30
            # RFC 6238 drift: the switch takes one step either way. The previous step is used only
            # early in the current one (>= 20 s left): a code of it must still be one step old when
            # the command, slower under load, reaches the check (a code two steps old is refused).
            oldest = now_step - 1 if now - now_step * 30 < 10 else now_step
            step = max(self.last + 1, oldest)
            if step <= now_step + 1:
                self.last = step
                return totp.code_at(self.secret, step * 30)
            time.sleep(0.2)  # every usable step is spent: wait for the clock to give the next

    def replay(self) -> str:
        return totp.code_at(self.secret, self.last * 30)


def secret_of(stdout: str) -> bytes:
    uri = next(ln for ln in stdout.splitlines() if ln.startswith("otpauth://totp/"))
    return base64.b32decode(parse_qs(urlparse(uri).query)["secret"][0])


def test_an_administrator_and_an_investigator_session(tmp_path, procs):
    up, port, mport = free_port(), free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=mport)
    write_users(tmp_path / "users.toml", [u for u in USERS if u[3] not in ("admin", "investigator")])
    c = str(cfg)
    start_stub(procs, tmp_path, up)
    start_serve(procs, tmp_path, cfg)

    # -- no administrator yet: only an administrator may be made, without --as (the bootstrap)
    add = ("user", "add", "--config", c, "--ori", "CA0130000")
    r = run(*add, "--id", "OPS001", "--name", "OPERATOR, OLIVE", "--role", "full", "--password-stdin",
            input="an operator's long passphrase\n")
    assert r.returncode == 2 and "no enabled administrator exists yet" in r.stderr
    r = run(*add, "--id", "BOSS01", "--name", "CHIEF, CAROL", "--role", "admin", "--password-stdin",
            input=BOSS_PW + "\n")
    assert r.returncode == 0, r.stderr
    assert "bootstrap" in r.stdout
    boss = Authenticator(secret_of(r.stdout))  # an administrator always gets a second factor
    # Now one exists: the bootstrap is closed.
    r = run(*add, "--id", "BOSS02", "--name", "SECOND, SID", "--role", "admin", "--password-stdin",
            input="another admin's passphrase\n")
    assert r.returncode == 2 and "--as" in r.stderr

    # -- the administrator adds an investigator (password, OTP, then the new password)
    as_boss = ("--as", "BOSS01", "--password-stdin")
    r = run(*add, "--id", "SLEUTH", "--name", "HOLMES, SHERRY", "--role", "investigator", *as_boss,
            input=f"{BOSS_PW}\n{boss.code()}\n{SLEUTH_PW}\n")
    assert r.returncode == 0, r.stderr
    sleuth = Authenticator(secret_of(r.stdout))
    # The same one-time password a second time: refused (exit 3), nothing done.
    r = run("station", "disable", "ICS2", "--config", c, *as_boss, input=f"{BOSS_PW}\n{boss.replay()}\n")
    assert (r.returncode, r.stdout) == (3, "") and "authentication refused" in r.stderr
    r = run("station", "disable", "ICS2", "--config", c, *as_boss, input=f"{BOSS_PW}\n{boss.code()}\n")
    assert r.returncode == 0, r.stderr
    # Without a name, or with a wrong password: refused before anything happens.
    assert run("user", "disable", "TS0001", "--config", c).returncode == 2
    r = run("user", "disable", "TS0001", "--config", c, *as_boss, input=f"not it\n{boss.replay()}\n")
    assert r.returncode == 3

    # -- the investigator searches; an administrator may not, and an investigator may not administer
    as_sleuth = ("--as", "SLEUTH", "--password-stdin")
    r = run("journal", "search", "--config", c, *as_sleuth, "--case", "IA-2026-0042", "--user", "BOSS01",
            "--token", "NAM:holmes,  sherry", "--format", "jsonl", input=f"{SLEUTH_PW}\n{sleuth.code()}\n")
    assert r.returncode == 0, r.stderr
    r = run("user", "disable", "TS0001", "--config", c, *as_sleuth, input=f"{SLEUTH_PW}\n{sleuth.code()}\n")
    assert r.returncode == 3
    r = run("journal", "search", "--config", c, *as_boss, "--case", "X", input=f"{BOSS_PW}\n{boss.code()}\n")
    assert (r.returncode, r.stdout) == (3, "")
    r = run("journal", "verify", "--config", c, *as_sleuth, input=f"{SLEUTH_PW}\n{sleuth.code()}\n")
    assert r.returncode == 0 and r.stdout.startswith("OK: "), r.stderr
    # --case "" is not a case: refused before any logon (the SESSION records below show none), so
    # no one-time password is spent on it — the last one again, which a logon would refuse (exit 3).
    # (A fresh code here would cost a wait for the next 30-s step: the investigator's 4th in a row.)
    r = run("journal", "export", "--config", c, *as_sleuth, "--case", "", "--out", str(tmp_path / "b.zip"),
            input=f"{SLEUTH_PW}\n{sleuth.replay()}\n")
    assert r.returncode == 2 and "case reference" in r.stderr

    # -- what the journal says
    s = load(cfg)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    procs[-1].stop()  # the switch's last records committed; the journal is read directly
    records = list(search(s.journal_dir, ring, Query()))
    admin = [(r.user, r.text) for r in records if r.kind == "ADMIN"]
    # The bootstrap's actor is the OS account that ran it; the account it made is its object.
    assert (f"OS:{__import__('getpass').getuser()}",
            "BOOTSTRAP USER ADD BOSS01 ROLE/admin ORI/CA0130000 TOTP (NO ENABLED ADMINISTRATOR EXISTED)") in admin
    assert ("BOSS01", "USER ADD SLEUTH ROLE/investigator ORI/CA0130000 TOTP") in admin
    assert ("BOSS01", "STATION DISABLE ICS2") in admin
    assert not any(t.startswith(("USER ", "STATION ", "KEYS ", "BOOTSTRAP")) and not u for u, t in admin)
    assert not any("TS0001" in t for u, t in admin)  # the refused ones did nothing
    cli = [(r.user, r.text) for r in records if r.kind == "SESSION" and r.peer == "CLI"]
    assert cli == [
        ("BOSS01", "LOGON OK CLI USER ADD"),
        ("BOSS01", "LOGON FAILED BAD OTP CLI STATION DISABLE"),
        ("BOSS01", "LOGON OK CLI STATION DISABLE"),
        ("BOSS01", "LOGON FAILED BAD PASSWORD CLI USER DISABLE"),
        ("SLEUTH", "LOGON OK CLI JOURNAL SEARCH"),
        ("SLEUTH", "LOGON FAILED ROLE NOT ALLOWED CLI USER DISABLE"),
        ("BOSS01", "LOGON FAILED ROLE NOT ALLOWED CLI JOURNAL SEARCH"),
        ("SLEUTH", "LOGON OK CLI JOURNAL VERIFY"),
    ]
    audit = [(r.user, json.loads(r.text)) for r in records if r.kind == "AUDIT"]
    verify = next(a for u, a in audit if a["op"] == "verify")
    assert verify["by"] == "SLEUTH" and verify["outcome"] == "ok"
    found = next((u, a) for u, a in audit if a["op"] == "search" and a.get("outcome") != "refused")
    assert found[0] == "SLEUTH" and found[1]["case"] == "IA-2026-0042"
    assert found[1]["filters"]["user"] == "BOSS01" and found[1]["filters"]["tokens"] == ["NAM:HOLMES,SHERRY"]
    refused = [(u, a["case"]) for u, a in audit if a.get("outcome") == "refused"]
    assert refused == [("BOSS01", "X")]
    # The searched name is CJI: on disk it is nowhere in clear (sealed with the record's text).
    for f in s.journal_dir.rglob("*"):
        if f.is_file():
            assert b"HOLMES" not in f.read_bytes()


def test_the_cli_reads_the_journal_only_as_the_service_account(tmp_path):
    """The master key decrypts the journal without an AUDIT record: msc refuses to run for anyone
    but the account that owns it, and refuses a key file other accounts can read."""
    cfg = make_config(tmp_path)
    s = load(cfg)
    args = ("journal", "search", "--config", str(cfg), "--as", "IN0001", "--case", "C1", "--password-stdin")
    from tests.conftest import PASSWORD

    assert run(*args, input=PASSWORD + "\n").returncode == 0
    os.chmod(s.key_file, 0o640)
    r = run(*args, input=PASSWORD + "\n")
    assert r.returncode == 2 and "readable by other accounts" in r.stderr and r.stdout == ""
    os.chmod(s.key_file, 0o600)
    if os.geteuid() == 0:  # as root the test can give the key to another account
        os.chown(s.key_file, 65534, -1)
        try:
            r = run(*args, input=PASSWORD + "\n")
            assert r.returncode == 2 and "service account" in r.stderr and r.stdout == ""
        finally:
            os.chown(s.key_file, 0, -1)
    assert run(*args, input=PASSWORD + "\n").returncode == 0


def test_a_locked_administrator_does_not_reopen_the_bootstrap(tmp_path):
    """Five wrong passwords lock the only administrator: the bootstrap stays closed (the account
    still exists). The service account may then unlock an administrator — and only that — and
    when every administrator is disabled it may make a new one; both acts name the OS account."""
    import getpass

    from tests.conftest import PASSWORD

    cfg = make_config(tmp_path)  # AD0001 is the only administrator (no TOTP in the test users)
    c = str(cfg)
    me = f"OS:{getpass.getuser()}"
    for _ in range(5):
        r = run("user", "unlock", "TS0001", "--config", c, "--as", "AD0001", "--password-stdin", input="wrong\n\n")
        assert r.returncode == 3
    add = ("user", "add", "--config", c, "--ori", "CA0130000", "--name", "ROOK, ROBIN", "--role", "admin",
           "--password-stdin")
    r = run(*add, "--id", "AD0002", input="a new administrator's passphrase\n")
    assert r.returncode == 2 and "--as ADMIN_ID is required" in r.stderr and r.stdout == ""
    # Recovery without --as: only an administrator, only while every one is locked.
    for uid in ("TS0001", "AD9999"):
        assert run("user", "unlock", uid, "--config", c).returncode in (1, 2)
    r = run("user", "unlock", "AD0001", "--config", c)
    assert r.returncode == 0, r.stderr
    assert run("user", "unlock", "AD0001", "--config", c).returncode == 2  # not locked now: --as again
    # The administrator logs on again and disables themselves: no enabled administrator is left.
    r = run("user", "disable", "AD0001", "--config", c, "--as", "AD0001", "--password-stdin", input=PASSWORD + "\n\n")
    assert r.returncode == 0, r.stderr
    r = run(*add, "--id", "AD0002", input="a new administrator's passphrase\n")
    assert r.returncode == 0 and f"bootstrap by {me}" in r.stdout, r.stderr
    s = load(cfg)
    admin = [(x.user, x.text) for x in search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file),
                                              Query(kind="ADMIN"))]
    assert admin == [
        (me, "USER UNLOCK AD0001 (EVERY ENABLED ADMINISTRATOR WAS LOCKED)"),
        ("AD0001", "USER DISABLE AD0001"),
        (me, "BOOTSTRAP USER ADD AD0002 ROLE/admin ORI/CA0130000 TOTP (NO ENABLED ADMINISTRATOR EXISTED)"),
    ]
    # An auditor finds the acts done without a logon by their actor.
    r = run("journal", "search", "--config", c, "--as", "IN0001", "--case", "AU-1", "--kind", "admin", "--user", me,
            "--format", "jsonl", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert [json.loads(ln)["text"].split()[0] for ln in r.stdout.splitlines()] == ["USER", "BOOTSTRAP"]
