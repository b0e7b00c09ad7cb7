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
from msc.journal.schema import COLUMNS
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


def verified(backend, keyring):
    """``msc journal verify``'s result for the journal on ``backend``, asserted ok."""
    r = backend.journal_reader()
    try:
        res = verify(r, keyring, name=NAME)
    finally:
        r.close()
    assert res.ok, res.problems
    return res


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

    res = verified(journal_backend, keyring)
    assert res.records >= 302 and res.checkpoints >= 1  # 301 appended + the checkpoint's own record(s)
    if isinstance(journal_backend, PgBackend):
        assert not (tmp_path / "not-used").exists() and not (tmp_path / "not-used.hwm").exists()


@pytest.mark.parametrize("found", ["its own batch", "another process's records"])
async def test_a_failed_commit_is_landed_only_if_the_storage_holds_its_own_records(journal_backend, keyring,
                                                                                    tmp_path, found):
    """A commit reports an error and the writer, re-reading, finds the journal longer than before
    the batch. Either the batch reached the storage anyway (a failed fsync after the WAL write, a
    COMMIT whose answer was lost): its senders learn their ``landed`` numbers and the journal says
    so (E501 record) — or another process wrote there while this writer's lock was lost (on
    PostgreSQL, a session lock gone with the connection): then nothing is claimed landed, no E501
    statement is made about records that are not the switch's, the next append is numbered after
    them and the journal names them once. Told by content (the leaf hashes the storage holds), on
    every backend — before, by count: any record past the end counted as the batch."""
    import structlog

    from msc.journal.records import JournalError, Kind

    j = journal_on(journal_backend, keyring, tmp_path)
    await j.open()
    await j.append(entry(0))
    inner = j.writer.commit
    elsewhere = [Entry(kind=Kind.ADMIN, user="AD0009", text="WRITTEN ELSEWHERE 1"),
                 Entry(kind=Kind.ADMIN, user="AD0009", text="WRITTEN ELSEWHERE 2")]
    trap = {"armed": True}

    async def commit(rows, poke_indexer=False):
        if not trap["armed"]:
            return await inner(rows, poke_indexer)
        trap["armed"] = False
        if found == "its own batch":
            await inner(rows, poke_indexer)  # written, then the error (EIO on fsync, a lost COMMIT answer)
        else:  # another process, sealing with the same keys, took these numbers first
            await inner(j._seal([(elsewhere, None, 0.0)], rows[0].seq), poke_indexer)
        raise JournalError("injected: commit failed")

    j.writer.commit = commit  # the Journal's public writer, observed (tests/faults.py does the same)
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(JournalError) as failed:
            await j.append(entry(1))
        after = await j.append(entry(2))
        await j.flush()
    end = j.last_seq
    texts = await j.texts(list(range(1, end + 1)))
    statements = [t for t in texts.values() if "WRITTEN WHILE COMMITS REPORTED I/O ERRORS" in t]
    named = [t for t in texts.values() if "WRITTEN BY ANOTHER PROCESS" in t]
    if found == "its own batch":
        assert failed.value.landed == [2] and texts[2] == entry(1).text and after == [3]
        assert len(statements) == 1 and "SEQ/2-2" in statements[0] and named == []
    else:
        assert getattr(failed.value, "landed", None) in (None, []), "another process's records taken for its own"
        assert (texts[2], texts[3]) == ("WRITTEN ELSEWHERE 1", "WRITTEN ELSEWHERE 2")
        assert after == [4] and texts[4] == entry(2).text  # numbered after them
        assert statements == [] and len(named) == 1 and "SEQ/2-3" in named[0], texts
        said = [e for e in logs if e.get("event") == "journal.foreign_records"]
        assert [(e["first"], e["last"]) for e in said] == [(2, 3)], said
        r = journal_backend.journal_reader()
        try:
            codes = [rec.values[COLUMNS.index("code")] for p in r.periods() for rec in r.records(p)]
        finally:
            r.close()
        assert codes.count("FOREIGN") == 1
    await j.close()
    verified(journal_backend, keyring)


async def test_an_earlier_failed_batch_that_lands_late_is_its_own_not_another_process(journal_backend, keyring,
                                                                                       tmp_path):
    """A frozen PostgreSQL (SIGSTOP) holds a batch's statement; the watchdog gives up on it (its
    senders are told E501) and the next attempts fail too; continued, the server runs the
    statement it had and the records land — under numbers the next batch then also tries. The
    writer, re-reading, finds records past the end with the content of the *earlier* batch: the
    switch's own, landed late. Before, only the failing batch was compared, so they were called
    another process's (``journal.foreign_records`` and a FOREIGN record naming the switch's own
    RECEIVED and FORWARDED records: probe hB, 2 of 2 runs). Now they are said as landed late
    (the E501 record: their senders were answered E501, nothing in them was forwarded or
    delivered), and nothing is called foreign."""
    import structlog

    from msc.journal.records import JournalError

    j = journal_on(journal_backend, keyring, tmp_path)
    await j.open()
    await j.append(entry(0))
    inner = j.writer.commit
    held: list = []  # the statement the frozen server received and had not run

    async def commit(rows, poke_indexer=False):
        if not held and rows[0].values[COLUMNS.index("txn")] == "X1":
            held.append(rows)
            raise JournalError("journal database: TimeoutError: no answer from the database within 15 s")
        if held:  # the server continued: it runs what it had, then this batch's numbers are taken
            await inner(held.pop(), poke_indexer)
            raise JournalError("journal database: the batch starts at 2 but the journal ends at 2")
        return await inner(rows, poke_indexer)

    j.writer.commit = commit
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(JournalError) as first:
            await j.append(entry(1))
        with pytest.raises(JournalError) as second:
            await j.append(entry(2))
        after = await j.append(entry(3))
        await j.flush()
    assert getattr(first.value, "landed", None) in (None, []) and getattr(second.value, "landed", None) in (None, [])
    texts = await j.texts(list(range(1, j.last_seq + 1)))
    assert texts[2] == entry(1).text and after == [3] and texts[3] == entry(3).text
    statements = [t for t in texts.values() if "WRITTEN WHILE COMMITS REPORTED I/O ERRORS" in t]
    named = [t for t in texts.values() if "WRITTEN BY ANOTHER PROCESS" in t]
    assert named == [] and len(statements) == 1 and "SEQ/2-2" in statements[0], texts
    events = [e["event"] for e in logs if e["event"].startswith("journal.")]
    assert "journal.foreign_records" not in events and "journal.landed_late" in events, events
    await j.close()
    verified(journal_backend, keyring)
