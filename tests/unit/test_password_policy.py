"""The password policy (CJIS IA-5(1)(a)) and the hashes (issue 13 item 2): a maintained strength
check instead of our own 123 words; the user's ID and name still count; hashes carry their cost."""

from __future__ import annotations

import pytest

from msc.mnemonics import passwords
from msc.mnemonics.passwords import password_problem

USER, NAME = "JD1234", "DOE, JANE"
CONTEXT = ("ICSO-MSC", "CA0130000", "Imperial", "County", "Sheriff", "Office")

WEAK = [
    # the three
    "abc123abc123", "trustno1!", "123qweasd",
    # common and breached passwords, and their usual dressing-up
    "password1", "Password2026!", "P@ssw0rd123", "passw0rd!", "qwerty123456", "iloveyou2024", "letmein!!",
    "dragon12345", "welcome123", "changeme123", "Summer2024!", "baseball1", "sunshine!", "monkey1234!",
    # keyboard walks and sequences
    "1qaz2wsx3edc", "zaq12wsx", "qwertyuiop", "asdfghjkl;", "12345678", "87654321", "abcdefgh",
    # repeats
    "aaaaaaaaaa", "abcabcabcabc", "xyxyxyxyxy", "11111111",
    # dates
    "19800101", "01/01/1980", "1980-01-01!",
    # the agency and the switch (context words)
    "Imperial2024", "sheriff2024!", "CA0130000!",
]
MINE = [
    ("jd1234jd1234", "user ID"), ("my jd1234 pass", "user ID"), ("Jane's secret 77", "name"),
    ("doe family rules", "name"),
]
STRONG = ["correct horse battery", "Tr0ub4dor&3 mango", "demo-q8Zr2LkP0wXe", "purple elephants dance at 9",
          "x7#Kp!2vQz", "a brand.new passphrase", " spaces   count too "]


@pytest.mark.parametrize("pw", WEAK)
def test_guessable_passwords_are_refused(pw):
    problem = password_problem(pw, USER, NAME, context=CONTEXT)
    assert problem is not None and ("too easy to guess" in problem or "at least" in problem), (pw, problem)


@pytest.mark.parametrize(("pw", "what"), MINE)
def test_the_users_own_id_and_name_are_refused(pw, what):
    problem = password_problem(pw, USER, NAME, context=CONTEXT)
    assert problem is not None and what in problem


@pytest.mark.parametrize("pw", STRONG)
def test_strong_passwords_pass(pw):
    assert password_problem(pw, USER, NAME, context=CONTEXT) is None


@pytest.mark.parametrize(("pw", "why"), [
    ("short", "at least 8"), ("Abc1!x", "at least 8"), ("x" * 257, "at most 256"),
    ("pässwörd-long-enough", "printable ASCII"), ("tab\tinside-long", "printable ASCII"),
])
def test_length_and_characters(pw, why):
    assert why in password_problem(pw, USER, NAME)


def test_a_long_passphrase_is_scored_and_never_truncated():
    long = "correct horse battery staple " * 8  # > zxcvbn's 72 characters: scored by its start
    assert password_problem(long.strip(), USER, NAME) is None
    h = passwords.hash_password(long, ln=4)
    assert passwords.verify_password(long, h) and not passwords.verify_password(long[:72], h)


def test_hashes_carry_their_cost_and_say_when_they_need_a_new_one():
    h = passwords.hash_password("correct horse battery", ln=5)
    assert passwords.params_of(h) == (5, 8, 1)
    assert passwords.needs_rehash(h, 6) and not passwords.needs_rehash(h, 5)
    assert passwords.params_of(passwords.dummy_hash(6)) == (6, 8, 1)
    for bad in ("", "$scrypt$ln=x$a$b", "$argon2id$v=19$m=1$a$b", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA", "not a hash"):
        assert not passwords.verify_password("x", bad)
        assert passwords.needs_rehash(bad, 5)
