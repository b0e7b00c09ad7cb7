"""The one storage factory (msc.storage.backends): what ``[storage]`` opens, and what an
operator's message says about where it is (never user info, a password or the query)."""

from __future__ import annotations

import pytest

from msc.config.load import load
from msc.storage.backends import Backends
from msc.storage.postgres import safe_dsn
from tests.conftest import make_config


@pytest.fixture
def sqlite_cfg(tmp_path):
    return load(make_config(tmp_path))


def test_sqlite_opens_the_files_of_the_data_directory(sqlite_cfg):
    from msc.mnemonics.state import StateStore
    from msc.ops.availability import Ledger
    from msc.routing.outbox import OutboxStore

    b = Backends(sqlite_cfg)
    assert not b.postgresql and b.journal_storage() is None
    for handle, kind in ((b.runtime_state(), StateStore), (b.outbox(), OutboxStore), (b.ledger(), Ledger)):
        assert isinstance(handle, kind)
        handle.close()
    assert sqlite_cfg.state_db.exists()
    with b.journal_source() as src:
        assert src == sqlite_cfg.journal_dir
    assert b.journal().dir == sqlite_cfg.journal_dir and b.journal().storage is None


def test_postgresql_reads_its_password_file_when_built(tmp_path):
    cfg = make_config(tmp_path)
    secret = tmp_path / "pg.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    cfg.write_text(cfg.read_text() + '\n[storage]\nbackend = "postgresql"\n'
                   'dsn = "postgresql://msc@127.0.0.1:9/msc"\npassword_file = "pg.password"\n')
    settings = load(cfg)
    b = Backends(settings)
    assert b.postgresql and "s3cret" not in b.describe() and "127.0.0.1:9/msc" in b.describe()
    secret.unlink()  # gone after the configuration was checked: building the backends fails
    with pytest.raises(OSError):
        Backends(settings)


# (dsn, what an operator's message shows)
SAFE = [
    ("postgresql://msc@db1:5432/msc", "db1:5432/msc"),
    ("postgresql://msc@db1:5432,db2:5433/msc?target_session_attrs=read-write", "db1:5432,db2:5433/msc"),
    ("postgres://db1/msc", "db1/msc"),
    ("postgresql://msc:secret@db1/msc", "db1/msc"),  # (refused by the configuration check anyway)
    ("postgresql://msc@[::1]:5432/msc?passfile=/etc/msc/pgpass", "[::1]:5432/msc"),
    ("postgresql://msc@db1/msc?password=secret&sslmode=verify-full", "db1/msc"),
    ("postgresql://u%40x@db1/msc", "db1/msc"),
]


@pytest.mark.parametrize(("dsn", "shown"), SAFE)
def test_safe_dsn_shows_servers_and_database_only(dsn, shown):
    out = safe_dsn(dsn)
    assert out == shown
    assert "secret" not in out and "passfile" not in out and "msc@" not in out
