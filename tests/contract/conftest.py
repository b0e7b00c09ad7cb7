"""The storage contract: one suite that every storage backend must pass (issue "One house").

Each test takes a backend fixture and only the typed interfaces of the storage layer:

* ``journal_backend`` — :class:`msc.journal.interfaces.JournalWriter` and
  :class:`~msc.journal.interfaces.JournalReader` (the SQLite backend twice: its writer in a
  worker thread and in a child process);
* ``backend`` — :class:`msc.mnemonics.state.RuntimeState`, :class:`msc.routing.outbox.OutboxBackend`
  and :class:`msc.ops.availability.LedgerBackend`.

A new backend (PostgreSQL) is added by one more class below and one more fixture parameter; the
tests themselves do not change. "Another handle" (``backend.runtime_state()`` twice) stands for
another process: the rules that hold across the switch and the ``msc`` command must hold there.
"""

from __future__ import annotations

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

    def runtime_state(self):
        from msc.mnemonics.state import StateStore

        return StateStore(self.state_db)

    def outbox(self):
        from msc.routing.outbox import OutboxStore

        return OutboxStore(self.state_db)

    def ledger(self):
        from msc.ops.availability import Ledger

        return Ledger(self.state_db)


@pytest.fixture(params=[("sqlite", "thread"), ("sqlite", "process")], ids=lambda p: "-".join(p))
def journal_backend(request, tmp_path):
    kind, writer = request.param
    assert kind == "sqlite"
    return SqliteBackend(tmp_path, writer)


@pytest.fixture(params=["sqlite"])
def backend(request, tmp_path):
    assert request.param == "sqlite"
    return SqliteBackend(tmp_path)


@pytest.fixture(scope="session")
def signing() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
