"""msc.config: strict decoding and validation with file, path and line in every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from msc.config.load import ConfigError, load, locate
from tests.conftest import make_config

DEMO = Path(__file__).resolve().parents[2] / "config" / "msc.toml"


def test_demo_config_is_valid(tmp_path):
    (tmp_path / "msc.toml").write_text(DEMO.read_text())
    s = load(tmp_path / "msc.toml")
    c = s.config
    assert c.switch.name == "ICSO-MSC"
    assert [st.mnemonic for st in c.station] == ["ICS1", "ICS2", "ECC1", "ECP1"]
    assert c.forward[0].from_ == "ECP1"
    assert s.journal_dir == tmp_path / "data" / "journal"


def _bad(tmp_path, old: str, new: str) -> ConfigError:
    path = make_config(tmp_path)
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load(path)
    return exc.value


def _line_of(path: Path, needle: str, occurrence: int = 0) -> int:
    lines = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line]
    return lines[occurrence]


def test_type_error_names_file_path_and_line(tmp_path):
    err = _bad(tmp_path, 'mnemonic = "ICS2"', "mnemonic = 12")
    (issue,) = err.issues
    assert issue.file.endswith("msc.toml")
    assert issue.path == "station[1].mnemonic"
    assert issue.line == _line_of(tmp_path / "msc.toml", "mnemonic = 12")
    assert "Expected `str`" in issue.message


def test_unknown_key_is_an_error_with_its_line(tmp_path):
    err = _bad(tmp_path, 'mnemonic = "ICS2"', 'mnemonic = "ICS2"\nbogus = 1')
    (issue,) = err.issues
    assert "unknown field `bogus`" in issue.message
    assert issue.line == _line_of(tmp_path / "msc.toml", "bogus = 1")


def test_not_toml(tmp_path):
    err = _bad(tmp_path, "[switch]", "[switch")
    assert "not valid TOML" in err.issues[0].message


@pytest.mark.parametrize("old,new,path,fragment", [
    ('mnemonic = "ICS2"', 'mnemonic = "ic2"', "station[1].mnemonic", "not a mnemonic"),
    ('ori = "CA0130000"\nname', 'ori = "XX"\nname', "agency[0].ori", "not an ORI"),
    ('upstream = "clets"\ncategory = "cori"', 'upstream = "nope"\ncategory = "cori"', "route[1].upstream", "no [[upstream]]"),
    ('serves = ["CA0130000"]', 'serves = ["CA9999999"]', "station[0].serves[0]", "no [[agency]]"),
    ('addresses = ["127.0.0.1"]', 'addresses = ["not-an-ip"]', "station[0].addresses[0]", "not an IP"),
    ('authorizations = ["cjis", "cori", "dmv", "admin", "entry"]', 'authorizations = ["cjis", "nuclear"]',
     "station[0].authorizations[1]", "unknown category"),
    ('members = ["ICS1", "ECP1"]', 'members = ["ICS1", "NOPE"]', "group[0].members[1]", "no [[station]]"),
    ('unsolicited_to = "ECP1"', 'unsolicited_to = "NOPE"', "pool[0].unsolicited_to", "no [[station]]"),
    ('duty_station = "ICS1"', 'duty_station = "ECC1"', "agency[0].duty_station", "terminal or printer"),
    ('synchronous = "full"', 'synchronous = "full"\nretention_days = 365', "journal.retention_days", ">= 1096"),
    ('mke = ["QH", "QR"]', 'mke = ["QH", "QW"]', "route[1].mke[1]", "already routed"),
    ('mke = ["QH", "QR"]', 'mke = ["QH", "LOGON"]', "route[1].mke[1]", "handled by msc"),
])
def test_semantic_errors(tmp_path, old, new, path, fragment):
    err = _bad(tmp_path, old, new)
    matching = [i for i in err.issues if i.path == path]
    assert matching, [str(i) for i in err.issues]
    assert fragment in matching[0].message
    assert matching[0].line is not None


def test_every_error_is_listed_not_just_the_first(tmp_path):
    path = make_config(tmp_path)
    text = path.read_text().replace('mnemonic = "ICS2"', 'mnemonic = "i2"').replace(
        'members = ["ICS1", "ECP1"]', 'members = ["NOPE"]')
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(path)
    paths = {i.path for i in exc.value.issues}
    assert {"station[1].mnemonic", "group[0].members[0]"} <= paths


def test_users_file_errors_name_the_users_file(tmp_path):
    path = make_config(tmp_path)
    users = tmp_path / "users.toml"
    users.write_text(users.read_text().replace('role = "ltfa"', 'role = "superuser"'))
    with pytest.raises(ConfigError) as exc:
        load(path)
    (issue,) = exc.value.issues
    assert issue.file.endswith("users.toml")
    assert issue.path.startswith("user[") and issue.path.endswith("].role")


def test_plaintext_password_is_refused(tmp_path):
    path = make_config(tmp_path)
    users = tmp_path / "users.toml"
    text = users.read_text()
    start = text.index('password = "') + len('password = "')
    users.write_text(text[:start] + "hunter22" + text[text.index('"', start):])
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert "never plaintext" in exc.value.issues[0].message


def test_locate_handles_tables_and_arrays():
    text = '[switch]\nname = "x"\n\n[[station]]\nmnemonic = "A"\n[[station]]\nmnemonic = "B"\n'
    assert locate(text, ["switch", "name"]) == 2
    assert locate(text, ["station", 1, "mnemonic"]) == 7
    assert locate(text, ["station", 5, "mnemonic"]) is None


@pytest.mark.parametrize("new,path,fragment", [
    ("ack_timeout_s = 61", "upstream[0].ack_timeout_s", "<= 2 x heartbeat_s"),
    ("ack_timeout_s = 0", "upstream[0].ack_timeout_s", "must be > 0"),
    ("resend_wait_s = -1", "upstream[0].resend_wait_s", "must be > 0"),
])
def test_upstream_link_health_settings_are_checked(tmp_path, new, path, fragment):
    err = _bad(tmp_path, "max_in_flight = 1000", f"max_in_flight = 1000\n{new}")
    matching = [i for i in err.issues if i.path == path]
    assert matching and fragment in matching[0].message, [str(i) for i in err.issues]


@pytest.mark.parametrize("new,path,fragment", [
    ("shed_wait_s = -0.1", "switch.shed_wait_s", "must be 0..60"),
    ("shed_wait_s = 61", "switch.shed_wait_s", "must be 0..60"),
    ("shed_wait_s = nan", "switch.shed_wait_s", "must be 0..60"),
    ("shed_wait_s = inf", "switch.shed_wait_s", "must be 0..60"),
    ("shed_interval_s = -1", "switch.shed_interval_s", "must be 0..60"),
    ("shed_interval_s = 3600", "switch.shed_interval_s", "must be 0..60"),
])
def test_overload_settings_are_checked(tmp_path, new, path, fragment):
    """PROTOCOL.md §5 "Overload": the shedding target and interval, in seconds."""
    err = _bad(tmp_path, "shed_wait_s = 0\n", f"{new}\n" if new.startswith("shed_wait_s") else f"shed_wait_s = 0\n{new}\n")
    matching = [i for i in err.issues if i.path == path]
    assert matching and fragment in matching[0].message, [str(i) for i in err.issues]


@pytest.mark.parametrize("keys,wait,interval", [("", 0.2, 0.5), ("shed_wait_s = 0", 0.0, 0.5),
                                                ("shed_wait_s = 0.05\nshed_interval_s = 0", 0.05, 0.0)])
def test_overload_settings_defaults_and_off(tmp_path, keys, wait, interval):
    path = make_config(tmp_path)
    path.write_text(path.read_text().replace("shed_wait_s = 0\n", keys + "\n", 1))  # the tests' own off, replaced
    sw = load(path).config.switch
    assert (sw.shed_wait_s, sw.shed_interval_s) == (wait, interval)


def test_ack_timeout_defaults_to_10_s_within_the_dead_link_bound(tmp_path):
    s = load(make_config(tmp_path))
    assert s.config.upstream[0].ack_timeout == 10 and s.config.upstream[0].resend_wait_s == 30
    s = load(make_config(tmp_path / "fast", up_heartbeat_s=1))
    assert s.config.upstream[0].ack_timeout == 2  # at most 2 x heartbeat_s


@pytest.mark.parametrize("new,path,fragment", [
    ("proxy_protocol = true", "listener[0].trusted_proxies", "needs the relays' addresses"),
    ('trusted_proxies = ["127.0.0.1"]', "listener[0].trusted_proxies", "only with proxy_protocol"),
    ('proxy_protocol = true\ntrusted_proxies = ["127.0.0.1", "relay.example"]', "listener[0].trusted_proxies[1]",
     "not an IP address or CIDR"),
    ('proxy_protocol = true\ntrusted_proxies = ["10.0.0.0/33"]', "listener[0].trusted_proxies[0]",
     "not an IP address or CIDR"),
    ("proxy_protocol = 1", "listener[0].proxy_protocol", "Expected `bool`"),
])
def test_proxy_listener_settings_are_checked(tmp_path, new, path, fragment):
    """CONFIG.md "Listeners behind a relay": a PROXY listener trusts only the relays it names."""
    err = _bad(tmp_path, "rate_limit = 200", f"rate_limit = 200\n{new}")
    matching = [i for i in err.issues if i.path == path]
    assert matching, [str(i) for i in err.issues]
    assert fragment in matching[0].message


def test_proxy_listener_with_trusted_relays_is_valid(tmp_path):
    path = make_config(tmp_path, listener_extra='proxy_protocol = true\ntrusted_proxies = ["127.0.0.1", "10.1.0.0/16", "::1"]')
    assert load(path).config.listener[0].trusted_proxies == ("127.0.0.1", "10.1.0.0/16", "::1")


WEB_OK = """
[[listener]]
name = "web"
bind = "127.0.0.1:7410"
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]

