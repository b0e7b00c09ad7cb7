"""One way to log on, with no way around it (issue 13 item 2), against the real Switch on loopback.

The lockout under 40 and 200 simultaneous LOGONs; each TOTP step once across the terminal and the
``msc`` command (another process); one answer for every refusal; a locked account cannot ``PWD``;
a host's OIF check sees a lockout made by another process; hashes at another cost are replaced at
logon; mangled logons are journaled without their secrets.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from msc.journal.search import Query, search
from msc.mnemonics import passwords, totp
from msc.mnemonics.state import StateStore
from tests.conftest import PASSWORD, TEST_COST, add_totp_user, eventually, scraped
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(120)

REFUSED = b"E202 LOGON REFUSED"
#: Issue 14's per-address logon bounds, lifted for tests of the account's own rules from 127.0.0.1.
LIFT_ADDRESS_BOUNDS = "logon_failures_per_address = 1000\nlogon_queue = 1000\nlogon_wait_s = 120"


async def msc(*args: str, input: str | None = None) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "msc", *args, stdin=asyncio.subprocess.PIPE,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(input.encode() if input else None), 60)
    return p.returncode, out.decode(), err.decode()


def journal(harness, **q):
    sw = harness.switch
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(**q)))


@pytest.mark.parametrize("n", [40, 200])
async def test_simultaneous_logons_cannot_outrun_the_lockout(harness, n):
    """The issue's attack: n LOGONs at once for one user, n-1 wrong and the right one last. The
    right one is refused because the account locked, and it stays locked."""
    # A KDF slow enough (~25 ms: cost 11 here; cost 13 took 90 ms, and n = 200 checks 20 s on an
    # idle machine, over 60 s on a loaded one) that the checks overlap, as at the production cost.
    # All n come from one address: the per-address bounds of issue 14 (E307 without a check) are
    # lifted, so that what stops them here is the account's lockout (test_bounds.py tests those).
    sw = await harness.start_switch(password_cost=11, switch_extra=LIFT_ADDRESS_BOUNDS,
                                    listener_extra="max_pending_per_address = 1000")
    # The address is a known one (an operator logged on from it): its checks take every slot at
    # the normal CPU priority, so they overlap — the race under test. From an unknown address
    # they run one at a time at nice 10 (issue 14's guesser bound, tests/unit/test_bounds.py):
    # no overlap, and on a loaded machine n checks one by one at nice 10 outlasted any bound
    # (CI-like run: 60 s were not enough for n = 200).
    known = await harness.operator("ICS2", "TS0002")
    assert (await known.send("ICS2.LOGOFF")).type == "A"
    known.close()
    clients = []
    for _ in range(n):
        c = await WireClient.connect(harness.port)
        await c.banner()
        clients.append(c)
    wrong = [asyncio.ensure_future(c.send(f"ICS1.LOGON.TS0001.-.wrong guess {i}", timeout=60))
             for i, c in enumerate(clients[:-1])]
    # The right one goes last: once the switch has counted five attempts (their checks are then
    # under way, or done), and before the 39/199 wrong ones are answered.
    state = StateStore(harness.tmp / "data" / "state.db")
    await eventually(lambda: len(getattr(state.user("TS0001"), "failures", ())) >= 5
                     or getattr(state.user("TS0001"), "locked_at", None) is not None, timeout=30, interval=0.001)
    state.close()
    right = await clients[-1].send(f"ICS1.LOGON.TS0001.-.{PASSWORD}", timeout=60)
    answers = [*await asyncio.gather(*wrong), right]
    assert [a.payload for a in answers] == [REFUSED] * n  # the right one too
    assert scraped(sw, "msc_lockouts_total", path="terminal") == 1
    assert scraped(sw, "msc_logon_failures_total", path="terminal") == n
    await sw.journal.flush()
    session = journal(harness, kind="SESSION", user="TS0001")
    assert sum(r.text == "LOCKOUT" for r in session) == 1
    assert not any(r.text.startswith("LOGON OK") for r in session)
    # Every attempt is journaled: n refusals, at most five of them a check of the password.
    failed = [r.text for r in session if r.text.startswith("LOGON FAILED")]
    assert len(failed) == n
    assert sum(t == "LOGON FAILED BAD PASSWORD" for t in failed) <= 5
    assert sum(t == "LOGON FAILED LOCKED" for t in failed) >= n - 5
    c = await harness.client()
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).payload == REFUSED  # still locked
    sw.auth.unlock("TS0001")
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    for c in clients:
        c.close()


async def test_every_refusal_gets_the_same_answer(harness):
    """Unknown user, wrong password, wrong/missing/replayed OTP, disabled (with the right password
    and without), locked (with the right password): one answer, byte for byte."""
    # 18 refusals from 127.0.0.1: issue 14's per-address attempt rate (E307 unchecked) is lifted.
    sw = await harness.start_switch(totp_users=["MF0001"], switch_extra=LIFT_ADDRESS_BOUNDS)
    secret = harness.totp["MF0001"]
    code = totp.code_at(secret, time.time())
    ok = await harness.client()
    assert (await ok.logon("ICS2", "MF0001", PASSWORD, otp=code)).type == "A"
    for _ in range(5):
        await (await harness.client()).logon("ICS1", "TS0002", "wrong")
    cases = [
        ("NOSUCH", PASSWORD, "-"),
        ("ZZ9999", "some other password", "-"),
        ("TS0001", "not the password", "-"),
        ("TS0001", PASSWORD.upper(), "-"),
        ("MF0001", PASSWORD, "-"),
        ("MF0001", PASSWORD, "000000"),
        ("MF0001", PASSWORD, code),  # replayed
        ("MF0001", "not the password", totp.code_at(secret, time.time() + 30)),
        ("DS0001", PASSWORD, "-"),  # disabled, right password
        ("DS0001", "not the password", "-"),  # disabled, wrong password
        ("TS0002", PASSWORD, "-"),  # locked, right password
        ("TS0002", "wrong", "-"),  # locked, wrong password
    ]
    answers = []
    for uid, pw, otp in cases:
        c = await harness.client()
        answers.append((await c.logon("ICS1", uid, pw, otp=otp)).payload)
        c.close()
    assert answers == [REFUSED] * len(cases)
    # The journal, not the terminal, says why.
    await sw.journal.flush()
    why = {r.user: r.text for r in journal(harness, kind="SESSION") if r.text.startswith("LOGON FAILED")}
    assert why["NOSUCH"] == "LOGON FAILED UNKNOWN USER" and why["DS0001"] == "LOGON FAILED BAD PASSWORD"
    assert "LOGON FAILED LOCKED" in {r.text for r in journal(harness, kind="SESSION", user="TS0002")}
    assert "LOGON FAILED DISABLED" in {r.text for r in journal(harness, kind="SESSION", user="DS0001")}
    assert "LOGON FAILED BAD OTP" in {r.text for r in journal(harness, kind="SESSION", user="MF0001")}


async def test_a_totp_step_is_accepted_once_across_the_terminal_and_the_msc_command(harness):
    """The CLI runs in another process: the step it used is used for the terminal too, and the
    other way round (issue 13: the same one-time password was accepted three times)."""
    sw = await harness.start_switch()
    secret = add_totp_user(harness.tmp / "msc.toml", "IT0001", role="investigator")
    sw.reload_users()
    cfg = str(harness.tmp / "msc.toml")
    while time.time() % 30 > 15:  # the previous step's code must stay valid through three logons
        await asyncio.sleep(0.2)
    step = int(time.time()) // 30
    first, second, third = (totp.code_at(secret, (step + d) * 30) for d in (-1, 0, 1))

    async def cli(code: str) -> int:
        rc, _out, _err = await msc("journal", "search", "--config", cfg, "--as", "IT0001", "--case", "T-1",
                                   "--password-stdin", "--format", "jsonl", input=f"{PASSWORD}\n{code}\n")
        return rc

    # The terminal authenticates the investigator (then refuses the role, shown as E202): the step is used.
    c = await harness.client()
    assert (await c.logon("ICS1", "IT0001", PASSWORD, otp=first)).payload == REFUSED
    assert await cli(first) == 3  # … so the msc command may not use it again
    assert await cli(second) == 0
    assert (await c.logon("ICS1", "IT0001", PASSWORD, otp=second)).payload == REFUSED  # nor the terminal
    assert await cli(second) == 3
    assert await cli(third) == 0
    await sw.journal.flush()
    texts = [r.text for r in journal(harness, user="IT0001", kind="SESSION")]
    assert texts.count("LOGON FAILED BAD OTP CLI JOURNAL SEARCH") == 2
    assert texts.count("LOGON OK CLI JOURNAL SEARCH") == 2


async def test_failures_at_the_msc_command_count_towards_the_terminal_lockout(harness):
    sw = await harness.start_switch()
    cfg = str(harness.tmp / "msc.toml")
    for _ in range(3):
        rc, _, _ = await msc("journal", "verify", "--config", cfg, "--as", "AD0001", "--password-stdin",
                             input="wrong\n\n")
        assert rc == 3
    c = await harness.client()
    for _ in range(2):
        assert (await c.logon("ICS1", "AD0001", "wrong")).payload == REFUSED
    rc, _, err = await msc("journal", "verify", "--config", cfg, "--as", "AD0001", "--password-stdin",
                           input=PASSWORD + "\n\n")
    assert rc == 3 and "authentication refused" in err  # the right password, but locked
    await eventually(lambda: sw.auth.is_locked("AD0001"))
    assert any(r.text == "LOCKOUT" for r in journal(harness, kind="SESSION", user="AD0001"))


async def test_a_locked_operator_cannot_change_the_password(harness):
    """Issue 13: a logged-on operator whose account then locks could still PWD."""
    await harness.start_switch()
    c = await harness.operator("ICS1", "TS0001")
    for _ in range(5):
        await (await harness.client()).logon("ICS2", "TS0001", "someone guessing")
    a = await c.send(f"ICS1.PWD.{PASSWORD}.a brand new passphrase")
    assert (a.code, a.text) == ("E202", "E202 PASSWORD CHANGE REFUSED")
    # Nothing changed: after an unlock the old password still works, the new one does not.
    harness.switch.auth.unlock("TS0001")
    c2 = await harness.client()
    assert (await c2.logon("ICS2", "TS0001", "a brand new passphrase")).payload == REFUSED
    assert (await c2.logon("ICS2", "TS0001", PASSWORD)).type == "A"


async def test_wrong_old_passwords_at_pwd_count_towards_the_lockout(harness):
    await harness.start_switch()
    c = await harness.operator("ICS1", "TS0001")
    for i in range(5):
        assert (await c.send(f"ICS1.PWD.wrong {i}.a brand new passphrase")).code == "E202"
    assert harness.switch.auth.is_locked("TS0001")
    assert (await c.send(f"ICS1.PWD.{PASSWORD}.a brand new passphrase")).code == "E202"


async def test_a_hosts_oif_check_sees_a_lockout_made_by_another_process(harness):
    """A host's operators never LOGON at msc; the OIF check asks the same service. A lockout
    written to state.db by another process (an msc command) applies within a second."""
    await harness.start_switch()
    host = await harness.client()
    assert (await host.send("ECC2X1.*EC0001.#C0A8010A.RQ.CA0130100.LIC/7XYZ999")).code != "E104"
    other = StateStore(harness.tmp / "data" / "state.db")  # "another process"
    other.update_attempts("EC0001", lambda a: (type(a)((), time.time()), None))
    other.close()

    async def refused() -> bool:
        return (await host.send("ECC2X2.*EC0001.#C0A8010A.RQ.CA0130100.LIC/7XYZ999")).code == "E104"

    deadline = time.monotonic() + HANG_S
    while not await refused():
        assert time.monotonic() < deadline, "the lockout did not reach the OIF check"
        await asyncio.sleep(0.1)
    rc, _, err = await msc("user", "unlock", "EC0001", "--config", str(harness.tmp / "msc.toml"),
                           "--as", "AD0001", "--password-stdin", input=PASSWORD + "\n\n")
    assert rc == 0, err
    assert (await host.send("ECC2X3.*EC0001.#C0A8010A.RQ.CA0130100.LIC/7XYZ999")).code != "E104"


async def test_a_hash_at_another_cost_is_replaced_at_logon(harness):
    """Every hash at the current cost: users hashed cheaper (the issue's demo users) are re-hashed
    at their next successful logon, and the running switch uses the new hash."""
    cfg_cost = TEST_COST + 1
    await harness.start_switch()
    path = harness.tmp / "msc.toml"
    path.write_text(path.read_text().replace(f"password_cost = {TEST_COST}", f"password_cost = {cfg_cost}"))
    assert await harness.switch.reload()
    users = (harness.tmp / "users.toml").read_text()
    assert users.count(f"$scrypt$ln={TEST_COST},") == users.count("$scrypt$")
    c = await harness.client()
    assert (await c.logon("ICS1", "TS0001", "wrong")).payload == REFUSED  # a refusal changes nothing
    assert f"$scrypt$ln={cfg_cost}," not in (harness.tmp / "users.toml").read_text()
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    from msc.mnemonics import userfile

    by_id = {u.id: u.password for u in userfile.read(harness.tmp / "users.toml").user}
    assert passwords.params_of(by_id["TS0001"]) == (cfg_cost, 8, 1)
    assert passwords.params_of(by_id["TS0002"]) == (TEST_COST, 8, 1)  # only who logged on
    assert harness.switch.directory.users["TS0001"].password_hash == by_id["TS0001"]
    c2 = await harness.client()
    assert (await c2.logon("ICS2", "TS0001", PASSWORD)).type == "A"


MANGLED = [
    b"ICS1.logon.TS0001.-.Sw0rdfish-Secret",
    b"ICS1.Logon.TS0001.-.Sw0rdfish-Secret",
    b"ICS1 LOGON TS0001 - Sw0rdfish-Secret",
    b"ICS1/LOGON/TS0001/-/Sw0rdfish-Secret",
    b"ICS1,LOGON,TS0001,-,Sw0rdfish-Secret",
    b"LOGON.TS0001.-.Sw0rdfish-Secret",
    b"ICS1.LOGON.TS0001.-.Sw0rdfish-Secret\xc3\xa4",
    b"ICS1.\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xa7\xef\xbc\xaf\xef\xbc\xae.TS0001.-.Sw0rdfish-Secret",
    b"ICS1.LOGON.TS0001.-.Sw0rdfish-Secret\x07",
    b"ICS1.pwd.Sw0rdfish-Secret.Another-Sw0rdfish",
    b"ICS1.PWD Sw0rdfish-Secret Another-Sw0rdfish",
    b"ICS1.*TS0001.#C0A8010A.login.TS0001.-.Sw0rdfish-Secret",
]


async def test_mangled_logons_are_journaled_without_their_secrets(harness):
    """Issue 13: malformed LOGON/PWD texts were journaled with the password in clear."""
    # All on one connection not logged on: it would be closed at its 10th refusal (issue 14).
    sw = await harness.start_switch(listener_extra="max_refused = 100")
    c = await harness.client()
    for payload in MANGLED:
        assert (await c.send(payload)).type == "N"
    op = await harness.operator("ICS2", "TS0002")  # and logged on (PWD is accepted there)
    for payload in MANGLED:
        await op.send(payload.replace(b"ICS1", b"ICS2"))
    await sw.journal.flush()
    records = journal(harness)
    texts = "\n".join(r.text for r in records)
    assert "Sw0rdfish" not in texts
    assert sum(r.kind == "REJECTED" for r in records) >= len(MANGLED)
    # The files on disk hold sealed text only; nothing of it in clear either.
    for f in (harness.tmp / "data").rglob("*"):
        if f.is_file():
            assert b"Sw0rdfish" not in f.read_bytes()


async def test_pool_logons_share_the_count_with_every_other_path(harness):
    """One count per account across a pool (PPP §1.6.2 B), a terminal and a host's OIF: guesses
    at the pool lock the account for the host's messages too."""
    sw = await harness.start_switch()
    host = await harness.client()
    assert (await host.send("ECC2P1.*EC0001.#C0A8010A.RQ.CA0130100.LIC/7XYZ999")).code != "E104"
    for i in range(5):
        c = await harness.client()
        assert (await c.logon("ECMDT", "EC0001", f"guess {i}")).payload == REFUSED
        c.close()
    c = await harness.client()
    assert (await c.logon("ECMDT", "EC0001", PASSWORD)).payload == REFUSED  # the pool: locked
    assert (await host.send("ECC2P2.*EC0001.#C0A8010A.RQ.CA0130100.LIC/7XYZ999")).code == "E104"  # the host too
    assert scraped(sw, "msc_lockouts_total", path="pool") == 1
    sw.auth.unlock("EC0001")
    a = await c.logon("ECMDT", "EC0001", PASSWORD)
    assert a.type == "A" and a.text.startswith("MNE/ECM")
