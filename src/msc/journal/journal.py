"""The journal's asynchronous API: group commit, sealing, checkpoints (JOURNAL.md).

Callers append :class:`~msc.journal.records.Entry` objects and await the commit::

    seqs = await journal.append(Entry(kind="RECEIVED", ...), Entry(kind="FORWARDED", ...))

Entries appended together are committed together, in order. Everything appended while a commit
is running joins the next one (group commit: one fsync per batch, PERFORMANCE.md). When
``append`` returns, the records are on disk (with ``synchronous="full"``). If the commit fails
every waiter gets :class:`JournalError` and the switch answers ``E501`` — nothing is forwarded
or delivered unrecorded (fail closed).

Sequence numbers are assigned when a batch is sealed, and only one batch is in flight, so a
failed batch's numbers are reused by the next one: the sequence stays contiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from msc.journal.keys import KeyRing, PeriodKeys, next_period, period_of
from msc.journal.records import Entry, JournalError, Kind, seal
from msc.journal.store import Checkpoint, Row, Writer
from msc.journal.tokens import tokens_for

#: Upper bound on records sealed into one batch; more wait for the next commit.
MAX_BATCH = 4096


class Journal:
    """Append-only, encrypted, Merkle-checkpointed journal with group commit."""

    def __init__(
        self,
        directory: Path,
        keyring: KeyRing,
        *,
        name: str = "MSC",
        synchronous: str = "full",
        checkpoint_every: int = 10000,
        checkpoint_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[Sequence[Entry], float], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> None:
        self.dir = directory
        self.keyring = keyring
        self.name = name
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._clock = clock
        self._writer = Writer(directory, synchronous=synchronous)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Sequence[Entry], asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._timer: asyncio.Task | None = None
        self._next_seq = 1
        self._last_ts = 0
        self._since_checkpoint = 0
        self._last_checkpoint_time = 0.0
        self._checkpoint_record_only = False
        self._signing = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.healthy = True
        self.last_error: str | None = None
        self.errors_total = 0
        self.tree_size = 0
        self.on_commit = on_commit
        self.on_error = on_error
        self.on_checkpoint = on_checkpoint

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="msc-journal")
        await loop.run_in_executor(self._executor, self._writer.open)
        self._next_seq = self._writer.last_seq + 1
        self._last_ts = self._writer.last_ts
        cps = self._writer.checkpoints
        self.tree_size = cps[-1].tree_size if cps else 0
        self._since_checkpoint = self._writer.last_seq - self.tree_size
        self._last_checkpoint_time = self._clock()
        self._signing = await loop.run_in_executor(self._executor, self.keyring.signing_key)
        await loop.run_in_executor(self._executor, self.prepare_keys)
        self._task = asyncio.create_task(self._run(), name="journal-writer")
        self._timer = asyncio.create_task(self._tick(), name="journal-checkpoints")

    def prepare_keys(self) -> None:
        """Make sure this month's and next month's keys exist (so sealing never waits on disk)."""
        now = period_of(int(self._clock() * 1e6))
        self.keyring.period(now)
        self.keyring.period(next_period(now))

    async def close(self) -> None:
        """Commit what is pending, write a final checkpoint, release the files."""
        if self._task is None:
            return
        self._closing = True
        await self.flush()
        if self._timer:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        with contextlib.suppress(JournalError):
            await self._checkpoint(record=False)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._writer.close)
        self._executor.shutdown(wait=True)

    async def flush(self) -> None:
        """Wait until everything appended so far has been committed (or failed)."""
        while self._pending or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    # -- appending ------------------------------------------------------------------------

    def submit(self, entries: Sequence[Entry]) -> asyncio.Future:
        """Queue entries for the next commit; the future resolves to their sequence numbers."""
        fut = asyncio.get_running_loop().create_future()
        if self._task is None:
            fut.set_exception(JournalError("journal is not open"))
            return fut
        self._pending.append((entries, fut))
        self._wake.set()
        return fut

    async def append(self, *entries: Entry) -> list[int]:
        return await self.submit(entries)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def _seal(self, batch: list[tuple[Sequence[Entry], asyncio.Future]]) -> list[Row]:
        now = int(self._clock() * 1_000_000)
        # Timestamps never go backwards (the clock may): sequence order is time order, which
        # lets search turn a time range into a sequence range.
        ts = max(now, self._last_ts)
        rows = []
        seq = self._next_seq
        period = period_of(ts)
        keys: PeriodKeys | None = self.keyring.period(period)
        if keys is None:
            raise JournalError(f"the key of {period} was destroyed")
        for entries, _fut in batch:
            for e in entries:
                _meta, blob = seal(keys.aead, e, seq, ts, period)
                toks = tokens_for(keys.index_key, e.text, e.requester, e.recipient) if e.text else ()
                rows.append(Row(period, (seq, ts, e.kind, e.direction, e.peer, e.mnemonic, e.user, e.taf,
                                         e.ori, e.mke, e.txn, e.code, e.purpose, e.osn), blob, toks))
                seq += 1
        return rows

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                self._idle.clear()
                k, count = 0, 0
                while k < len(self._pending) and count < MAX_BATCH:
                    count += len(self._pending[k][0])
                    k += 1
                batch = self._pending[:k]
                del self._pending[:k]
                # A waiter may have given up (cancelled); its records are still written:
                # they describe something that already happened.
                t0 = time.perf_counter()
                try:
                    rows = self._seal(batch)
                    await loop.run_in_executor(self._executor, self._writer.commit, rows)
                except Exception as exc:  # JournalError, or a key problem while sealing
                    err = exc if isinstance(exc, JournalError) else JournalError(str(exc))
                    self.healthy = False
                    self.last_error = str(err)
                    self.errors_total += 1
                    # The writer re-read what is really on disk; continue from there.
                    self._next_seq = self._writer.last_seq + 1
                    self._last_ts = max(self._last_ts, self._writer.last_ts)
                    for _entries, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    if self.on_error:
                        self.on_error(err)
                    continue
                self.healthy = True
                self.last_error = None
                first = self._next_seq
                self._next_seq = rows[-1].values[0] + 1
                self._last_ts = rows[-1].values[1]
                self._since_checkpoint += len(rows)
                seq = first
                for entries, fut in batch:
                    n = len(entries)
                    if not fut.done():
                        fut.set_result(list(range(seq, seq + n)))
                    seq += n
                if self.on_commit:
                    self.on_commit([e for entries, _ in batch for e in entries], time.perf_counter() - t0)
                if self._since_checkpoint >= self.checkpoint_every:
                    with contextlib.suppress(JournalError):
                        await self._checkpoint()
            self._idle.set()

    # -- checkpoints ----------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(min(self.checkpoint_interval_s, 5.0))
            if self._clock() - self._last_checkpoint_time < self.checkpoint_interval_s:
                continue
            # Do not checkpoint an idle journal whose only news is the previous checkpoint record.
            if self._since_checkpoint == 0 or (self._since_checkpoint == 1 and self._checkpoint_record_only):
                self._last_checkpoint_time = self._clock()
                continue
            with contextlib.suppress(JournalError):
                await self._checkpoint()

    async def checkpoint(self) -> Checkpoint | None:
        """Write a signed checkpoint now (the CLI and tests use this)."""
        await self.flush()
        return await self._checkpoint()

    async def _checkpoint(self, *, record: bool = True) -> Checkpoint | None:
        loop = asyncio.get_running_loop()
        ts = int(self._clock() * 1_000_000)
        cp = await loop.run_in_executor(self._executor, self._writer.checkpoint, self.name, self._signing.sign, ts)
        self._last_checkpoint_time = self._clock()
        if cp is None:
            return None
        self.tree_size = cp.tree_size
        self._since_checkpoint = self.last_seq - cp.tree_size
        if self.on_checkpoint:
            self.on_checkpoint(cp)
        if record and not self._closing:
            # JOURNAL.md: a checkpoint is also an ADMIN record (so it is itself in the tree).
            self.submit([Entry(kind=Kind.ADMIN, text=f"CHECKPOINT TREE_SIZE/{cp.tree_size} ROOT/{cp.root.hex()}")])
            self._checkpoint_record_only = True
        return cp