[web]
bind = "127.0.0.1:8443"
tls = { cert = "tls/web.crt", key = "tls/web.key" }
listener = "web"
header = "ECMDT"
"""


def _web_config(tmp_path, web: str):
    (tmp_path / "tls").mkdir(parents=True, exist_ok=True)
    for f in ("web.crt", "web.key"):
        (tmp_path / "tls" / f).write_text("x")
    path = make_config(tmp_path)
    path.write_text(path.read_text() + web)
    return path


def test_web_section_valid(tmp_path):
    assert load(_web_config(tmp_path, WEB_OK)).config.web.header == "ECMDT"


@pytest.mark.parametrize("old,new,path,fragment", [
    ('tls = { cert = "tls/web.crt", key = "tls/web.key" }\n', "", "web.tls", "HTTPS only"),
    ('key = "tls/web.key"', 'key = "tls/missing.key"', "web.tls.key", "file not found"),
    ('listener = "web"', 'listener = "nope"', "web.listener", "no [[listener]]"),
    ("proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n", "", "web.listener", "needs proxy_protocol"),
    ('header = "ECMDT"', 'header = "ECC1"', "web.header", "neither a [[pool]] nor a terminal"),
    ('bind = "127.0.0.1:8443"', 'bind = "127.0.0.1:7410"', "web.bind", "the same address"),
    ('header = "ECMDT"', 'header = "ECMDT"\nlogon_attempts_per_minute = 0', "web.logon_attempts_per_minute", "1..1000"),
    ('bind = "127.0.0.1:8443"', 'bind = "somewhere"', "web.bind", ""),
])
def test_web_section_errors(tmp_path, old, new, path, fragment):
    """docs/WEB.md: HTTPS only, and the listener it relays to takes PROXY headers."""
    with pytest.raises(ConfigError) as exc:
        load(_web_config(tmp_path, WEB_OK.replace(old, new, 1)))
    matching = [i for i in exc.value.issues if i.path == path]
    assert matching, [str(i) for i in exc.value.issues]
    assert fragment in matching[0].message


# --- [node]: one node of an active/standby pair (OPERATIONS.md "Running two nodes") ------------

NODE_OK = """
[node]
name = "msc-a"
lease_ttl_s = 5
lease_dsn = "postgresql://msc@db1:5432,db2:5432/msc?target_session_attrs=read-write"
lease_password_file = "pg.pw"
"""


def _node_config(tmp_path, node: str, *, pw_mode: int = 0o600):
    path = make_config(tmp_path)
    pw = tmp_path / "pg.pw"
    pw.write_text("secret\n")
    pw.chmod(pw_mode)
    path.write_text(path.read_text() + node)
    return path


def test_node_section_valid_and_absent_by_default(tmp_path):
    node = load(_node_config(tmp_path, NODE_OK)).config.node
    assert node is not None and (node.name, node.lease_ttl_s) == ("msc-a", 5)
    assert load(make_config(tmp_path / "single")).config.node is None  # a single node: always active
    minimal = load(_node_config(tmp_path / "m", '\n[node]\nname = "b"\nlease_dsn = "postgresql://msc@db/msc"\n'))
    assert minimal.config.node.lease_ttl_s == 5 and minimal.config.node.lease_password_file is None


@pytest.mark.parametrize("old,new,path,fragment", [
    ('name = "msc-a"', 'name = ""', "node.name", "1..63 characters"),
    ('name = "msc-a"', 'name = "-a"', "node.name", "letters, digits"),
    ('name = "msc-a"', 'name = "msc a"', "node.name", "letters, digits"),
    ('name = "msc-a"', 'name = "msc/a"', "node.name", "letters, digits"),
    ('name = "msc-a"', f'name = "{"a" * 64}"', "node.name", "1..63"),
    ('name = "msc-a"\n', "", "node", "missing required field `name`"),
    ("lease_ttl_s = 5", "lease_ttl_s = 0", "node.lease_ttl_s", "1..600"),
    ("lease_ttl_s = 5", "lease_ttl_s = 0.5", "node.lease_ttl_s", "1..600"),
    ("lease_ttl_s = 5", "lease_ttl_s = 601", "node.lease_ttl_s", "1..600"),
    ("lease_ttl_s = 5", "lease_ttl_s = -5", "node.lease_ttl_s", "1..600"),
    ("lease_ttl_s = 5", 'lease_ttl_s = "5"', "node.lease_ttl_s", "Expected `float`"),
    ('lease_dsn = "postgresql://msc@db1:5432,db2:5432/msc?target_session_attrs=read-write"\n', "", "node.lease_dsn",
     "give the PostgreSQL database"),
    ("postgresql://msc@db1", "postgresql://msc:hunter2@db1", "node.lease_dsn", "no password"),
    ("target_session_attrs=read-write", "password=hunter2", "node.lease_dsn", "no password"),
    ("target_session_attrs=read-write", "target_session_attrs=read-write&password=", "node.lease_dsn", "no password"),
    ('"postgresql://msc@db1:5432,db2:5432/msc?target_session_attrs=read-write"', '"host=db1 dbname=msc user=msc"',
     "node.lease_dsn", "libpq URI"),
    ("postgresql://msc@db1:5432,db2:5432/msc", "mysql://msc@db1/msc", "node.lease_dsn", "libpq URI"),
    ("postgresql://msc@db1:5432,db2:5432/msc", "postgresql:///msc", "node.lease_dsn", "name the server"),
    ("postgresql://msc@db1:5432,db2:5432/msc", "postgresql://msc@db1:x/msc", "node.lease_dsn", "host[:port]"),
    ("target_session_attrs=read-write", "sslmode=require", "node.lease_dsn", "target_session_attrs=read-write"),
    ("target_session_attrs=read-write", "target_session_attrs=read-write&connect_timeout=3", "node.lease_dsn",
     "connect_timeout: a libpq setting msc's client (asyncpg) does not know"),
    ("target_session_attrs=read-write", "target_session_attrs=any", "node.lease_dsn", "target_session_attrs"),
    ("postgresql://msc@db1:5432,db2:5432/msc", "postgresql://msc@db 1/msc", "node.lease_dsn", "host[:port]"),
    ("postgresql://msc@db1:5432,db2:5432/msc", "postgresql://msc@db1,,db2/msc", "node.lease_dsn", "a host is empty"),
    ("postgresql://msc@db1:5432,db2:5432/msc", "postgresql://msc@[::1/msc", "node.lease_dsn", "well-formed connection URI"),
    ("postgresql://msc@db1:5432,db2:5432/msc", "postgresql://:/@[::1]/msc", "node.lease_dsn", "no password"),
    ("postgresql://msc@db1", "postgresql://msc:p@ss@db1", "node.lease_dsn", "no password"),
    ('lease_password_file = "pg.pw"', 'lease_password_file = "missing.pw"', "node.lease_password_file",
     "file not found"),
    ('lease_ttl_s = 5', 'lease_ttl_s = 5\nlease_password = "x"', "node", "lease_password"),  # never in the TOML
])
def test_node_section_errors(tmp_path, old, new, path, fragment):
    assert old in NODE_OK
    with pytest.raises(ConfigError) as exc:
        load(_node_config(tmp_path, NODE_OK.replace(old, new, 1)))
    matching = [i for i in exc.value.issues if i.path.startswith(path)]
    assert matching, [str(i) for i in exc.value.issues]
    assert fragment in matching[0].message
    assert "hunter2" not in " ".join(str(i) for i in exc.value.issues)  # a password is never echoed


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_node_password_file_must_be_private(tmp_path, mode):
    with pytest.raises(ConfigError) as exc:
        load(_node_config(tmp_path, NODE_OK, pw_mode=mode))
    assert [i.path for i in exc.value.issues] == ["node.lease_password_file"]
    assert "chmod 600" in exc.value.issues[0].message


@pytest.mark.parametrize("dsn", [
    "postgresql://msc@db1/msc",
    "postgres://msc@db1:5432/msc",
    "postgresql://msc@[::1]:5432/msc",
    "postgresql://msc@db1:5432,db2:5432,db3/msc?target_session_attrs=read-write&application_name=msc-a",
    "postgresql:///msc?host=/var/run/postgresql",
    "postgresql://db1/msc?passfile=/etc/msc/pgpass",
])
def test_node_lease_dsn_accepted_forms(tmp_path, dsn):
    node = NODE_OK.replace("postgresql://msc@db1:5432,db2:5432/msc?target_session_attrs=read-write", dsn)
    assert load(_node_config(tmp_path, node)).config.node.lease_dsn == dsn
