"""The journal checks itself before anything is appended (JOURNAL.md "Start-up self-check").

A table of what someone with a shell (and no key) can do to the files while the switch is
stopped, each applied to a copy of one journal: every one is refused at open, with the kind of
problem it is. Losses an administrator may accept (records cut after the last checkpoint, a
journal gone) open once accepted, and the acceptance is the next record.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from msc.journal import Entry, Journal, JournalError, KeyRing
from msc.journal.schema import list_partitions, partition_path
from msc.journal.search import Query, search
from msc.journal.selfcheck import JournalRefused
from msc.journal.verify import verify
from tests.faults import kill_writer_process

NAME = "MSC"
N = 60  # records; checkpoints every 20 (and the checkpoint records themselves)


BUILD = """
import asyncio, os, sys, time
from pathlib import Path
from msc.journal import Entry, Journal, KeyRing
d = Path(sys.argv[1])
ring = KeyRing(d / "keys", d / "keys" / "master.key")
ring.init()

async def main():
    j = Journal(d / "journal", ring, checkpoint_every=20)
    await j.open()
    for i in range(@N@):
        await j.append(Entry(kind="RECEIVED", user="TS0001", mnemonic="ICS1", text=f"ICS1.QV.CA0130000.LIC/T{i}"))
    await j.flush()
    mark = d / "journal.hwm"
    while not mark.exists() or '"size": %d' % j.last_seq not in mark.read_text():
        await asyncio.sleep(0.05)
    os._exit(0)  # as a kill -9 leaves it: no final checkpoint, an unsigned tail after the last one

