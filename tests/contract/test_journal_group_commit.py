"""The journal itself (msc.journal.journal.Journal: sealing, group commit, sequence numbers,
checkpoints, the start-up self-check) on every backend: the SQLite directory with its writer in
a thread or a child process, and PostgreSQL through ``Journal(…, storage=PgStorage(…))``. Many
appends at once land as few commits of many records, numbered without a gap; a new Journal on
the same storage passes its self-check and continues; the result verifies."""

from __future__ import annotations

import asyncio

import pytest

from msc.journal.journal import Journal
from msc.journal.records import Entry
from msc.journal.verify import verify
from msc.keyring import KeyRing
from tests.contract.conftest import PgBackend

NAME = "TEST-MSC"


@pytest.fixture
def keyring(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "master.key")
    ring.init()
    return ring


def journal_on(backend, keyring, tmp_path, **kw) -> Journal:
    """The Journal on ``backend`` (``kw``: Journal's other arguments, e.g. ``clock``)."""
    if isinstance(backend, PgBackend):
        from msc.storage.pgjournal import PgStorage

        # the directory is not used for records: no file may appear there
        return Journal(tmp_path / "not-used", keyring, name=NAME, storage=PgStorage(backend.settings), **kw)
    return Journal(backend.root / "journal", keyring, name=NAME, writer=backend.writer_kind, **kw)


def entry(i: int) -> Entry:
    return Entry(kind="RECEIVED", direction="in", peer="ICS1", mnemonic="ICS1", user="TS0001", ori="CA0130000",
                 mke="QW", txn=f"X{i}", text=f"QW.CA0130000.NAM/DOE,JOHN {i}.DOB/19800101")


async def test_group_commit_numbering_restart_and_verification_on_every_backend(journal_backend, keyring, tmp_path):
    j = journal_on(journal_backend, keyring, tmp_path)
    await j.open()
    commits: list[int] = []
    inner = j.writer.commit

    async def counted(rows, poke_indexer=False):
        commits.append(len(rows))
        await inner(rows, poke_indexer)

    j.writer.commit = counted  # the Journal's public writer, observed (tests/faults.py does the same)
    seqs = await asyncio.gather(*(j.append(entry(i)) for i in range(300)))
    flat = sorted(s for group in seqs for s in group)
    assert flat == list(range(1, 301))  # every append acknowledged once, no gap
    assert sum(commits) == 300 and len(commits) < 300 and max(commits) > 1  # many records per commit
    await j.checkpoint()
    texts = await j.texts([1, 150, 300, 999])
    assert texts == {1: entry(0).text, 150: entry(149).text, 300: entry(299).text}
    await j.close()

    again = journal_on(journal_backend, keyring, tmp_path)  # a restart: the self-check passes, numbering continues
    await again.open()
    assert again.selfcheck is not None and again.selfcheck.ok, again.selfcheck
    assert await again.append(entry(300)) == [again.opened_size + 1]
    await again.close()

    r = journal_backend.journal_reader()
    try:
        res = verify(r, keyring, name=NAME)
    finally:
        r.close()
    assert res.ok, res.problems
    assert res.records >= 302 and res.checkpoints >= 1  # 301 appended + the checkpoint's own record(s)
    if isinstance(journal_backend, PgBackend):
        assert not (tmp_path / "not-used").exists() and not (tmp_path / "not-used.hwm").exists()
