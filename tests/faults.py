"""Storage faults for tests, injected through the storage interface (msc.journal.interfaces).

:class:`FaultyWriter` wraps the journal's writer (``journal.writer``) and fails, holds or
post-fails its calls on request, as a disk (EIO, ENOSPC) or a lost database connection would,
without reaching into the journal's internals::

    faults = FaultyWriter.install(journal)
    faults.fail_commits = True          # every commit raises JournalError, nothing is written
    faults.fail_after_write = 1         # the next commit is written, then reports an error
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from msc.journal.interfaces import JournalWriter
from msc.journal.records import JournalError
from msc.journal.schema import Checkpoint, Row
from tests.waiting import HANG_S


class FaultyWriter:
    """A :class:`JournalWriter` that delegates to a real one, with faults switched on and off."""

    def __init__(self, inner: JournalWriter) -> None:
        self.inner = inner
        self.fail_commits = False  # raise before writing anything (ENOSPC on write)
        self.fail_after_write = 0  # this many next commits are written, then raise (EIO on fsync)
        self.fail_next_commits = 0  # this many next commits raise before writing
        self.fail_calls: set[int] = set()  # the commit calls (counted from 1) that raise before writing
        self.fail_checkpoints = False
        self.error = "injected: no space left on device"
        #: While set (an Event that is not set), commits wait for it before going to the disk.
        self.hold: asyncio.Event | None = None
        self.commits = 0

    @classmethod
    def install(cls, journal) -> FaultyWriter:
        faults = cls(journal.writer)
        journal.writer = faults
        return faults

    @property
    def last_seq(self) -> int:
        return self.inner.last_seq

    @property
    def last_ts(self) -> int:
        return self.inner.last_ts

    @property
    def checkpoint_size(self) -> int:
        return self.inner.checkpoint_size

    @property
    def journal_id(self) -> str | None:
        return self.inner.journal_id

    async def start(self) -> None:
        await self.inner.start()

    async def commit(self, rows: Sequence[Row], poke_indexer: bool = False) -> None:
        self.commits += 1
        call = self.commits
        if self.hold is not None:
            await self.hold.wait()
        if call in self.fail_calls:
            raise JournalError(self.error)
        if self.fail_commits or self.fail_next_commits:
            self.fail_next_commits = max(0, self.fail_next_commits - 1)
            raise JournalError(self.error)
        await self.inner.commit(rows, poke_indexer)
        if self.fail_after_write:
            self.fail_after_write -= 1
            raise JournalError("injected: fsync failed after the write")

    async def leaves(self, first: int, last: int) -> dict[int, bytes]:
        return await self.inner.leaves(first, last)

    async def checkpoint(self, name: str, ts: int) -> Checkpoint | None:
        if self.fail_checkpoints:
            raise JournalError("injected: meta.db is read-only")
        return await self.inner.checkpoint(name, ts)

    async def purge_period(self, period: str, purge_seq: int) -> tuple[int, int] | None:
        return await self.inner.purge_period(period, purge_seq)

    async def delete_partition(self, period: str) -> None:
        await self.inner.delete_partition(period)

    async def close(self) -> None:
        await self.inner.close()

    @property
    def pid(self) -> int | None:
        return getattr(self.inner, "pid", None)


def kill_writer_process(journal) -> None:
    """``kill -9`` of the journal's writer process, as an operator (or the OOM killer) would do it:
    by its process ID. Returns once it is gone."""
    import os
    import signal
    import time

    pid = journal.writer.pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        try:  # the parent (this process) reaps it on its next call; until then it is a zombie
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError(f"the writer process {pid} did not die")