asyncio.run(main())
""".replace("@N@", str(N))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    import subprocess
    import sys

    d = tmp_path_factory.mktemp("selfcheck")
    subprocess.run([sys.executable, "-c", BUILD, str(d)], check=True, timeout=60)
    return d


def copy(base: Path, tmp_path: Path) -> tuple[Path, KeyRing]:
    d = tmp_path / "copy"
    shutil.copytree(base, d)
    return d, KeyRing(d / "keys", d / "keys" / "master.key")


def conn(d: Path) -> sqlite3.Connection:
    c = sqlite3.connect(partition_path(d / "journal", list_partitions(d / "journal")[-1]), isolation_level=None)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        c.execute(f"DROP TRIGGER {name}")
    return c


def meta(d: Path) -> sqlite3.Connection:
    c = sqlite3.connect(d / "journal" / "meta.db", isolation_level=None)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        c.execute(f"DROP TRIGGER {name}")
    return c


def last_cp(d: Path) -> int:
    return meta(d).execute("SELECT MAX(tree_size) FROM checkpoints").fetchone()[0]


def last_seq(d: Path) -> int:
    return conn(d).execute("SELECT MAX(seq) FROM records").fetchone()[0]


def open_journal(d: Path, ring: KeyRing, **kw) -> Journal:
    async def go():
        j = Journal(d / "journal", ring, **kw)
        await j.open()
        seq = j.last_seq
        await j.close()
        return j, seq

    return asyncio.run(go())


# -- the forgeries: (name, function(d) -> None, the problem kind expected) -------------------------

def cut_tail_after_checkpoint(d):
    conn(d).execute("DELETE FROM records WHERE seq > ?", (last_cp(d),))


def cut_last_three(d):
    conn(d).execute("DELETE FROM records WHERE seq > ?", (last_seq(d) - 3,))


def cut_below_checkpoint(d):
    conn(d).execute("DELETE FROM records WHERE seq > ?", (last_cp(d) - 2,))


def cut_tail_and_lower_the_mark(d):
    """Cut the tail *and* edit the high-water mark down: the box cannot tell (the off-box alert
    can); but a cut below the last checkpoint still shows."""
    from msc.journal.highwater import HighWater, Mark

    cut_below_checkpoint(d)
    mark = HighWater(d / "journal.hwm")
    old = mark.read()
    mark.write(Mark(old.journal_id, last_cp(d) - 2, old.ts, old.checkpoint))
    mark.close()


def flip_ciphertext_in_tail(d):
    import hashlib

    c = conn(d)
    seq = last_seq(d) - 1
    (blob,) = c.execute("SELECT blob FROM records WHERE seq = ?", (seq,)).fetchone()
    forged = bytearray(blob)
    forged[-10] = ord("A") if forged[-10] != ord("A") else ord("B")
    c.execute("UPDATE records SET blob = ?, leaf = ? WHERE seq = ?",
              (bytes(forged), hashlib.sha256(b"\x00" + bytes(forged)).digest(), seq))


def relabel_user_in_tail(d):
    conn(d).execute("UPDATE records SET user = 'XX9999' WHERE seq = ?", (last_seq(d),))


def delete_one_in_tail(d):
    conn(d).execute("DELETE FROM records WHERE seq = ?", (last_seq(d) - 2,))


def swap_two_in_tail(d):
    c = conn(d)
    a, b = last_seq(d) - 2, last_seq(d) - 1
    c.execute("UPDATE records SET seq = -1 WHERE seq = ?", (a,))
    c.execute("UPDATE records SET seq = ? WHERE seq = ?", (a, b))
    c.execute("UPDATE records SET seq = ? WHERE seq = -1", (b,))


def bad_checkpoint_signature(d):
    m = meta(d)
    size = last_cp(d)
    (sig,) = m.execute("SELECT signature FROM checkpoints WHERE tree_size = ?", (size,)).fetchone()
    m.execute("UPDATE checkpoints SET signature = ? WHERE tree_size = ?", (bytes(64 - len(sig)) + sig[::-1], size))


def bad_checkpoint_frontier(d):
    m = meta(d)
    size = last_cp(d)
    (f,) = m.execute("SELECT frontier FROM checkpoints WHERE tree_size = ?", (size,)).fetchone()
    m.execute("UPDATE checkpoints SET frontier = ? WHERE tree_size = ?", (bytes(len(f)), size))


def delete_last_checkpoint_and_cut(d):
    """Remove the newest checkpoint row too, and cut what it covered: the mark still knows."""
    m = meta(d)
    size = last_cp(d)
    m.execute("DELETE FROM checkpoints WHERE tree_size = ?", (size,))
    conn(d).execute("DELETE FROM records WHERE seq > ?", (last_cp(d),))


def delete_every_journal_file(d):
    shutil.rmtree(d / "journal")


def delete_every_journal_file_and_the_mark(d):
    shutil.rmtree(d / "journal")
    (d / "journal.hwm").unlink()


def replace_with_another_journal(d):
    """Another journal (its own meta.db identity), e.g. a copy from another install."""
    shutil.rmtree(d / "journal")
    ring = KeyRing(d / "keys", d / "keys" / "master.key")

    async def go():
        j = Journal(d / "journal", ring, high_water=d / "other.hwm", accept=("ANOTHER INSTALL", "AD0002"))
        await j.open()
        for i in range(N + 10):
            await j.append(Entry(kind="ADMIN", text=f"OTHER {i}"))
        await j.close()

    asyncio.run(go())


def damage_the_mark(d):
    (d / "journal.hwm").write_text("{not json")


def delete_a_month_file(d):
    """A journal of one month: deleting its only file is 'missing'; see the chain test below."""
    for f in (d / "journal").glob("*.db"):
        if f.name != "meta.db":
            f.unlink()


FORGERIES = [
    (cut_tail_after_checkpoint, "shrunk"),
    (cut_last_three, "shrunk"),
    (cut_below_checkpoint, "truncated"),
    (cut_tail_and_lower_the_mark, "truncated"),
    (flip_ciphertext_in_tail, "tampered"),
    (relabel_user_in_tail, "tampered"),
    (delete_one_in_tail, "tampered"),
    (swap_two_in_tail, "tampered"),
    (bad_checkpoint_signature, "tampered"),
    (bad_checkpoint_frontier, "tampered"),
    (delete_last_checkpoint_and_cut, "shrunk"),
    (delete_every_journal_file, "missing"),
    (delete_every_journal_file_and_the_mark, "missing"),
    (replace_with_another_journal, "foreign"),
    (damage_the_mark, "mark"),
    (delete_a_month_file, "truncated"),
]


@pytest.mark.parametrize("forge, kind", FORGERIES, ids=[f.__name__ for f, _k in FORGERIES])
def test_every_forgery_is_refused_at_open(base, tmp_path, forge, kind):
    d, ring = copy(base, tmp_path)
    open_journal(d, ring)  # the untouched copy opens
    d, ring = copy(base, tmp_path / "again")
    forge(d)
    with pytest.raises(JournalRefused) as exc:
        open_journal(d, ring)
    kinds = {p.kind for p in exc.value.result.problems}
    assert kind in kinds, exc.value.result.problems
    assert "msc journal accept" in str(exc.value)


CONTINUABLE = [cut_tail_after_checkpoint, cut_last_three, delete_last_checkpoint_and_cut, damage_the_mark]
NEW_JOURNAL = [delete_every_journal_file, delete_every_journal_file_and_the_mark]


@pytest.mark.parametrize("forge", CONTINUABLE + NEW_JOURNAL, ids=[f.__name__ for f in CONTINUABLE + NEW_JOURNAL])
def test_a_loss_opens_once_an_administrator_accepts_it_and_that_is_the_next_record(base, tmp_path, forge):
    d, ring = copy(base, tmp_path)
    forge(d)
    j, seq = open_journal(d, ring, accept=("DISK REPLACED, TICKET 4711", "AD0001"))
    assert j.accepted
    [rec] = [r for r in search(d / "journal", ring, Query(kind="ADMIN")) if r.code == "ACCEPT"]
    assert rec.seq == seq and rec.user == "AD0001" and "TICKET 4711" in rec.text
    if forge in NEW_JOURNAL:
        assert rec.seq == 1
    assert verify(d / "journal", ring, name=NAME).ok
    open_journal(d, ring)  # and from then on it opens without anything to accept


@pytest.mark.parametrize("forge", [flip_ciphertext_in_tail, cut_below_checkpoint, bad_checkpoint_signature,
                                   replace_with_another_journal])
def test_an_altered_journal_is_not_accepted_it_can_only_be_set_aside(base, tmp_path, forge):
    from msc.journal.acceptance import accept

    d, ring = copy(base, tmp_path)
    forge(d)
    with pytest.raises(JournalError, match="--new-journal"):
        accept(d / "journal", ring, name=NAME, reason="INVESTIGATING", actor="AD0001")
    out = accept(d / "journal", ring, name=NAME, reason="INVESTIGATING", actor="AD0001", new_journal=True)
    aside = [p for p in d.iterdir() if p.name.startswith("journal.set-aside-")]
    assert len(aside) == 1 and "set aside" in out
    assert (aside[0] / "meta.db").exists()  # kept, as evidence
    [rec] = list(search(d / "journal", ring, Query(kind="ADMIN")))
    assert rec.seq == 1 and rec.code == "ACCEPT" and str(aside[0]) in rec.text
    open_journal(d, ring)


def test_a_fresh_install_opens_without_anything_to_accept(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    j, seq = open_journal(tmp_path, ring)
    assert seq == 0 and j.selfcheck.ok
    # ...and so does its second start, with nothing written in between.
    j, seq = open_journal(tmp_path, ring)
    assert j.selfcheck.ok


def test_the_callers_own_evidence_counts(tmp_path):
    """The daemon passes state.db's availability ledger: a journal gone with its mark is still noticed."""
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    with pytest.raises(JournalRefused, match="availability ledger"):
        open_journal(tmp_path, ring, prior_evidence=("state.db's availability ledger records 3 earlier run(s)",))


