"""``[node] lease_dsn`` and ``[storage] dsn`` (one validator, ``dsn_problems``) on any text
(hypothesis): a list of reasons, never an exception (which would be a traceback from ``msc config
check``); a password in it is never accepted."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from msc.config.validate import dsn_problems

EXAMPLES = int(os.environ.get("MSC_PROP_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("MSC_PROP_RANDOM") is None,
                    database=None)

host = st.one_of(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), st.just("[::1]"), st.just("[fe80::1"),
                 st.just("127.0.0.1"), st.just(""))
port = st.one_of(st.just(""), st.integers(0, 99999).map(lambda p: f":{p}"), st.just(":x"))
word = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_gets_an_answer_not_an_exception(text):
    problems = dsn_problems(text)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


@SETTINGS
@given(scheme=st.sampled_from(["postgresql", "postgres"]), user=word, password=word.filter(bool),
       hosts=st.lists(st.tuples(host, port), min_size=1, max_size=3), db=word,
       where=st.sampled_from(["userinfo", "query", "query-last"]))
def test_a_password_anywhere_is_never_accepted(scheme, user, password, hosts, db, where):
    netloc = ",".join(h + p for h, p in hosts)
    if where == "userinfo":
        dsn = f"{scheme}://{user}:{password}@{netloc}/{db}"
    elif where == "query":
        dsn = f"{scheme}://{user}@{netloc}/{db}?password={password}&sslmode=require"
    else:
        dsn = f"{scheme}://{user}@{netloc}/{db}?sslmode=require&password={password}"
    assert dsn_problems(dsn)


name = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
good_host = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z][a-z0-9-]{0,15}){0,2}", fullmatch=True),
                      st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]"))
good_port = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
param = st.sampled_from(["target_session_attrs=read-write", "sslrootcert=/etc/msc/ca.pem", "sslmode=verify-full",
                         "passfile=/etc/msc/pgpass", "application_name=msc"])


@SETTINGS
@given(scheme=st.sampled_from(["postgresql", "postgres"]), user=st.one_of(st.just(""), name),
       hosts=st.lists(st.tuples(good_host, good_port), min_size=1, max_size=3), db=name,
       params=st.lists(param, max_size=3, unique=True))
def test_a_well_formed_uri_without_a_password_is_accepted(scheme, user, hosts, db, params):
    netloc = (f"{user}@" if user else "") + ",".join(h + p for h, p in hosts)
    if len(hosts) > 1:
        params = [p for p in params if not p.startswith("target_")] + ["target_session_attrs=read-write"]
    dsn = f"{scheme}://{netloc}/{db}" + (f"?{'&'.join(params)}" if params else "")
    assert dsn_problems(dsn) == [], dsn
