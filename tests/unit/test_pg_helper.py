"""tests/pg.py finds Debian's server binaries (not on PATH) and says why it cannot run."""

from __future__ import annotations

import os

import pytest

from tests import pg as pgmod


def fake_versions(root, versions):
    for v in versions:
        b = root / v / "bin"
        b.mkdir(parents=True)
        (b / "postgres").write_text("#!/bin/sh\n")
    return root


@pytest.mark.parametrize("versions, newest", [
    (["15"], "15"),
    (["13", "15", "16"], "16"),
    (["9.6", "10", "15"], "15"),   # numeric, not lexical: 10 > 9.6
    (["16", "9.6"], "16"),
    (["17", "100"], "100"),
])
def test_the_newest_installed_version_is_taken(tmp_path, monkeypatch, versions, newest):
    monkeypatch.setattr(pgmod, "DEBIAN_ROOT", fake_versions(tmp_path, versions))
    monkeypatch.delenv("MSC_PG_BINDIR", raising=False)
    assert pgmod.find_bindir() == tmp_path / newest / "bin"


def test_a_version_directory_without_a_server_is_not_a_server(tmp_path, monkeypatch):
    """Debian's client package makes /usr/lib/postgresql/<v>/bin with psql but no postgres."""
    (tmp_path / "16" / "bin").mkdir(parents=True)
    (tmp_path / "16" / "bin" / "psql").write_text("")
    fake_versions(tmp_path, ["15"])
    monkeypatch.setattr(pgmod, "DEBIAN_ROOT", tmp_path)
    monkeypatch.delenv("MSC_PG_BINDIR", raising=False)
    assert pgmod.find_bindir() == tmp_path / "15" / "bin"


def test_msc_pg_bindir_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(pgmod, "DEBIAN_ROOT", fake_versions(tmp_path / "debian", ["15"]))
    own = tmp_path / "own"
    own.mkdir()
    monkeypatch.setenv("MSC_PG_BINDIR", str(own))
    assert pgmod.find_bindir() is None  # named, but no postgres in it: not silently another one
    (own / "postgres").write_text("")
    assert pgmod.find_bindir() == own


def test_no_server_anywhere_is_a_stated_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(pgmod, "DEBIAN_ROOT", tmp_path / "nothing")
    monkeypatch.delenv("MSC_PG_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert pgmod.find_bindir() is None
    reason = pgmod.missing_reason()
    assert reason and "make system-deps" in reason


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs another account to run PostgreSQL")
def test_root_runs_the_server_as_an_unprivileged_account():
    account = pgmod._server_user()
    assert account is not None and account.uid != 0 and account.name in ("postgres", "nobody")
