"""Journal.probe (what /readyz asks every second, msc.server.background): the storage is asked
unless a commit that just succeeded already answered — PostgreSQL's probe is a round trip on the
writer's one connection, ahead of the next group commit (PERFORMANCE.md "Where the tail came
from"). Unhealthy, it always asks (that is how it notices the database is back)."""

from __future__ import annotations

import pytest

from msc.journal import journal as journal_module
from msc.journal.journal import Journal
from msc.journal.records import Entry, JournalError
from msc.keyring import KeyRing


@pytest.fixture
async def journal(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    j = Journal(tmp_path / "journal", ring, writer="thread")
    await j.open()
    yield j
    await j.close()


class Probe:
    """A writer's probe, observed: how often the storage was asked, and what it answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.fails: str | None = None

    async def __call__(self) -> None:
        self.calls += 1
        if self.fails:
            raise JournalError(self.fails)


def entry(i: int = 0) -> Entry:
    return Entry(kind="ADMIN", text=f"PROBE TEST {i}")


# (what happened before the probe, fresh window s, storage asked?, answer)
CASES = [
    ("nothing committed yet", [], 1.0, 1, True),
    ("a commit just now", ["commit"], 60.0, 0, True),
    ("a commit, window elapsed", ["commit"], 0.0, 1, True),
    ("two commits just now", ["commit", "commit"], 60.0, 0, True),
    ("a failed commit after a good one", ["commit", "fail"], 60.0, 1, True),
    ("storage refuses, nothing committed", ["refuse"], 60.0, 1, False),
    ("storage refuses, a commit just now", ["commit", "refuse"], 60.0, 0, True),
]


@pytest.mark.parametrize(("what", "before", "fresh_s", "asked", "answer"), CASES, ids=[c[0] for c in CASES])
async def test_a_fresh_successful_commit_answers_the_probe(journal, monkeypatch, what, before, fresh_s, asked, answer):
    monkeypatch.setattr(journal_module, "PROBE_FRESH_S", fresh_s)
    probe = Probe()
    journal.writer.probe = probe  # the PostgreSQL writer's; SQLite's has none
    for i, step in enumerate(before):
        if step == "commit":
            await journal.append(entry(i))
        elif step == "fail":
            inner = journal.writer.commit

            async def failing(rows, poke_indexer=False):
                raise JournalError("disk gone")

            journal.writer.commit = failing
            with pytest.raises(JournalError):
                await journal.append(entry(i))
            journal.writer.commit = inner
            assert not journal.healthy
        elif step == "refuse":
            probe.fails = "journal database: connection refused"
    assert await journal.probe() is answer
    assert probe.calls == asked, what
    assert journal.healthy is answer
    if not answer:
        assert journal.last_error == "journal database: connection refused"
