"""``[storage]`` (CONFIG.md "Storage"): the backend, the PostgreSQL connection URI and where its
password comes from. A password is never accepted in msc.toml, and a refusal never echoes it."""

from __future__ import annotations

import os

import pytest

from msc.config.load import ConfigError, load
from msc.config.secrets import read_password
from msc.config.validate import dsn_problems
from msc.storage.postgres import PgSettings
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
    ("pass with spaces inside\n", "pass with spaces inside"), (f"\ufeff{SECRET}\r\n", SECRET),
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


# -- what msc serve refuses, msc config check refuses first (probe hB finding 6) ------------------

STORAGE = 'backend = "postgresql"\ndsn = "postgresql://msc@db1/msc"\npassword_file = "pg.pw"'


def _password_file(tmp_path, content: bytes):
    pw = tmp_path / "pg.pw"
    pw.write_bytes(content)
    pw.chmod(0o600)
    return pw


@pytest.mark.parametrize("content, fragment", [
    (b"", "the first line (the password) is empty"),
    (b"\nsecret on line two\n", "the first line (the password) is empty"),
    (b"\xffpa\xfess\n", "is not UTF-8"),
    (b" " + SECRET.encode() + b"\n", "begins or ends with a space or tab"),
    (SECRET.encode() + b"  \n", "begins or ends with a space or tab"),
    (SECRET.encode() + b"\t\r\n", "begins or ends with a space or tab"),
])
def test_a_password_file_serve_would_refuse_is_refused_by_the_check_naming_the_file(tmp_path, content, fragment):
    pw = _password_file(tmp_path, content)
    issues = _issues(tmp_path, STORAGE)
    [issue] = [i for i in issues if i.path == "storage.password_file"]
    assert fragment in issue.message and str(pw) in issue.message and issue.line is not None, issues
    assert SECRET not in str(issue)
    # ... and what serve (and every command) says is the same line, the file named
    from msc.storage.backends import Backends, StorageUnavailable

    settings = _settings_unchecked(tmp_path)
    with pytest.raises(StorageUnavailable) as exc:
        Backends(settings)
    assert str(exc.value).startswith(f"[storage] password_file: {pw}: ") and fragment in str(exc.value)
    assert SECRET not in str(exc.value)


def _settings_unchecked(tmp_path):
    """The configuration as serve would have it had nobody run the check (a good file swapped after)."""
    good = tmp_path / "pg.pw"
    content = good.read_bytes()
    good.write_bytes(SECRET.encode() + b"\n")
    try:
        s = load(tmp_path / "msc.toml")
    finally:
        good.write_bytes(content)
    return s


def test_the_lease_reads_the_password_file_as_the_storage_does(tmp_path):
    """One reader (msc.config.secrets.read_password): ``[node]``'s lease took ``read_text().splitlines()[0]``
    — an empty first line was the password "", a form feed split the line, the locale chose the encoding."""
    from msc.ha.site import lease_for

    path = _with_storage(tmp_path, STORAGE + '\n[node]\nname = "msc-a"')
    pw = _password_file(tmp_path, SECRET.encode() + b"\x0cmore\r\n")
    s = load(path)
    assert lease_for(s).timeout_s > 0 and PgSettings.from_settings(s).password == SECRET + "\x0cmore"
    pw.write_bytes(b"\n" + SECRET.encode())
    for read in (lambda: lease_for(s), lambda: PgSettings.from_settings(s)):
        with pytest.raises(ValueError, match=r"^\[storage\] password_file: .*pg.pw: the first line \(the password\) is empty"):
            read()


