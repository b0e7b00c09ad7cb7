"""A logon refusal tells nothing about the account (SECURITY.md "Authentication", issue 12/13
trial item 4): every refusal at LOGON — a wrong password or a right password for an account that
may not operate here (role, agency, certification) — is the same ``E202 LOGON REFUSED``, and a
host's OIF the same ``E104`` for every reason; the reason is only journaled."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from msc.config.model import UserEntry
from msc.journal.search import Query, search
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password
from tests.conftest import PASSWORD, TEST_COST, TODAY, eventually

REFUSED = b"E202 LOGON REFUSED"
OIF_REFUSED = b"E104 OIF IS NOT AN ACTIVE USER OF A SERVED AGENCY"

# (user, header, journaled reason) — the right password every time.
LOGONS = [
    ("IN0001", "ICS1", "LOGON FAILED ROLE NOT ALLOWED"),  # investigator (the input)
    ("PR0001", "ICS1", "LOGON FAILED ROLE NOT ALLOWED"),  # practitioner
    ("AD0001", "ICS1", "LOGON FAILED ROLE NOT ALLOWED"),  # administrator
    ("EC0001", "ICS1", "LOGON FAILED AGENCY NOT SERVED"),  # another agency's operator
    ("EX0001", "ICS1", "LOGON FAILED CERTIFICATION EXPIRED"),
    ("DS0001", "ICS1", "LOGON FAILED DISABLED"),
    ("TS0002", "ECMDT", "LOGON FAILED AGENCY NOT SERVED"),  # a pool that does not serve the agency
    ("NOSUCH", "ICS1", "LOGON FAILED UNKNOWN USER"),
]

# Operators a host (ECC2 serves CA0130100) names in its OIF: (user, role, certified until).
HOST_USERS = [
    ("HI0001", "investigator", TODAY + dt.timedelta(days=365)),
    ("HA0001", "admin", TODAY + dt.timedelta(days=365)),
    ("HP0001", "practitioner", None),
    ("HX0001", "full", TODAY - dt.timedelta(days=1)),
]


def journal(harness, **q):
    sw = harness.switch
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(**q)))


@pytest.mark.parametrize(("user", "header", "reason"), LOGONS)
async def test_every_logon_refusal_is_e202_and_only_the_journal_knows_why(harness, user, header, reason):
    sw = await harness.start_switch()
    c = await harness.client()
    f = await c.logon(header, user, PASSWORD)
    assert (f.type, f.payload) == ("N", REFUSED)
    await sw.journal.flush()
    texts = [r.text for r in journal(harness, kind="SESSION") if r.user == user]
    assert reason in texts


async def test_a_hosts_oif_gets_one_answer_whatever_the_account_is(harness):
    await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    s = sw.settings
    users = userfile.read(s.users_path)
    extra = tuple(UserEntry(id=uid, name="HOST, OPERATOR", ori="CA0130100", role=role,
                            password=hash_password(PASSWORD, ln=TEST_COST), certified_until=until)
                  for uid, role, until in HOST_USERS)
    userfile.write(s.users_path, msgspec.structs.replace(users, user=(*users.user, *extra)))
    sw.reload_users()
    host = await harness.client()
    answers = {}
    for i, (uid, _role, _until) in enumerate([*HOST_USERS, ("NOSUCH", None, None), ("TS0001", None, None)]):
        f = await host.send(f"ECC2H{i}.*{uid}.#C0A8010A.RQ.CA0130100.LIC/7XYZ999")
        answers[uid] = f.payload
    assert set(answers.values()) == {OIF_REFUSED}, answers  # unknown, other agency and each kind alike
    await sw.journal.flush()
    reasons = await eventually(lambda: {r.user: r.text for r in journal(harness, kind="SESSION")
                                        if r.text.startswith("OIF REFUSED")})
    assert reasons["HI0001"] == reasons["HA0001"] == reasons["HP0001"] == "OIF REFUSED ROLE NOT ALLOWED"
    assert reasons["HX0001"] == "OIF REFUSED CERTIFICATION EXPIRED"
    assert harness.stub_log() == []  # nothing forwarded for any of them
