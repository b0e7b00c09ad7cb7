"""``[storage] dsn`` (msc.config.validate.dsn_problems), any URI hypothesis builds: a password
anywhere in it is refused and never appears in what the administrator reads; a URI that is
refused is refused for a reason; a well-formed one without a password is accepted."""

from __future__ import annotations

import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st

from msc.config.validate import dsn_problems

NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
HOST = st.one_of(NAME, st.builds(lambda a, b: f"{a}.{b}", NAME, NAME),
                 st.builds(lambda *o: ".".join(map(str, o)), *[st.integers(0, 255)] * 4))
PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
SECRET = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=6, max_size=20).map(
    lambda s: "Pw" + s)


def uri(user: str, hosts: list[str], db: str, query: dict[str, str], password: str | None = None) -> str:
    info = user if password is None else f"{user}:{urllib.parse.quote(password, safe='')}"
    q = urllib.parse.urlencode(query)
    return f"postgresql://{info}@{','.join(hosts)}/{db}" + (f"?{q}" if q else "")


hosts = st.lists(st.builds(lambda h, p: h + p, HOST, PORT), min_size=1, max_size=3)


@settings(max_examples=80, derandomize=True)
@given(user=NAME, hosts=hosts, db=NAME, secret=SECRET, where=st.sampled_from(["userinfo", "query"]))
def test_a_password_is_refused_and_never_echoed(user, hosts, db, secret, where):
    query = {"target_session_attrs": "read-write"}
    if where == "query":
        query["password"] = secret
        dsn = uri(user, hosts, db, query)
    else:
        dsn = uri(user, hosts, db, query, password=secret)
    problems = dsn_problems(dsn)
    assert any("no password in the connection string" in p for p in problems)
    assert not any(secret in p or urllib.parse.quote(secret, safe="") in p for p in problems)


@settings(max_examples=80, derandomize=True)
@given(user=NAME, hosts=hosts, db=NAME, sslmode=st.sampled_from([None, "require", "verify-full"]))
def test_a_uri_without_a_password_is_accepted(user, hosts, db, sslmode):
    query = {"target_session_attrs": "read-write"}
    if sslmode:
        query["sslmode"] = sslmode
    assert dsn_problems(uri(user, hosts, db, query)) == []


# Any text, and any text after the scheme (where urlsplit itself may raise: "postgresql://[").
@settings(max_examples=150, derandomize=True)
@given(text=st.one_of(st.text(max_size=60), st.text("[]:@/?&=,%.abc19 ", max_size=40).map(
    lambda t: "postgresql://" + t)))
def test_any_text_gets_an_answer_not_an_exception(text):
    problems = dsn_problems(text)
    assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)
