"""``[storage]`` (CONFIG.md "Storage"): the backend, the PostgreSQL connection URI and where its
password comes from. A password is never accepted in msc.toml, and a refusal never echoes it."""

from __future__ import annotations

import os

import pytest

from msc.config.load import ConfigError, load
from msc.config.validate import dsn_problems
from msc.storage.postgres import PgSettings, read_password
from tests.conftest import make_config

SECRET = "s3cr3t-Pa55"


def _with_storage(tmp_path, body: str):
    path = make_config(tmp_path)
    path.write_text(path.read_text() + "\n[storage]\n" + body + "\n")
    return path


def _issues(tmp_path, body: str) -> list:
    with pytest.raises(ConfigError) as exc:
        load(_with_storage(tmp_path, body))
    return exc.value.issues


def test_sqlite_is_the_default_and_needs_nothing(tmp_path):
    s = load(make_config(tmp_path))
    assert (s.config.storage.backend, s.config.storage.dsn, s.config.storage.password_file) == ("sqlite", None, None)


# Connection URIs msc accepts: one host, several (with read-write), IPv6, host in the query,
# passfile in the query (libpq's environment), a unix socket directory.
@pytest.mark.parametrize("dsn", [
    "postgresql://msc@db1:5432/msc",
    "postgres://msc@db1/msc",
    "postgresql://msc@10.0.0.1:5432,10.0.0.2:5432/msc?target_session_attrs=read-write",
    "postgresql://msc@pg1,pg2,pg3/msc?target_session_attrs=primary",
    "postgresql://msc@[::1]:5433/msc",
    "postgresql:///msc?host=/run/postgresql&user=msc",
    "postgresql://msc@db1/msc?passfile=/etc/msc/pgpass&sslmode=verify-full",
])
def test_good_connection_uris(tmp_path, dsn):
    assert dsn_problems(dsn) == []
    s = load(_with_storage(tmp_path, f'backend = "postgresql"\ndsn = "{dsn}"'))
    assert s.config.storage.dsn == dsn


# Refused URIs, each with what the administrator reads; a password in them is never repeated.
@pytest.mark.parametrize("dsn, fragment", [
    (f"postgresql://msc:{SECRET}@db1/msc", "no password in the connection string"),
    (f"postgresql://msc@db1/msc?password={SECRET}", "no password in the connection string"),
    # a '/' in the password makes user:pass/word@host parse as host:port and a path; a doubled '?'
    # makes the key "?password"; libpq's keys are case-insensitive
    (f"postgresql://msc:5432/{SECRET}@db1/msc", "no password in the connection string"),
    (f"postgresql://msc@db1/msc??password={SECRET}", "no password in the connection string"),
    (f"postgresql://msc@db1/msc?PASSWORD={SECRET}", "no password in the connection string"),
    (f"postgresql://msc:{SECRET}@db1,db2/msc?target_session_attrs=read-write", "no password in the connection string"),
    (f"host=db1 dbname=msc user=msc password={SECRET}", "must be a libpq URI"),
    ("host=db1 dbname=msc", "must be a libpq URI"),
    ("mysql://msc@db1/msc", "must be a libpq URI"),
    ("postgresql://msc@db1,db2/msc", "several hosts need target_session_attrs=read-write"),
    ("postgresql://msc@db1,db2/msc?target_session_attrs=any", "several hosts need target_session_attrs"),
    ("postgresql://msc@db1/msc?target_session_attrs=writable", "target_session_attrs must be one of"),
    ("postgresql://msc@db1:99999/msc", "a port must be 1..65535"),
    ("postgresql://msc@db1:http/msc", "a port must be 1..65535"),
    ("postgresql://msc@db1,,db2/msc?target_session_attrs=read-write", "a host is empty"),
    ("postgresql://msc@[::1/msc", "not a well-formed connection URI"),
    ("postgresql://[", "not a well-formed connection URI"),
    # libpq settings asyncpg does not parse: sent to the server as run-time parameters, refused (FATAL)
    ("postgresql://msc@db1/msc?connect_timeout=2", "connect_timeout: a libpq setting msc's client"),
    ("postgresql://msc@db1/msc?sslmode=require&keepalives_idle=30", "keepalives_idle: a libpq setting"),
    ("postgresql://msc@db1/msc?options=-c%20search_path%3Dmsc", "options: a libpq setting"),
    ("postgresql://msc@db1/msc?Connect_Timeout=2", "connect_timeout: a libpq setting"),
    ("postgresql://msc@db1,db2/msc?target_session_attrs=read-write&load_balance_hosts=random",
     "load_balance_hosts: a libpq setting"),
])
def test_bad_connection_uris_are_refused_without_echoing_a_password(tmp_path, dsn, fragment):
    issues = _issues(tmp_path, f'backend = "postgresql"\ndsn = "{dsn}"')
    assert any(i.path == "storage.dsn" and fragment in i.message for i in issues), issues
    assert not any(SECRET in str(i) for i in issues)


@pytest.mark.parametrize("body, path, fragment", [
    ('backend = "postgresql"', "storage.dsn", "needs a connection URI"),
    ('backend = "sqlite"\ndsn = "postgresql://msc@db1/msc"', "storage.dsn", 'only with backend = "postgresql"'),
    ('password_file = "pg.pw"', "storage.password_file", 'only with backend = "postgresql"'),
    ('backend = "postgresql"\ndsn = "postgresql://msc@db1/msc"\npassword_file = "absent.pw"',
     "storage.password_file", "file not found"),
    ('backend = "oracle"', "storage.backend", ""),
    ('backend = "postgresql"\ndsn = "postgresql://msc@db1/msc"\npassword = "x"', "storage", "unknown field `password`"),
])
def test_storage_table_errors(tmp_path, body, path, fragment):
    issues = _issues(tmp_path, body)
    assert any(i.path == path and fragment in i.message for i in issues), issues


@pytest.mark.parametrize("mode, ok", [(0o600, True), (0o400, True), (0o640, False), (0o604, False), (0o666, False)])
def test_the_password_file_must_be_private(tmp_path, mode, ok):
    pw = tmp_path / "pg.pw"
    pw.write_text(SECRET + "\n")
    os.chmod(pw, mode)
    body = 'backend = "postgresql"\ndsn = "postgresql://msc@db1/msc"\npassword_file = "pg.pw"'
    if ok:
        s = load(_with_storage(tmp_path, body))
        pg = PgSettings.from_settings(s)
        assert pg.password == SECRET
        assert SECRET not in repr(pg)
    else:
        issues = _issues(tmp_path, body)
        assert any(i.path == "storage.password_file" and "group or others" in i.message for i in issues), issues


@pytest.mark.parametrize("text, expected", [
    (f"{SECRET}\n", SECRET), (f"{SECRET}\r\n", SECRET), (f"{SECRET}", SECRET), (f"{SECRET}\nsecond line\n", SECRET),
    ("pass with spaces \n", "pass with spaces "),
])
def test_the_password_is_the_first_line(tmp_path, text, expected):
    pw = tmp_path / "pw"
    pw.write_text(text)
    assert read_password(pw) == expected


@pytest.mark.parametrize("text", ["", "\n", "\nsecret on line two\n"])
def test_an_empty_first_line_is_no_password(tmp_path, text):
    pw = tmp_path / "pw"
    pw.write_text(text)
    with pytest.raises(ValueError):
        read_password(pw)
