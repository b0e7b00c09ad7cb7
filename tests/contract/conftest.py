"""The storage contract: one suite that every storage backend must pass (issue "One house").

Each test takes a backend fixture and only the typed interfaces of the storage layer:

* ``journal_backend`` — :class:`msc.journal.interfaces.JournalWriter` and
  :class:`~msc.journal.interfaces.JournalReader` (the SQLite backend twice: its writer in a
  worker thread and in a child process);
* ``backend`` — :class:`msc.mnemonics.state.RuntimeState`, :class:`msc.routing.outbox.OutboxBackend`
  and :class:`msc.ops.availability.LedgerBackend`.

Each backend is one class below and one fixture parameter (``sqlite-…``, ``postgresql``); the
tests themselves do not change. PostgreSQL: one throw-away cluster per session (tests/pg.py,
``initdb`` in a temporary directory, run as an unprivileged user under root) and a new database
per test; the password reaches msc as ``[storage] password_file`` would give it. Where PostgreSQL
is not installed its parameters skip and say why. "Another handle" (``backend.runtime_state()`` twice) stands for
another process: the rules that hold across the switch and the ``msc`` command must hold there.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass
class SqliteBackend:
    """SQLite: a journal directory of monthly files, and ``state.db`` for everything else."""

    root: Path
    writer_kind: str = "thread"

    @property
    def state_db(self) -> Path:
        return self.root / "data" / "state.db"

    def journal_writer(self, signing: Ed25519PrivateKey):
        directory, mark = self.root / "journal", self.root / "journal.hwm"
        if self.writer_kind == "process":
            from msc.journal.writerproc import WriterProcess

            seed = signing.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
            return WriterProcess(directory, "full", seed, mark)
        from msc.journal.journal import ThreadWriter

        return ThreadWriter(directory, "full", signing, mark)

    def journal_reader(self):
        from msc.journal.reader import Reader

        return Reader(self.root / "journal")

    def index(self) -> None:
        """Build the search indexes now (the daemon's indexer does it in batches, behind)."""
        from msc.journal.indexer import Indexer

        assert Indexer(self.root / "journal").run_once() == 9  # every record so far

    def tamper(self, how: str, seq: int) -> None:
        """Alter the committed journal behind the writer's back (see :data:`TAMPER`)."""
        import sqlite3

        from msc.journal.reader import Reader

        reader = Reader(self.root / "journal")
        try:
            path = reader.conn(reader.find_period(seq)).execute("PRAGMA database_list").fetchone()[2]
        finally:
            reader.close()
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("DROP TRIGGER records_append_only_u")
            conn.execute("DROP TRIGGER records_append_only_d")
            for sql, args in TAMPER[how](seq, "records", "?"):
                conn.execute(sql, args)
        finally:
            conn.close()

    def runtime_state(self):
        from msc.mnemonics.state import StateStore

        return StateStore(self.state_db)

    def outbox(self):
        from msc.routing.outbox import OutboxStore

        return OutboxStore(self.state_db)

    def ledger(self):
        from msc.ops.availability import Ledger

        return Ledger(self.state_db)

    def keyring(self, keys_dir: Path, master: Path):
        """A key ring handle (another process on the same machine: the same file)."""
        from msc.keyring import KeyRing

        return KeyRing(self.root / "data" / "keys", master)


@dataclass
class PgBackend:
    """PostgreSQL (msc.storage): one database holds the journal and everything else."""

    settings: object  # msc.storage.postgres.PgSettings

    def journal_writer(self, signing: Ed25519PrivateKey, fence=None):
        from msc.storage.pgjournal import PgWriter

        return PgWriter(self.settings, signing.sign, fence=fence)

    def journal_reader(self):
        from msc.storage.pgjournal import PgReader

        return PgReader(self.settings)

    def tamper(self, how: str, seq: int) -> None:
        """Alter the committed journal behind the writer's back (see :data:`TAMPER`), as the
        database's owner could: the append-only triggers switched off for the session."""
        from msc.storage.postgres import Blocking

        statements = TAMPER[how](seq, "journal_records", "$")

        async def go():
            conn = await self.settings.connect()
            try:
                await conn.execute("SET session_replication_role = replica")  # user triggers off
                for sql, args in statements:
                    await conn.execute(sql, *args)
            finally:
                await conn.close()

        runner = Blocking("tamper")  # a loop of its own: the test's loop is running
        try:
            runner.run(go())
        finally:
            runner.close()

    def index(self) -> None:
        """PostgreSQL keeps its indexes current at every commit: nothing to do."""

    def cut_connections(self) -> int:
        """Terminate every other session on the test's database (a network cut, a server
        restart, a failover): what the clients see is their connection gone."""
        from msc.storage.postgres import Blocking

        async def go():
            conn = await self.settings.connect()
            try:
                return len(await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            finally:
                await conn.close()

        runner = Blocking("cut")
        try:
            return runner.run(go())
        finally:
            runner.close()

    def runtime_state(self):
        from msc.storage.pgstate import PgRuntimeState

        return PgRuntimeState(self.settings)

    def outbox(self):
        from msc.storage.pgstate import PgOutbox

        return PgOutbox(self.settings)

    def ledger(self):
        from msc.storage.pgstate import PgLedger

        return PgLedger(self.settings)

    def keyring(self, keys_dir: Path, master: Path):
        """A key ring handle of a node whose own directory is ``keys_dir`` (two nodes: two
        directories, one database)."""
        from msc.keyring import KeyRing
        from msc.storage.pgkeyring import PgKeyStore

        return KeyRing(keys_dir, master, PgKeyStore(self.settings))

    def sql(self, query: str, *args):
        """Rows of one statement on the test's database (as its owner)."""
        from msc.storage.postgres import Blocking

        async def go():
            conn = await self.settings.connect()
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        runner = Blocking("sql")
        try:
            return runner.run(go())
        finally:
            runner.close()


def _tamper_statements(how: str, seq: int, table: str, mark: str) -> list[tuple[str, tuple]]:
    """SQL (both dialects: ``?`` or ``$n`` parameters) that alters record ``seq``."""
    def p(n: int) -> str:
        return "?" if mark == "?" else f"${n}"

    if how == "relabel":
        return [(f"UPDATE {table} SET mnemonic = 'T9' WHERE seq = {p(1)}", (seq,))]
    if how == "flip-a-byte":  # the last byte of the sealed bytes (in the AES-GCM tag) changed
        if mark == "?":
            return [(f"UPDATE {table} SET blob = CAST(substr(blob, 1, length(blob) - 1) || "
                     "CASE WHEN substr(blob, -1) = X'00' THEN X'01' ELSE X'00' END AS BLOB) WHERE seq = ?", (seq,))]
        return [(f"UPDATE {table} SET blob = set_byte(blob, length(blob) - 1, "
                 f"get_byte(blob, length(blob) - 1) # 1) WHERE seq = $1", (seq,))]
    if how == "blob-as-text":  # SQLite stores any type in any column; bytea holds only bytes
        if mark != "?":
            pytest.skip("a bytea column cannot hold text")
        return [(f"UPDATE {table} SET blob = CAST(blob AS TEXT) WHERE seq = ?", (seq,))]
    if how == "delete":
        return [(f"DELETE FROM {table} WHERE seq = {p(1)}", (seq,))]
    if how == "swap-blobs":
        return [(f"UPDATE {table} SET blob = (SELECT blob FROM {table} WHERE seq = {p(1)}), "
                 f"leaf = (SELECT leaf FROM {table} WHERE seq = {p(2)}) WHERE seq = {p(3)}", (seq + 1, seq + 1, seq))]
    if how == "delete-tail":
        return [(f"DELETE FROM {table} WHERE seq >= {p(1)}", (seq,))]
    raise ValueError(how)


TAMPER = {how: (lambda seq, table, mark, how=how: _tamper_statements(how, seq, table, mark))
          for how in ("relabel", "flip-a-byte", "blob-as-text", "delete", "swap-blobs", "delete-tail")}


@pytest.fixture(scope="session")
def pg_cluster(pg_server):
    """The session's PostgreSQL cluster (tests/conftest.py ``pg_server``; each test gets a database
    of its own, ``contract_…``)."""
    return pg_server


_databases = itertools.count(1)


def pg_backend(request, tmp_path: Path) -> PgBackend:
    """A database of its own for this test on the session's cluster, dropped after it (so the
    cluster stays small: a database is a copy of template1)."""
    from msc.config.secrets import read_password
    from msc.storage.postgres import PgSettings

    cluster = request.getfixturevalue("pg_cluster")
    name = f"contract_{os.getpid()}_{next(_databases)}"
    cluster.create_database(name)
    request.addfinalizer(lambda: cluster.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    secret = tmp_path / "pg.password"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cluster.password + "\n")
    return PgBackend(PgSettings(f"postgresql://postgres@127.0.0.1:{cluster.port}/{name}", read_password(secret)))


@pytest.fixture(params=[("sqlite", "thread"), ("sqlite", "process"), ("postgresql",)], ids=lambda p: "-".join(p))
def journal_backend(request, tmp_path):
    if request.param[0] == "postgresql":
        return pg_backend(request, tmp_path)
    return SqliteBackend(tmp_path, request.param[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    if request.param == "postgresql":
        return pg_backend(request, tmp_path)
    return SqliteBackend(tmp_path)


@pytest.fixture(scope="session")
def signing() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
