"""The journal's append path: group commit, contiguous sequence, encryption, append-only."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from msc.journal import Entry, Journal, JournalError, KeyRing
from msc.journal.records import open_sealed, unseal_meta
from msc.journal.schema import partition_path
from msc.journal.writer import JournalBusy, Writer
from tests.faults import FaultyWriter, kill_writer_process


@pytest.fixture
def ring(tmp_path):
    r = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    r.init()
    return r


@pytest.fixture(params=["thread", "process"])
def writer_kind(request):
    return request.param


async def _journal(tmp_path, ring, **kw) -> Journal:
    j = Journal(tmp_path / "journal", ring, **kw)
    await j.open()
    return j


SECRET_TEXT = "ICS1.QW.CA0130000.NAM/ZEBULON, QUIXOTE.DOB/19800101"


async def test_append_returns_contiguous_sequence_numbers_in_call_order(tmp_path, ring, writer_kind):
    j = await _journal(tmp_path, ring, writer=writer_kind)
    futs = [j.submit([Entry(kind="RECEIVED", text=f"m{i}"), Entry(kind="FORWARDED", text=f"f{i}")]) for i in range(50)]
    seqs = [s for f in await asyncio.gather(*futs) for s in f]
    assert seqs == list(range(1, 101))
    await j.close()
    # Reopening continues the sequence.
    j = await _journal(tmp_path, ring, writer=writer_kind)
    assert await j.append(Entry(kind="ADMIN", text="x")) == [101]
    await j.close()


async def test_failed_commit_reuses_sequence_numbers_and_reports_journal_error(tmp_path, ring, monkeypatch):
    j = await _journal(tmp_path, ring)
    assert await j.append(Entry(kind="RECEIVED", text="a")) == [1]
    faults = FaultyWriter.install(j)
    faults.fail_commits = True
    with pytest.raises(JournalError):
        await j.append(Entry(kind="RECEIVED", text="b"))
    assert not j.healthy
    faults.fail_commits = False
    assert await j.append(Entry(kind="RECEIVED", text="c")) == [2]  # no gap
    assert j.healthy
    await j.close()


async def test_no_message_text_or_name_in_plaintext_on_disk(tmp_path, ring):
    j = await _journal(tmp_path, ring)
    await j.append(Entry(kind="RECEIVED", mnemonic="ICS1", user="TS0001", text=SECRET_TEXT, requester="HOLMES, SHERLOCK"))
    await j.close()
    for path in (tmp_path).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in (b"ZEBULON", b"QUIXOTE", b"HOLMES", b"NAM/"):
                assert needle not in data, (path, needle)


async def test_records_decrypt_and_metadata_is_bound(tmp_path, ring):
    j = await _journal(tmp_path, ring)
    await j.append(Entry(kind="RECEIVED", mnemonic="ICS1", user="TS0001", text=SECRET_TEXT))
    await j.close()
    period = next(p.stem for p in (tmp_path / "journal").glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].db"))  # not meta, not YYYY-MM.idx
    conn = sqlite3.connect(partition_path(tmp_path / "journal", period))
    (blob,) = conn.execute("SELECT blob FROM records WHERE seq = 1").fetchone()
    sealed = unseal_meta(blob)
    keys = ring.period(period)
    assert open_sealed(keys.aead, sealed).text == SECRET_TEXT
    # Relabelling the metadata (here: another user) breaks the GCM tag.
    import msgspec
    from cryptography.exceptions import InvalidTag

    forged = msgspec.structs.replace(sealed, meta=msgspec.structs.replace(sealed.meta, user="XX9999"))
    with pytest.raises(InvalidTag):
        open_sealed(keys.aead, forged)


async def test_store_refuses_update_and_delete(tmp_path, ring):
    j = await _journal(tmp_path, ring)
    await j.append(Entry(kind="RECEIVED", text="x"))
    await j.close()
    period = next(p.stem for p in (tmp_path / "journal").glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].db"))  # not meta, not YYYY-MM.idx
    conn = sqlite3.connect(partition_path(tmp_path / "journal", period))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE records SET user = 'X' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM records WHERE seq = 1")


async def test_one_writer_per_journal(tmp_path, ring, writer_kind):
    j = await _journal(tmp_path, ring, writer=writer_kind)
    w = Writer(tmp_path / "journal")
    with pytest.raises(JournalBusy):
        w.open()
    await j.close()
    w.open()
    w.close()


async def test_checkpoint_is_signed_and_counts_the_tree(tmp_path, ring, writer_kind):
    j = await _journal(tmp_path, ring, checkpoint_every=10, writer=writer_kind)
    for i in range(25):
        await j.append(Entry(kind="RECEIVED", text=str(i)))
    await j.flush()
    cp = await j.checkpoint()
    assert cp is not None and cp.tree_size == j.tree_size >= 25
    from msc.journal.bundle_verifier import checkpoint_message

    ring.public_key().verify(cp.signature, checkpoint_message("MSC", cp.tree_size, cp.root, cp.ts))
    await j.close()


async def test_a_dead_writer_process_fails_closed_and_is_replaced(tmp_path, ring):
    j = await _journal(tmp_path, ring, writer="process")
    assert await j.append(Entry(kind="RECEIVED", text="before")) == [1]
    kill_writer_process(j)  # the writer process dies
    with pytest.raises(JournalError):
        await j.append(Entry(kind="RECEIVED", text="lost with the process"))
    assert await j.append(Entry(kind="RECEIVED", text="after")) == [2]  # a new one, no gap
    await j.close()


async def test_checkpoints_come_on_time_and_an_idle_journal_still_marks_the_hour(tmp_path, ring, monkeypatch):
    """New records are signed within checkpoint_interval_s (+ the timer's tick); an idle journal
    writes a checkpoint only once per HEARTBEAT_S (its record keeps the timeline continuous).
    Both run on a monotonic clock: the injected wall clock set back an hour does not stop them."""
    import msc.journal.journal as journal_mod
    from tests.conftest import eventually

    monkeypatch.setattr(journal_mod, "HEARTBEAT_S", 1.5)
    monkeypatch.setattr(journal_mod, "TICK_S", 0.05)
    wall = [1_767_225_600.0]
    j = await _journal(tmp_path, ring, checkpoint_interval_s=0.2, clock=lambda: wall[0])
    await j.append(Entry(kind="RECEIVED", text="a"))
    wall[0] -= 3600  # the clock goes back an hour
    await eventually(lambda: j.tree_size >= 1)
    # The checkpoint's own ADMIN record is news only for the hourly heartbeat:
    size = j.tree_size
    await eventually(lambda: j.tree_size > size)
    assert j.tree_size == size + 1  # exactly the previous checkpoint record, nothing else was written
    await j.close()


async def test_a_record_beside_a_lost_checkpoint_record_is_signed_on_time_not_at_the_heartbeat(tmp_path, ring, monkeypatch):
    """The one record since a checkpoint is not always that checkpoint's own record. Here the
    checkpoint is taken while a batch is on its way to the disk (a backend whose checkpoint does
    not wait for commits in flight, as a database with several connections), and the checkpoint's
    own record is then lost to a failed commit: the record that did land is signed within
    checkpoint_interval_s, not left unsigned until the hourly heartbeat."""
    import msc.journal.journal as journal_mod
    from tests.conftest import eventually

    monkeypatch.setattr(journal_mod, "TICK_S", 0.05)
    j = await _journal(tmp_path, ring, checkpoint_interval_s=0.2)
    faults = FaultyWriter.install(j)
    await j.append(Entry(kind="RECEIVED", text="a"))  # 1
    await j.checkpoint()  # signs 1; its record is 2
    await j.flush()
    await j.append(Entry(kind="RECEIVED", text="b"))  # 3
    faults.hold = asyncio.Event()
    before = faults.commits
    landing = j.submit([Entry(kind="RECEIVED", text="e")])  # 4, held on its way to the disk
    await eventually(lambda: faults.commits == before + 1)
    await eventually(lambda: j.tree_size == 3)  # the timer signs 1..3; its record waits
    faults.fail_calls = {faults.commits + 1}  # ... and is lost
    faults.hold.set()
    assert await landing == [4]
    await eventually(lambda: faults.commits >= before + 2)
    await eventually(lambda: j.tree_size >= 4)
    await j.close()


async def test_a_failing_checkpoint_is_logged_and_the_next_one_covers_the_tail(tmp_path, ring, monkeypatch):
    from structlog.testing import capture_logs

    j = await _journal(tmp_path, ring)
    await j.append(Entry(kind="RECEIVED", text="a"))
    faults = FaultyWriter.install(j)
    faults.fail_checkpoints = True
    with capture_logs() as logs, pytest.raises(JournalError):
        await j.checkpoint()
    assert [e for e in logs if e["event"] == "journal.checkpoint_failed" and e["unsigned"] == 1]
    assert not [e for e in logs if e["event"] == "journal.checkpoint_recovered"]
    with capture_logs() as again, pytest.raises(JournalError):
        await j.checkpoint()  # failing still: said once already (not at every tick), no all-clear
    assert [e["event"] for e in again if e["event"].startswith("journal.checkpoint")] == []
    faults.fail_checkpoints = False
    with capture_logs() as cleared:
        cp = await j.checkpoint()
        await j.checkpoint()  # succeeding again: the all-clear was said once
    assert cp is not None and cp.tree_size == 1
    # After an error-level checkpoint_failed, the all-clear (newcomer6: the error was never cleared).
    assert [(e["event"], e["log_level"], e["tree_size"]) for e in cleared
            if e["event"].startswith("journal.checkpoint")] == [("journal.checkpoint_recovered", "info", 1)]
    await j.close()
