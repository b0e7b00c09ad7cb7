"""The background verification's loop (msc.journal.watch), one pass at a time, in process."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3

import pytest

from msc.journal import Entry, Journal, KeyRing
from msc.journal.schema import list_partitions, partition_path
from msc.journal.watch import run


@pytest.fixture
def journal(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()

    async def build():
        j = Journal(tmp_path / "journal", ring, checkpoint_every=7)
        await j.open()
        for i in range(40):
            await j.append(Entry(kind="RECEIVED", user="TS0001", text=f"R{i}"))
        await j.close()

    asyncio.run(build())
    return tmp_path / "journal", ring


def events(journal_dir, ring) -> list[dict]:
    out = io.StringIO()
    run(journal_dir, ring, name="MSC", interval_s=0, out=out, passes=1, cpu_share=1.0)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_clean_journal_passes(journal):
    ev = events(*journal)
    assert ev[-1]["event"] == "pass_ok" and ev[-1]["records"] >= 40
    assert not [e for e in ev if e["event"] == "failed"]


@pytest.mark.parametrize("sql, first_bad", [
    ("UPDATE records SET user = 'XX9999' WHERE seq = 3", 3),
    ("UPDATE records SET leaf = zeroblob(32) WHERE seq = 9", 9),
    ("DELETE FROM records WHERE seq = 12", 12),
    ("DELETE FROM records WHERE seq > 20", 21),
])
def test_an_altered_journal_is_reported_with_the_first_bad_record(journal, sql, first_bad):
    journal_dir, ring = journal
    c = sqlite3.connect(partition_path(journal_dir, list_partitions(journal_dir)[-1]), isolation_level=None)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        c.execute(f"DROP TRIGGER {name}")
    c.execute(sql)
    c.close()
    ev = events(journal_dir, ring)
    failed = [e for e in ev if e["event"] == "failed"]
    assert failed and failed[0]["first_bad"] == first_bad and ev[-1]["event"] == "failed", ev