def test_the_check_reads_the_tail_and_the_newest_signed_records_not_the_whole_journal(base, tmp_path, monkeypatch):
    import msc.journal.selfcheck as selfcheck

    d, ring = copy(base, tmp_path)
    seq = last_seq(d)
    j, _seq = open_journal(d, ring)
    assert j.selfcheck.records_checked == seq  # a journal shorter than RECORDS_BELOW: all of it
    # With a journal longer than that (scaled down here to 20 records), the check starts at the
    # newest checkpoint at least 20 records before the last one: a record below it is not read
    # at start — that is the background verification's and `msc journal verify`'s work.
    monkeypatch.setattr(selfcheck, "RECORDS_BELOW", 20)
    d, ring = copy(base, tmp_path / "b")
    cp = last_cp(d)
    j, _seq = open_journal(d, ring)
    assert 20 <= j.selfcheck.records_checked < seq and j.selfcheck.checkpoint_size == cp
    conn(d).execute("UPDATE records SET user = 'XX9999' WHERE seq = 3")
    j, _seq = open_journal(d, ring)
    assert j.selfcheck.ok
    assert not verify(d / "journal", ring, name=NAME).ok
    # ... while one within the span is refused, although a signed checkpoint covers it.
    conn(d).execute("UPDATE records SET user = 'XX9999' WHERE seq = ?", (cp - 5,))
    with pytest.raises(JournalRefused, match="relabelled"):
        open_journal(d, ring)


async def test_a_tail_cut_while_running_is_noticed_and_the_journal_fails_closed(tmp_path):
    """The writer is replaced after a failure and re-reads the files: if records it had committed
    are gone, the journal never writes over their sequence numbers again."""
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    seen: list[str] = []
    j = Journal(tmp_path / "journal", ring, writer="process", on_integrity=seen.append)
    await j.open()
    for i in range(10):
        await j.append(Entry(kind="RECEIVED", text=f"R{i}"))
    assert j.committed_size == 10
    d = tmp_path
    kill_writer_process(j)  # the writer process dies (or is killed) ...
    conn(d).execute("DELETE FROM records WHERE seq > 6")  # ... and the tail is cut meanwhile
    with pytest.raises(JournalError):
        await j.append(Entry(kind="RECEIVED", text="after the cut"))
    with pytest.raises(JournalError, match="7..10 were committed and are gone"):
        await j.append(Entry(kind="RECEIVED", text="and after that"))
    assert not j.healthy and j.committed_size == 6 and seen and "7..10" in seen[0]
    await j.close()
    assert last_seq(d) == 6  # nothing written over the lost numbers


def test_the_writer_never_leaves_a_hole_or_writes_over_a_number(tmp_path):
    from msc.journal.schema import Row
    from msc.journal.writer import Writer

    w = Writer(tmp_path / "journal")
    w.open()

    def row(seq):
        return Row("2026-01", (seq, 1_767_225_600_000_000 + seq, "ADMIN", "-", *([None] * 10)), b"x%d" % seq, ())

    w.commit([row(1), row(2), row(3)])
    for bad in (5, 3, 1):
        with pytest.raises(JournalError, match="the journal ends at 3"):
            w.commit([row(bad)])
    w.commit([row(4)])
    assert w.last_seq == 4
    w.close()
