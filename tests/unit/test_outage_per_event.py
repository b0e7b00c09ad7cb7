"""One outage, one warning (msc.outage) for two lines that were said per event: the journal's
``journal.commit_failed`` (an error per refused commit — per message, logon and new connection;
at 1,000 msg/s thousands of lines) and ``session.end_not_journaled`` (one per open session at a
step-down: hundreds at a busy node). OPERATIONS.md "One outage, one warning"; the e2e:
tests/e2e/test_outage_logs.py.

The journal here is the real one (its SQLite writer in a thread) with commits failing on demand
(tests.faults.FaultyWriter), its callbacks the switch's (msc.server.background.BackgroundWork),
the sessions' registry the switch's (msc.server.services.Registry)."""

from __future__ import annotations

import asyncio
import types

import pytest
import structlog
from structlog.testing import capture_logs

from msc.journal import Entry, Journal, JournalError, KeyRing
from msc.ops.metrics import Metrics
from msc.server.background import BackgroundWork
from msc.server.services import SEQS_LOGGED, Registry
from tests.faults import FaultyWriter
from tests.unit.test_outage_per_call import Session, State, said, until

COMMITS = ("journal.commit_failed", "journal.commit_recovered")
ENDS = "session.end_not_journaled"


class Delivery:
    def attach(self, endpoint, sink) -> None:
        pass

    def detach(self, endpoint, sink) -> None:
        pass


class Switch(BackgroundWork):
    """The parts of the switch the journal's callbacks use."""

    def __init__(self, tmp_path, journal: Journal | None = None) -> None:
        self.metrics = Metrics()
        self.log = structlog.get_logger("msc").bind(switch="MSC")
        self.journal = journal
        self.backends = types.SimpleNamespace(describe=lambda: f"SQLite ({tmp_path})")
        self.state = State([])
        self.sessions = Registry(delivery=Delivery, accounts=None, journal=lambda: self.journal,  # type: ignore[arg-type]
                                 directory=lambda: None, router=lambda: None, metrics=self.metrics,  # type: ignore[arg-type]
                                 state=lambda: self.state)  # type: ignore[arg-type]

    def refused(self) -> float:
        return self.metrics.journal_errors._value.get()


@pytest.fixture
async def switch(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "keys" / "master.key")
    ring.init()
    sw = Switch(tmp_path)
    sw.journal = Journal(tmp_path / "journal", ring, writer="thread", on_commit=sw._journal_committed,
                         on_error=sw._journal_error)
    await sw.journal.open()
    yield sw
    await sw.journal.close()


async def refused(sw: Switch, n: int) -> None:
    """``n`` appends, each its own commit, each refused (a logon, a message, a new connection …)."""
    for i in range(n):
        with pytest.raises(JournalError):
            await sw.journal.append(Entry(kind="RECEIVED", text=f"refused {i}"))


async def test_refused_commits_of_one_outage_are_said_once_and_counted_at_the_next_commit(switch):
    faults = FaultyWriter.install(switch.journal)
    with capture_logs() as logs:
        faults.fail_commits = True
        await refused(switch, 5)
        faults.error = "journal database: connection refused"  # its reason changes: one outage
        await refused(switch, 2)
        faults.fail_commits = False
        await switch.journal.append(Entry(kind="RECEIVED", text="ok"))
        await switch.journal.append(Entry(kind="RECEIVED", text="ok again"))  # says nothing more
    lines = said(logs, *COMMITS)
    assert [(e["event"], e["log_level"]) for e in lines] == [
        ("journal.commit_failed", "warning"), ("journal.commit_recovered", "info")]
    assert lines[0]["error"] == "injected: no space left on device" and lines[0]["switch"] == "MSC"
    assert "exc_info" not in lines[0]
    assert lines[1]["refused"] == 7 and lines[1]["was"] == "injected: no space left on device"
    assert switch.refused() == 7  # the metric counts every refused commit, said or not


async def test_a_second_outage_of_the_journal_is_said_again(switch):
    faults = FaultyWriter.install(switch.journal)
    with capture_logs() as logs:
        for n, error in ((3, "first"), (1, "second")):
            faults.fail_commits, faults.error = True, error
            await refused(switch, n)
            faults.fail_commits = False
            await switch.journal.append(Entry(kind="RECEIVED", text="ok"))
    assert [(e["event"], e.get("error") or e.get("was"), e.get("refused")) for e in said(logs, *COMMITS)] == [
        ("journal.commit_failed", "first", None), ("journal.commit_recovered", "first", 3),
        ("journal.commit_failed", "second", None), ("journal.commit_recovered", "second", 1)]
    assert switch.refused() == 4


