"""config/patroni/: the example Patroni + etcd cluster (issue 16 item 4) — 3 etcd members and 3
PostgreSQL nodes under Patroni on loopback, synchronous replication. The files must parse, agree
with each other (every node finds every etcd member, no two listeners share an address), keep
the settings that make a failover lose nothing acknowledged, and hold no password.

`tests/integration/test_patroni_validate.py` has Patroni itself check them against running etcd.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DIR = Path(__file__).resolve().parents[2] / "config" / "patroni"
NODES = ("pg1", "pg2", "pg3")
ETCD = ("etcd1", "etcd2", "etcd3")


def load(name: str) -> dict:
    return yaml.safe_load((DIR / f"{name}.yml").read_text())


@pytest.mark.parametrize("name", NODES + ETCD)
def test_every_file_parses_to_a_mapping(name):
    doc = load(name)
    assert isinstance(doc, dict) and doc["name"] == name


def hostport(value: str) -> tuple[str, int]:
    host, _, port = value.removeprefix("http://").rpartition(":")
    return host, int(port)


def test_each_node_finds_every_etcd_member_by_its_client_address():
    clients = {hostport(load(e)["advertise-client-urls"]) for e in ETCD}
    assert len(clients) == 3
    for n in NODES:
        hosts = {hostport(h) for h in load(n)["etcd3"]["hosts"].split(",")}
        assert hosts == clients, n


def test_the_etcd_members_form_one_cluster():
    docs = [load(e) for e in ETCD]
    peers = {f"{d['name']}={d['initial-advertise-peer-urls']}" for d in docs}
    for d in docs:
        assert set(d["initial-cluster"].split(",")) == peers
        assert d["initial-cluster-token"] == docs[0]["initial-cluster-token"]
        assert d["listen-client-urls"] == d["advertise-client-urls"]
        assert d["listen-peer-urls"] == d["initial-advertise-peer-urls"]


def test_no_two_listeners_share_an_address_and_all_are_on_loopback():
    seen: list[tuple[str, int]] = []
    for e in ETCD:
        d = load(e)
        seen += [hostport(d["listen-client-urls"]), hostport(d["listen-peer-urls"])]
    for n in NODES:
        d = load(n)
        assert d["restapi"]["listen"] == d["restapi"]["connect_address"]
        assert d["postgresql"]["listen"] == d["postgresql"]["connect_address"]
        seen += [hostport(d["restapi"]["listen"]), hostport(d["postgresql"]["listen"])]
    assert len(seen) == len(set(seen)) == 12
    assert all(h.startswith("127.") for h, _ in seen)
    # Patroni refuses 127.0.0.1 as a connect address (the others could not reach it): 127/8 aliases
    assert not any(h == "127.0.0.1" for h, _ in seen)


def test_one_cluster_whose_failover_loses_nothing_acknowledged():
    docs = [load(n) for n in NODES]
    assert {d["scope"] for d in docs} == {"msc"} and len({d["namespace"] for d in docs}) == 1
    dirs = [d["postgresql"]["data_dir"] for d in docs]
    assert len(set(dirs)) == 3
    for d in docs:
        dcs = d["bootstrap"]["dcs"]
        assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is True
        assert dcs["synchronous_node_count"] >= 1 and dcs["maximum_lag_on_failover"] == 0
        params = dcs["postgresql"]["parameters"]
        assert params["synchronous_commit"] == "on" and params["wal_log_hints"] == "on"
        assert dcs["postgresql"]["use_pg_rewind"] is True
        assert dcs == docs[0]["bootstrap"]["dcs"]  # whichever node bootstraps, the same settings
        assert d["bootstrap"]["pg_hba"] == d["postgresql"]["pg_hba"]
        # replication and client connections need a password (scram), never trust
        assert all("trust" not in rule and "md5" not in rule for rule in d["postgresql"]["pg_hba"])


@pytest.mark.parametrize("name", NODES + ETCD)
def test_no_password_in_the_files(name):
    text = (DIR / f"{name}.yml").read_text()
    doc = load(name)

    def walk(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if str(k) != "password_encryption":  # a server setting (scram-sha-256), not a secret
                    assert "password" not in str(k).lower(), f"{name}: {path}/{k}"
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for v in node:
                walk(v, path)

    walk(doc)
    for user in doc.get("postgresql", {}).get("authentication", {}).values():
        assert set(user) == {"username"}
    assert not re.search(r"postgres(ql)?://[^/\s]*:[^@\s]*@", text)  # no user:password@ in a URL


@pytest.mark.parametrize("name", ETCD)
def test_each_etcd_member_serves_the_json_gateway_patroni_speaks(name):
    """etcd 3.4 reading a config file leaves enable-grpc-gateway off (it is on only as a command-line
    default): Patroni's etcd3 client then gets 404 on /v3/… and waits on etcd forever — found when
    bench/ha_soak.py first started the example cluster."""
    assert load(name)["enable-grpc-gateway"] is True


def test_the_bench_measures_postgresql_with_the_wal_sizing_the_example_recommends():
    """bench/ (tests/pg.py, durable clusters) must run PostgreSQL as docs/ tell an agency to:
    the example's WAL sizing is the one the benchmarks' clusters get (OPERATIONS.md)."""
    from tests import pg

    for n in NODES:
        params = load(n)["bootstrap"]["dcs"]["postgresql"]["parameters"]
        for key, value in pg.DURABLE_SETTINGS.items():
            assert params[key] == value, (n, key)
