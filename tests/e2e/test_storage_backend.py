"""``[storage] backend = "postgresql"`` before the switch runs on it (CONFIG.md "Storage"): the
configuration is checked and accepted, and every command that would open the SQLite files
refuses to start (exit 2, one line) instead of writing there while the configuration names
PostgreSQL. Nothing of the journal or the state database is created."""

from __future__ import annotations

import pytest

from tests.conftest import make_config
from tests.e2e.conftest import run

STORAGE = '\n[storage]\nbackend = "postgresql"\ndsn = "postgresql://msc@127.0.0.1:9/msc"\n'


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    path = make_config(tmp_path_factory.mktemp("pg-config"))
    path.write_text(path.read_text() + STORAGE)
    return path


def test_the_configuration_is_valid(cfg):
    r = run("config", "check", "--config", str(cfg))
    assert r.returncode == 0, r.stderr


# Commands that open the journal or the state database, each refused before it touches either.
@pytest.mark.parametrize("argv", [
    ("serve",),
    ("user", "list"),
    ("station", "disable", "ICS1", "--as", "AD0001"),
    ("journal", "verify", "--as", "AD0001"),
    ("report", "availability"),
], ids=lambda a: " ".join(a))
def test_commands_refuse_to_start_rather_than_use_sqlite(cfg, argv):
    before = {p for p in cfg.parent.rglob("*") if p.suffix in (".db", ".hwm")}
    r = run(*argv, "--config", str(cfg), input="x\n", timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert 'backend = "postgresql"' in r.stderr and "do not run on PostgreSQL yet" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert {p for p in cfg.parent.rglob("*") if p.suffix in (".db", ".hwm")} == before