def open_session(reg: Registry, seq: int) -> Session:
    """A terminal's session whose ``LOGON OK`` committed as ``seq``."""
    sess = Session(mnemonic=f"T{seq}", alloc=None, kind="terminal", user="U", taf=None, endpoint=None)
    reg.bound(sess)  # type: ignore[arg-type]
    reg.opened(sess, seq)  # type: ignore[arg-type]
    return sess


def end(sw: Switch, sess: Session) -> asyncio.Future:
    """The session ends: its end's record submitted, then the registry told (as the session does)."""
    fut = sw.journal.submit([Entry(kind="SESSION", mnemonic=sess.mnemonic, text="LOGOFF")])
    sw.sessions.unbound(sess, "LOGOFF")  # type: ignore[arg-type]
    return fut


async def settled(fut: asyncio.Future) -> None:
    with pytest.raises(JournalError):
        await fut
    for _ in range(3):  # the registry's look at the newest append, then its callback
        await asyncio.sleep(0)


async def test_ends_refused_during_an_outage_are_said_in_one_line_when_the_journal_commits_again(switch):
    faults = FaultyWriter.install(switch.journal)
    sessions = [open_session(switch.sessions, seq) for seq in (101, 102, 103)]
    with capture_logs() as logs:
        faults.fail_commits = True
        for sess in sessions:
            await settled(end(switch, sess))
        assert said(logs, ENDS) == []  # gathered while the outage lasts
        faults.fail_commits = False
        await switch.journal.append(Entry(kind="RECEIVED", text="ok"))
        await until(lambda: said(logs, ENDS), "the ends said")
        await switch.sessions.flush()  # the stop: nothing more to say
    [line] = said(logs, ENDS)
    assert line["log_level"] == "warning" and line["count"] == 3 and line["seqs"] == [101, 102, 103]
    assert line["note"] == "the next start journals their ends"
    assert [e["event"] for e in said(logs, *COMMITS)] == list(COMMITS)


async def test_a_stop_says_the_ends_its_journal_refused(switch):
    faults = FaultyWriter.install(switch.journal)
    faults.fail_commits = True
    sessions = [open_session(switch.sessions, seq) for seq in (7, 8)]
    with capture_logs() as logs:
        for sess in sessions:
            await settled(end(switch, sess))
        await switch.sessions.flush()
    assert [(e["count"], e["seqs"]) for e in said(logs, ENDS)] == [(2, [7, 8])]


async def test_a_step_down_says_every_session_whose_end_is_refused_in_one_line(switch):
    n = SEQS_LOGGED + 5
    sessions = [open_session(switch.sessions, seq) for seq in range(1, n + 1)]
    with capture_logs() as logs:
        # As NodeRole.step_down: the journal refuses every append from now on, then one line.
        switch.journal.refused = "this node stepped down (lease lost): nothing more is journaled here"
        switch.sessions.ends_refused()
        for sess in sessions:
            await settled(end(switch, sess))
        await switch.sessions.flush()
    [line] = said(logs, ENDS)
    assert line["count"] == n and line["seqs"] == list(range(1, SEQS_LOGGED + 1))
    assert said(logs, *COMMITS) == []  # a refusal after a step-down is no commit that failed


async def test_a_fault_of_msc_while_sealing_is_said_at_error_with_its_traceback_once(switch, monkeypatch):
    """Not every refused commit is the storage away: a fault while sealing (a period's key
    missing, a bug) is msc's own — at error, with the traceback that finds it; once, too."""
    def broken(*_a, **_k):
        raise ValueError("no key for period 2026-12")

    monkeypatch.setattr("msc.journal.journal.seal", broken)
    with capture_logs() as logs:
        await refused(switch, 3)
        monkeypatch.undo()
        await switch.journal.append(Entry(kind="RECEIVED", text="ok"))
    lines = said(logs, *COMMITS)
    assert [(e["event"], e["log_level"]) for e in lines] == [
        ("journal.commit_failed", "error"), ("journal.commit_recovered", "info")]
    assert isinstance(lines[0]["exc_info"], JournalError)
    assert isinstance(lines[0]["exc_info"].__cause__, ValueError)
    assert lines[1]["refused"] == 3
