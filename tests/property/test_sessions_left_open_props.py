"""Exactly once across interrupted starts (msc.server.orphans.end_left_open; JOURNAL.md
"Sessions a node's end left open"): whatever runs open sessions and die, and wherever a start
dies — before or after any of its reads and writes of the state, before or after its journal
commit — once a start completes, every session any run left open has exactly one end in the
journal, each before the START of the start that wrote it, and the state holds none of them.

The journal and the state are in memory here (a commit is all or nothing, as both backends'
are); a "death" is an exception at that step, after which nothing of that start runs."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from msc.journal.records import Entry
from msc.mnemonics.state import OpenSession
from msc.server.orphans import end_left_open

EXAMPLES = int(os.environ.get("MSC_PROP_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("MSC_PROP_RANDOM") is None,
                    database=None)


class Died(Exception):
    pass


class Fate:
    """Where the current start dies: at its ``at``-th step, before or after doing it (None: never)."""

    def __init__(self, at: int | None, after: bool) -> None:
        self.at, self.after, self.step = at, after, 0

    def __call__(self, do):
        self.step += 1
        if self.step == self.at and not self.after:
            raise Died
        out = do()
        if self.step == self.at:
            raise Died
        return out


class Journal:
    def __init__(self) -> None:
        self.records: list[tuple[int, Entry]] = []
        self.fate = Fate(None, False)

    @property
    def last_seq(self) -> int:
        return len(self.records)

    async def append(self, *entries: Entry) -> list[int]:
        def commit() -> list[int]:
            first = self.last_seq + 1
            self.records.extend((first + i, e) for i, e in enumerate(entries))
            return list(range(first, first + len(entries)))

        return self.fate(commit)

    async def starts_after(self, seq: int) -> list[int]:
        return self.fate(lambda: [s for s, e in self.records if s > seq and e.kind == "ADMIN"
                                  and e.text.startswith("START ")])


class State:
    def __init__(self, journal: Journal) -> None:
        self.rows: dict[int, OpenSession] = {}
        self.journal = journal

    def opened(self, row: OpenSession) -> None:  # what a run that serves writes (it does not die here)
        self.rows.setdefault(row.seq, row)

    def open_sessions(self) -> list[OpenSession]:
        return self.journal.fate(lambda: sorted(self.rows.values(), key=lambda r: r.seq))

    def sessions_changed(self, opened=(), ended=()) -> None:
        def change() -> None:
            for r in opened:
                self.rows.setdefault(r.seq, r)
            for s in ended:
                self.rows.pop(s, None)

        self.journal.fate(change)

    def sessions_closing(self, seqs: list[int], after: int) -> None:
        def mark() -> None:
            for s in seqs:
                if s in self.rows:
                    r = self.rows[s]
                    self.rows[s] = OpenSession(r.seq, r.kind, r.peer, r.mnemonic, r.pool, r.user, r.taf, r.opened,
                                               after)

        self.journal.fate(mark)


# A history: runs, each opening some sessions (pooled or not) and dying, then a start that may die
# at some step (before or after it) — or complete.
runs = st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.none() | st.integers(1, 8), st.booleans()),
                min_size=1, max_size=6)


@SETTINGS
@given(runs)
def test_every_session_left_open_is_ended_exactly_once(history):
    journal = Journal()
    state = State(journal)
    opened: list[str] = []

    async def main() -> None:
        completed = True
        for n, pooled, dies_at, after in history:
            if completed:  # a run that serves: its sessions open (their logons committed), then it dies
                for _ in range(n):
                    mnemonic = f"M{len(opened) + 1}"
                    (seq,) = await journal.append(Entry(kind="SESSION", mnemonic=mnemonic, text="LOGON OK"))
                    state.opened(OpenSession(seq, "pool" if pooled else "terminal", "P", mnemonic,
                                                     "P" if pooled else None, "U", None, 0.0))
                    opened.append(mnemonic)
            journal.fate = Fate(dies_at, after)
            try:
                await end_left_open(journal, state, Entry(kind="ADMIN", text="START X"), "RESTART")
                completed = True
            except Died:
                completed = False
            journal.fate = Fate(None, False)
        await end_left_open(journal, state, Entry(kind="ADMIN", text="START X"), "RESTART")  # one that completes

    asyncio.run(main())
    ends = Counter(e.mnemonic for _s, e in journal.records if e.text == "LOGOFF RESTART")
    assert ends == Counter(opened), (ends, opened)
    releases = Counter(e.mnemonic for _s, e in journal.records if e.text.startswith("POOL P RELEASE"))
    assert all(n == 1 for n in releases.values())
    starts = [s for s, e in journal.records if e.text.startswith("START ")]
    for s, e in journal.records:
        if e.text == "LOGOFF RESTART":
            assert any(s < t for t in starts)  # committed with (before) a START
    assert state.rows == {}