@pytest.mark.parametrize("dsn, fragment", [
    ("postgresql://msc@db1/msc?target_session_attrs=read-only", "target_session_attrs=read-only: msc writes"),
    ("postgresql://msc@db1/msc?target_session_attrs=standby", "target_session_attrs=standby: msc writes"),
    ("postgresql://msc@db1/msc?target_session_attrs=prefer-standby", "needs the primary"),
    ("postgresql://msc@db1,db2/msc?target_session_attrs=standby", "several hosts need target_session_attrs=read-write"),
    ("postgresql://msc@db1/msc?foo=bar", "foo: not a connection parameter msc's client knows"),
    ("postgresql://msc@db1/msc?SSLMODE=require", "SSLMODE: not a connection parameter"),
    ("postgresql://msc@db1/msc?database=msc", "database: not a connection parameter"),
    ("postgresql://msc@db1/msc?sslmode=bogus", "sslmode must be one of disable, allow, prefer, require"),
    ("postgresql://msc@db1/msc?ssl_min_protocol_version=TLSv9", "ssl_min_protocol_version must be one of"),
    ("postgresql://msc@db1/msc ", "has a space"),
    (" postgresql://msc@db1/msc", "has a space"),
    ("postgresql://msc@db1/m sc", "has a space"),
    ("postgresql://msc@db1/msc?service=nosuch", "service: msc's client (asyncpg) does not read a service file"),
    ("postgresql://msc@db1/msc?service=", "service: msc's client"),
])
def test_connection_uris_serve_would_refuse_are_refused_by_the_check(tmp_path, dsn, fragment):
    issues = _issues(tmp_path, f'backend = "postgresql"\ndsn = "{dsn}"')
    assert any(i.path == "storage.dsn" and fragment in i.message for i in issues), issues


@pytest.mark.parametrize("dsn", [
    "postgresql://msc@db1/msc?target_session_attrs=any",
    "postgresql://msc@db1/msc?target_session_attrs=read-write",
    "postgresql://msc@db1/msc?target_session_attrs=primary",
    "postgresql://msc@db1/msc?sslmode=require&application_name=msc-a&sslrootcert=/etc/msc/ca.pem",
    "postgresql://msc@db1/msc?ssl_min_protocol_version=TLSv1.3",
])
def test_what_one_host_may_say(dsn):
    assert dsn_problems(dsn) == []


@pytest.mark.parametrize("query", [f"password={SECRET}", f"PASSWORD={SECRET}", f"pass%77ord={SECRET}",
                                   f"sslpassword={SECRET}"])
def test_the_password_refusal_gives_the_percent_40_hint_only_for_an_at_sign(query):
    assert dsn_problems(f"postgresql://msc@db1/msc?{query}") == [
        "no password in the connection string: give it in a file (storage.password_file, node.lease_password_file) "
        "or the environment (PGPASSWORD)"]
    [problem] = dsn_problems("postgresql://msc@db1/m@sc")
    assert problem.endswith("(an '@' in a database name or parameter is written %40)")


@pytest.mark.parametrize("where", ["passfile", "PGPASSFILE"])
def test_a_libpq_password_file_readable_by_others_is_one_clear_line(tmp_path, monkeypatch, where):
    """asyncpg ignores it with a two-line Python warning, and the login then fails as a wrong
    password (probe hB finding 5): the check and serve name the file and its mode instead."""
    from msc.storage.backends import Backends, StorageUnavailable

    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:msc:{SECRET}\n")
    pgpass.chmod(0o644)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    dsn = "postgresql://msc@db1/msc"
    if where == "passfile":
        dsn += f"?passfile={pgpass}"
    else:
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
    body = f'backend = "postgresql"\ndsn = "{dsn}"'
    issues = _issues(tmp_path, body)
    [issue] = [i for i in issues if i.path == "storage.dsn"]
    assert f"the password file {pgpass}" in issue.message and "mode 0644" in issue.message, issues
    pgpass.chmod(0o600)
    s = load(tmp_path / "msc.toml")
    assert PgSettings.from_settings(s).password is None  # (the client reads it)
    pgpass.chmod(0o640)
    with pytest.raises(StorageUnavailable, match=f"the password file {pgpass} .* mode 0640: .*chmod 600"):
        Backends(s)
    monkeypatch.setenv("PGPASSWORD", "x")  # used instead of any file: nothing to say
    assert Backends(s).postgresql


def test_a_passfile_whose_path_says_password_is_no_password_in_the_uri():
    assert dsn_problems("postgresql://msc@db1/msc?passfile=/etc/msc/password.pgpass") == []
