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


async def test_a_probe_without_an_answer_makes_the_journal_not_ready_before_it_gives_up(journal):
    """A frozen database (SIGSTOP of PostgreSQL, a paused VM, a cut network) answers nothing: the
    probe waits its 5 s (msc.server.background.PROBE_S) and ``healthy`` stays True meanwhile, so
    ``/readyz`` said 200 for ~5 s while nothing could be committed (newcomer trial hA). A call
    unanswered for READY_WAIT_S is reason enough to be not ready; it is no outage yet for the
    availability ledger (STALL_S)."""
    import asyncio
    import time

    from msc.journal.journal import READY_WAIT_S, STALL_S

    answer = asyncio.Event()

    async def frozen() -> None:
        await answer.wait()

    journal.writer.probe = frozen
    asked = asyncio.create_task(journal.probe())
    while journal._probe_started is None:
        await asyncio.sleep(0)
    began = journal._probe_started
    assert journal.unanswered(now=began + READY_WAIT_S / 2) is None  # a slow answer is not a reason
    why = journal.unanswered(now=began + READY_WAIT_S + 1)
    assert why is not None and why.startswith("no answer from the journal's storage for 3 s"), why
    assert journal.healthy and journal.down_since(now=began + READY_WAIT_S + 1) is None  # no outage yet
    assert journal.down_since(now=began + STALL_S) == began
    answer.set()
    assert await asked is True
    assert journal.unanswered(now=time.monotonic() + 60) is None  # answered: nothing waits


@pytest.mark.parametrize("refuse", [True, False], ids=["an owner that probes", "no prober"])
async def test_while_the_writer_has_no_connection_a_batch_is_refused_at_once_where_a_probe_reconnects(
        journal, refuse):
    """After a failed commit left the writer to reconnect (PostgreSQL's ``connected`` False: the
    watchdog cut a frozen server's connection, the server refused), each later batch reconnected
    by itself — with a frozen database each waited for the one ahead, then for its own attempt:
    E501 after 15, 25, 35 s (probe hB). Where the owner probes every second (the switch:
    ``refuse_while_away``) a batch is refused at once instead, with the outage's reason, and the
    writer is not asked; once the probe has reconnected, commits go through. Without a prober
    (an msc command's journal) a batch still reconnects by itself."""
    calls: list[int] = []
    inner = journal.writer.commit

    async def commit(rows, poke_indexer=False):
        calls.append(len(rows))
        return await inner(rows, poke_indexer)

    journal.writer.commit = commit
    journal.writer.connected = False  # a failure left it without a trusted connection
    journal.refuse_while_away = refuse
    journal.healthy, journal.last_error = False, "journal database cannot be reopened: connection refused"
    if refuse:
        with pytest.raises(JournalError, match="connection refused"):
            await journal.append(entry(1))
        assert calls == []  # refused before the writer: nothing could land
        journal.writer.connected = True  # the probe reconnected
    assert await journal.append(entry(2)) and calls == [1] and journal.healthy
