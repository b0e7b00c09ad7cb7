"""Patroni accepts config/patroni/ (issue 16 item 4): the 3 etcd members started from their files
(data in a temporary directory), then ``patroni --validate-config`` on each node's file, which
also checks that the etcd members answer. Needs Debian's patroni and etcd-server: `make ha-deps`
installs them (they are not part of `make test`); without them this module is skipped.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

DIR = Path(__file__).resolve().parents[2] / "config" / "patroni"
MISSING = [t for t in ("patroni", "etcd", "etcdctl") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (`make ha-deps` installs "
                                                      "Debian's patroni, etcd-server and etcd-client)")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    """The three members, as their files say, with their data in a temporary directory."""
    tmp = tmp_path_factory.mktemp("etcd")
    procs = []
    endpoints = []
    try:
        for i in (1, 2, 3):
            doc = yaml.safe_load((DIR / f"etcd{i}.yml").read_text())
            doc["data-dir"] = str(tmp / f"etcd{i}")
            cfg = tmp / f"etcd{i}.yml"
            cfg.write_text(yaml.safe_dump(doc))
            endpoints.append(doc["advertise-client-urls"])
            procs.append(subprocess.Popen(["etcd", "--config-file", str(cfg)], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=open(tmp / f"etcd{i}.log", "w")))
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run(["etcdctl", f"--endpoints={','.join(endpoints)}", "endpoint", "health"],
                               capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
            if r.returncode == 0:
                break
            for i, p in enumerate(procs, 1):
                assert p.poll() is None, (tmp / f"etcd{i}.log").read_text()
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.1)
        yield endpoints
    finally:
        for p in procs:  # throw-away members: no graceful leave needed
            p.kill()
            p.wait()


@pytest.mark.parametrize("node", ["pg1", "pg2", "pg3"])
def test_patroni_accepts_each_nodes_file(etcd, node):
    r = subprocess.run(["patroni", "--validate-config", str(DIR / f"{node}.yml")], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == ""  # not a single complaint


def test_patroni_would_refuse_a_file_whose_etcd_is_not_there(tmp_path):
    """The check is real: the same file with its etcd members moved away fails validation."""
    doc = yaml.safe_load((DIR / "pg1.yml").read_text())
    doc["etcd3"]["hosts"] = "127.0.0.21:2440,127.0.0.22:2440,127.0.0.23:2440"
    bad = tmp_path / "pg1.yml"
    bad.write_text(yaml.safe_dump(doc))
    r = subprocess.run(["patroni", "--validate-config", str(bad)], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "is not reachable" in r.stdout + r.stderr
