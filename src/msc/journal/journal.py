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

Why one module of ~530 lines (issue 15: none over ~500 without a reason): group commit, sealing and
the checkpoint schedule share one batch in flight and its sequence numbers; the schema, writer, reader,
retention and recovery are their own modules already.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from msc.journal.highwater import HighWater, default_path
from msc.journal.interfaces import JournalStorage, JournalWriter
from msc.journal.merkle import leaf_hash
from msc.journal.monthkeys import MonthKeys
from msc.journal.records import Entry, JournalError, JournalFenced, Kind, entry_columns, seal
from msc.journal.recovery import finish_key_destruction
from msc.journal.retention import MIN_RETENTION_DAYS, PurgeRefused, month_expired, purge  # noqa: F401 (re-exported)
from msc.journal.schema import Checkpoint, Row
from msc.journal.selfcheck import JournalRefused, SelfCheck, check
from msc.journal.tokens import tokens_for
from msc.journal.writer import ThreadWriter
from msc.keyring import KeyRing, PeriodKeys, period_of

if TYPE_CHECKING:
    from msc.config.load import Settings

#: Upper bound on records sealed into one batch; more wait for the next commit.
MAX_BATCH = 4096
#: Upper bound on the text (characters) of one batch: the writer process holds a batch in memory
#: twice (the request and the rows), so its size stays bounded however long the messages are.
MAX_BATCH_CHARS = 8 * 1024 * 1024
INDEX_BATCH = 20_000  # wake the indexer early once this many records are unindexed (else every second)
#: While idle the journal still writes a signed checkpoint this often (its record marks time):
#: the journal's own timeline then has no silence longer than this while the switch runs
#: (retention.TIMELINE_GAP_S is twice as long).
HEARTBEAT_S = 3600.0
#: How often the timer looks at the checkpoint interval (and whether the key ring's look is due).
TICK_S = 1.0
#: A commit that succeeded this recently answers :meth:`Journal.probe` (s): asking the database
#: again would only put a round trip ahead of the next commit on the writer's one connection.
PROBE_FRESH_S = 1.0
#: A commit (or a probe of the storage) that has not come back after this long (s) is a
#: *stalled* one: the journal is not serving, and the availability ledger counts it down from the
#: moment that commit began (OPERATIONS.md "Availability and reports": a frozen database, a
#: disk that hangs). Shorter waits are a slow commit on a loaded machine, not an outage. (The
#: switch gives up on a probe after as long: msc.server.background.PROBE_S.)
STALL_S = 5.0
#: A commit or probe unanswered this long (s) makes the journal not ready (``/readyz`` 503:
#: :meth:`Journal.unanswered`) before it is called stalled or fails: a frozen database (a paused
#: VM, a cut network) answers nothing, not even a refusal, and a load balancer kept sending new
#: sessions to the node for the 5 s the probe waits (newcomer trial hA). A loaded machine's slow
#: commit takes tens of milliseconds, not seconds.
READY_WAIT_S = 2.0
#: Ended outages kept for the availability ledger until it has taken them (the oldest dropped).
OUTAGES_KEPT = 64
ACCEPT_CODE = "ACCEPT"
#: At most this many leaf hashes of records whose commit failed are remembered, to tell them
#: from another process's if they land late (Journal._unsure): ~10 MB at worst during an outage.
UNSURE_MAX = 100_000
#: The code of the ADMIN record naming records another process wrote (:meth:`Journal._landed_by_content`).
FOREIGN_CODE = "FOREIGN"


def _fail(fut: asyncio.Future, exc: JournalError) -> None:
    """Fail an append's future, marked as seen. Whoever awaits it still gets ``exc``; a caller that
    only fired its records off (a LOGOFF, a budget summary) must not make asyncio print "Future
    exception was never retrieved" with a traceback into the JSON log — every such failure is
    already logged once by its cause (``on_error``: ``journal.commit_failed``; :attr:`Journal.refused`:
    the integrity event or ``node.stepped_down``)."""
    fut.set_exception(exc)
    fut.exception()


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
        on_integrity: Callable[[str], None] | None = None,
        on_keys: Callable[[BaseException | None], None] | None = None,
        writer: str = "thread",
        high_water: Path | None = None,
        prior_evidence: Sequence[str] = (),
        accept: tuple[str, str | None] | None = None,
        storage: JournalStorage | None = None,
    ) -> None:
        """``writer``: "process" (the daemon: a child process owns the files, no GIL waits on
        the commit path) or "thread" (a worker thread; short-lived CLI use).

        ``high_water``: the high-water mark file (default: beside the journal directory).
        ``prior_evidence``: the caller's own reasons to believe a journal existed (the daemon:
        its availability ledger's runs), for the start-up self-check. ``accept``: (reason,
        administrator) — an administrator accepts what the self-check found (``msc journal
        accept``): records lost above the last checkpoint, or no journal where one existed.
        ``on_integrity(text)``: the journal found itself altered while running (fail closed).
        ``on_keys(error)``: what each look at the key ring found (:mod:`msc.journal.monthkeys`;
        None: the month keys are in hand and this machine's master key file opens the key ring).
        ``storage``: a backend other than the SQLite files in ``directory`` (PostgreSQL,
        :class:`msc.journal.interfaces.JournalStorage`): the writer, the start-up self-check and
        the texts of stored outputs and the switch's restart read-backs go through it; there is no
        high-water mark file (the database is the record of its own end).
        """
        self.storage = storage
        self.dir = directory
        self.writer_kind = writer
        self.synchronous = synchronous
        self.keyring = keyring
        self.name = name
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._clock = clock
        #: The storage backend's writer (:class:`msc.journal.interfaces.JournalWriter`: a
        #: ThreadWriter or a WriterProcess for SQLite), made at :meth:`open`.
        self.writer: JournalWriter | None = None
        #: Appends waiting for a batch: (entries, future, time.monotonic() of the submit).
        self._pending: list[tuple[Sequence[Entry], asyncio.Future, float]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._timer: asyncio.Task | None = None
        self._next_seq = 1
        self._last_ts = 0
        self._since_checkpoint = 0
        self._record_seq = 0  # sequence number of the newest committed checkpoint record
        self._checkpoint_failing = False  # the last checkpoint attempt failed (the all-clear is logged once)
        self._signing = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.healthy = True
        #: The future of the newest append: appends commit in order, so when it is done every
        #: earlier one is (a session's end waits on it: msc.server.services.Registry.unbound).
        self.last_submitted: asyncio.Future | None = None
        self.last_error: str | None = None
        self.errors_total = 0
        self.tree_size = 0
        self.on_commit = on_commit
        self.on_error = on_error
        self.on_checkpoint = on_checkpoint
        self.on_integrity = on_integrity
        self.month_keys = MonthKeys(keyring, clock, on_keys)  # made ahead, off the event loop
        self._unindexed = 0
        self._landed: tuple[int, int] | None = None  # seqs written while commits reported errors
        self._foreign: list[tuple[int, int]] = []  # seqs another process wrote (to be journaled)
        # The leaf hashes of this process's records whose commit failed with its outcome unknown,
        # by sequence number (several failed batches may have had the same numbers): a frozen
        # PostgreSQL runs the statement it had received once it is continued, after the watchdog
        # gave up on it, and those records then turn up past the end — this process's own, not
        # another's (probe hB). Forgotten at the next commit that succeeds: the writer then holds
        # the lock the old session held, so nothing of that session can land any more.
        # Bounded (UNSURE_MAX leaves, the earliest kept: the batch in flight when the server froze
        # is the first to fail; the attempts after it reach no server while it is frozen).
        self._unsure: dict[int, set[bytes]] = {}
        self._unsure_n = 0
        #: Set by an owner that calls :meth:`probe` every second (the switch): while a failed
        #: commit has left the writer without a connection (``writer.connected`` False) a batch is
        #: refused at once — its senders answered E501 at once — and the probe reconnects. Else
        #: each batch reconnected itself: with a frozen database each waited for the batch ahead
        #: (its 15-s watchdog), then for its own connection attempt (E501 after 15, 25, 35 s: probe
        #: hB; the writer's lock is shared by the probe's reconnection too).
        self.refuse_while_away = False
        self._hwm = HighWater(high_water or default_path(directory))
        self._prior_evidence = tuple(prior_evidence)
        self._accept = accept
        self.selfcheck: SelfCheck | None = None
        self.accepted: list[str] = []  # what an administrator accepted at this open
        self.opened_size = 0  # records in the journal when it was opened
        self._committed = 0  # the highest sequence number known committed by this process
        self.refused: str | None = None  # set when the journal is found altered while running
        self._last_checkpoint_mono = time.monotonic()
        self._last_commit_mono = float("-inf")  # when a commit last succeeded (monotonic)
        # -- when the journal could not commit (monotonic; down_since, serving_until, outages) --
        self._commit_started: float | None = None  # the commit in progress began
        self._probe_started: float | None = None  # the probe in progress began
        self._failing_since: float | None = None  # the first failed commit (or probe) of a streak began
        #: Ended outages, (start, end) monotonic, oldest first: from the start of the first commit
        #: that failed or stalled to the first that succeeded after it. The availability ledger
        #: takes them (:meth:`msc.server.background.BackgroundWork._ledger_beat`).
        self.outages: collections.deque[tuple[float, float]] = collections.deque(maxlen=OUTAGES_KEPT)

    @classmethod
    def from_settings(cls, settings: Settings, keyring: KeyRing | None = None, **kw) -> Journal:
        """The journal a configuration describes (``[journal]`` and the switch's name, CONFIG.md):
        the one way the switch and the ``msc`` command build it. ``kw``: the other arguments of
        :class:`Journal` (callbacks, ``writer``, ``clock`` …)."""
        if keyring is None:
            keyring = KeyRing(settings.data_dir / "keys", settings.key_file)
        c = settings.config
        return cls(settings.journal_dir, keyring, name=c.switch.name, synchronous=c.journal.synchronous,
                   checkpoint_every=c.journal.checkpoint_every,
                   checkpoint_interval_s=c.journal.checkpoint_interval_s, **kw)

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        signing = await asyncio.to_thread(self.keyring.signing_key)
        self._signing = signing
        if self.storage is not None:
            self.writer = self.storage.journal_writer(signing)
        elif self.writer_kind == "process":
            from cryptography.hazmat.primitives import serialization

            from msc.journal.writerproc import WriterProcess

            seed = signing.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
            self.writer = WriterProcess(self.dir, self.synchronous, seed, self._hwm.path)
        else:
            self.writer = ThreadWriter(self.dir, self.synchronous, signing, self._hwm.path)
        await self.writer.start()
        try:
            await asyncio.to_thread(self._self_check)
        except BaseException:
            await self.writer.close()
            raise
        self._next_seq = self.writer.last_seq + 1
        self._last_ts = self.writer.last_ts
        self.opened_size = self._committed = self.writer.last_seq
        self.tree_size = self.writer.checkpoint_size
        self._since_checkpoint = self.writer.last_seq - self.tree_size
        self._last_checkpoint_mono = time.monotonic()
        self.month_keys.prepared(await loop.run_in_executor(None, self.prepare_keys))
        await asyncio.to_thread(self._with_reader, lambda src: finish_key_destruction(src, self.keyring))
        if self.writer.journal_id:
            await asyncio.to_thread(self.keyring.register_journal, self.writer.journal_id)
        self._task = asyncio.create_task(self._run(), name="journal-writer")
        self._timer = asyncio.create_task(self._tick(), name="journal-checkpoints")
        if self.accepted:
            reason, actor = self._accept
            await self.append(Entry(kind=Kind.ADMIN, user=actor, code=ACCEPT_CODE, text=(
                f"JOURNAL ACCEPTED AS IT IS BY AN ADMINISTRATOR: {'; '.join(self.accepted)} "
                f"(JOURNAL NOW ENDS AT SEQ/{self.opened_size}) REASON/{reason}")))

    def _self_check(self) -> None:
        """JOURNAL.md "Start-up self-check": refuse to append to a journal that is not sound."""
        mark = self._hwm.read() if self.storage is None else None
        res = self._with_reader(lambda src: check(
            src, self.keyring, name=self.name, mark=mark, mark_path=self._hwm.path, journal_id=self.writer.journal_id,
            prior_evidence=self._prior_evidence, now=self._clock()))
        self.selfcheck = res
        if res.ok:
            return
        acceptable = res.continuable or all(p.kind == "missing" for p in res.problems)
        if self._accept is None or not acceptable:
            raise JournalRefused(res, self.dir if self.storage is None else self.storage.describe())
        self.accepted = [str(p) for p in res.problems]

    def prepare_keys(self) -> str:
        """Make sure this month's and next month's keys exist, so that sealing never waits on the
        key ring (its file, or its database). Blocking: called in a worker thread. Returns this
        month (``YYYY-MM`` by the journal's clock)."""
        return self.month_keys.prepare()

    def keys_ahead(self) -> asyncio.Future[None] | None:
        """The look at the key ring, in a worker thread, if it is due (the timer calls this each
        tick: :meth:`msc.journal.monthkeys.MonthKeys.start_if_due`) — the month after made at
        the first tick of each month, so a month's first commit never makes its key on the event
        loop (:meth:`_seal` still does for a month nothing could prepare). The work started, or None."""
        if self._task is None or self._closing:
            return None
        return self.month_keys.start_if_due()

    def keys_ready(self) -> bool:
        """Whether this month's and next month's keys (by the journal's clock) are in hand."""
        return self.month_keys.ready()

    async def close(self) -> None:
        """Commit what is pending, write a final checkpoint, release the files."""
        if self._task is None:
            return
        self._closing = True
        await self.flush()
        self.month_keys.cancel()
        if self._timer:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self.refused is None:
            with contextlib.suppress(JournalError):
                await self._checkpoint(record=False)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self.writer.close()

    async def flush(self) -> None:
        """Wait until everything appended so far has been committed (or failed)."""
        while self._pending or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    # -- appending ------------------------------------------------------------------------

    def submit(self, entries: Sequence[Entry]) -> asyncio.Future:
        """Queue entries for the next commit; the future resolves to their sequence numbers."""
        fut = asyncio.get_running_loop().create_future()
        self.last_submitted = fut
        if self._task is None:
            _fail(fut, JournalError("journal is not open"))
            return fut
        if self.refused is not None:
            _fail(fut, JournalError(self.refused))
            return fut
        self._pending.append((entries, fut, time.monotonic()))
        self._wake.set()
        return fut

    def oldest_wait_s(self) -> float:
        """Seconds the oldest append still queued has waited (0.0 when none waits): the
        journal's queue delay, not counting the commit in progress or the batch sealed to follow
        it. With group commit, an append waits at most about one commit for a batch while the
        storage keeps up, whatever the rate; the delay grows without bound only when more is
        submitted than batches take (the switch sheds new requests on it, PROTOCOL.md §5
        "Overload"). Cheap: one clock read, no scan."""
        if not self._pending:
            return 0.0
        return max(0.0, time.monotonic() - self._pending[0][2])

    async def append(self, *entries: Entry) -> list[int]:
        return await self.submit(entries)

    # -- is it serving? (the availability ledger, OPERATIONS.md "Availability and reports") --------

    def down_since(self, now: float | None = None) -> float | None:
        """Monotonic time since which the journal has not been able to commit — the start of the
        first commit (or probe) of a run of failures, or of the commit or probe in progress once
        it has taken :data:`STALL_S` — or None while it serves."""
        if self._failing_since is not None:
            return self._failing_since
        now = time.monotonic() if now is None else now
        started = [t for t in (self._commit_started, self._probe_started) if t is not None and now - t >= STALL_S]
        return min(started) if started else None

    def unanswered(self, now: float | None = None) -> str | None:
        """Why the journal is not ready although no call failed yet: the commit or probe in
        progress has had no answer for :data:`READY_WAIT_S` or more (``"no answer from the
        journal's storage for 3 s"``), else None. For ``/readyz``; the availability ledger counts
        an outage only from :data:`STALL_S` (:meth:`down_since`)."""
        now = time.monotonic() if now is None else now
        waiting = [now - t for t in (self._commit_started, self._probe_started) if t is not None]
        longest = max(waiting, default=0.0)
        if longest < READY_WAIT_S:
            return None
        return f"no answer from the journal's storage for {longest:.0f} s"

    def serving_until(self, now: float | None = None) -> float:
        """Monotonic time up to which everything submitted has been committed or is committing
        normally: ``now``, or the start of the commit or probe in progress, or of a failing run
        — what a run's heartbeat in the ledger may claim (a heartbeat that is itself held up by a
        frozen database and lands after the thaw must not claim the freeze)."""
        now = time.monotonic() if now is None else now
        return min(t for t in (now, self._commit_started, self._probe_started, self._failing_since) if t is not None)

    def _served(self, started: float, ended: float) -> None:
        """A commit (or probe) begun at ``started`` succeeded at ``ended``: an outage ended if a
        run of failures was going on, or if this one stalled."""
        if self._failing_since is not None:
            self.outages.append((self._failing_since, ended))
            self._failing_since = None
        elif ended - started >= STALL_S:
            self.outages.append((started, ended))

    def _failed(self, started: float) -> None:
        if self._failing_since is None:
            self._failing_since = started

    async def probe(self) -> bool:
        """Can the storage be written? Asks the writer's ``probe`` (PostgreSQL's: one round trip,
        or after a failure it reconnects, takes its lock again and re-reads where the journal
        ends; it writes nothing). The answer is :attr:`healthy` — ``/readyz`` — at once, traffic
        or not: 503 when the database goes away, and 200 again when it is back (a node that a
        load balancer took out of rotation gets no message to commit, and must come back by
        itself). A writer without a probe (SQLite's) is judged by its commits only.

        Under traffic the commits answer it: while the journal is healthy and a commit succeeded
        within :data:`PROBE_FRESH_S`, nothing is asked (PostgreSQL's probe shares the writer's
        connection, so it held up the next group commit by a round trip, once a second —
        PERFORMANCE.md "Where the tail came from"). A failed commit makes it unhealthy at once."""
        if self.refused is not None or self._task is None:
            return False
        probe = getattr(self.writer, "probe", None)
        if probe is None:
            return self.healthy
        if self.healthy and time.monotonic() - self._last_commit_mono < PROBE_FRESH_S:
            return True
        started = self._probe_started = time.monotonic()
        try:
            await probe()
        except JournalError as exc:
            self.healthy = False  # /readyz 503 before a message finds out
            self.last_error = str(exc)
            self._failed(started)
            return False
        except asyncio.CancelledError:
            if time.monotonic() - started >= STALL_S:  # given up on (its caller's bound): it stalled
                self._failed(started)
            raise
        finally:
            self._probe_started = None
        self.healthy = True
        self.last_error = None
        self._served(started, time.monotonic())
        return True

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def _seal(self, batch: list[tuple[Sequence[Entry], asyncio.Future, float]], seq: int) -> list[Row]:
        now = int(self._clock() * 1_000_000)
        # Timestamps never go backwards (the clock may): sequence order is time order, which
        # lets search turn a time range into a sequence range.
        ts = max(now, self._last_ts)
        self._last_ts = ts
        rows = []
        period = period_of(ts)
        keys: PeriodKeys | None = self.keyring.period(period)
        if keys is None:
            raise JournalError(f"the key of {period} was destroyed")
        for entries, _fut, _t in batch:
            toks = ()
            for e in entries:
                _meta, blob = seal(keys.aead, e, seq, ts, period)
                if not e.same_fields_as_previous:
                    toks = tokens_for(keys.index_key, e.text, e.requester, e.recipient) if e.text else ()
                rows.append(Row(period, (seq, ts, *entry_columns(e)), blob, toks))
                seq += 1
        return rows

    def _take(self, limit: int = MAX_BATCH) -> list[tuple[Sequence[Entry], asyncio.Future, float]]:
        """The next batch: whole appends, until ``limit`` records or :data:`MAX_BATCH_CHARS`
        characters of text (at least one append)."""
        k, count, chars = 0, 0, 0
        limit = max(1, min(limit, MAX_BATCH))
        while k < len(self._pending) and count < limit and chars < MAX_BATCH_CHARS:
            entries = self._pending[k][0]
            count += len(entries)
            chars += sum(len(e.text) for e in entries)
            k += 1
        batch = self._pending[:k]
        del self._pending[:k]
        return batch

    async def _run(self) -> None:  # noqa: C901 - one loop, read top to bottom
        """Group commit, pipelined: while batch N commits in the writer thread, batch N+1 is
        sealed on the loop with the sequence numbers that follow N's. If N fails, N+1's seal is
        discarded and its entries go back to the front of the queue to be re-sealed with N's
        numbers, so the sequence stays contiguous."""
        ready: tuple[list, list[Row]] | None = None  # a batch sealed ahead, and its rows
        while True:
            if ready is None and not self._pending:
                self._idle.set()
                await self._wake.wait()
                self._wake.clear()
                continue
            self._idle.clear()
            t0 = time.perf_counter()
            rows: list[Row] | None = None  # the batch being committed (None: none reached the writer)
            try:
                # A batch stops at the checkpoint mark (the unsigned tail bound, JOURNAL.md).
                room = self.checkpoint_every - self._since_checkpoint
                if ready is None and self.writer.last_seq >= self._next_seq:
                    await self._resync()
                if ready is None:
                    batch = self._take(room)
                    if self.refuse_while_away and not self.healthy and getattr(self.writer, "connected", True) is False:
                        raise JournalError(self.last_error or "journal database: not connected")
                    rows = self._seal(batch, self._next_seq)
                else:
                    batch, rows = ready
                    ready = None
                self._unindexed += len(rows)
                poke = self._unindexed >= INDEX_BATCH  # wake the indexer early on a backlog
                if poke:
                    self._unindexed = 0
                commit = asyncio.ensure_future(self.writer.commit(rows, poke))
                self._commit_started = time.monotonic()
                if self._pending and room - len(rows) > 0:  # else a checkpoint comes first
                    nxt = self._take(room - len(rows))
                    try:
                        ready = (nxt, self._seal(nxt, rows[-1].values[0] + 1))
                    except Exception:
                        self._pending[:0] = nxt
                        ready = None
                await commit
            except Exception as exc:  # JournalError, or a key problem while sealing
                err = exc if isinstance(exc, JournalError) else JournalError(str(exc))
                if err is not exc:
                    err.__cause__ = exc  # a fault of msc (a key, sealing), not storage: on_error tells them apart
                self._failed(self._commit_started if self._commit_started is not None else time.monotonic())
                self._commit_started = None
                self.healthy = False
                self.last_error = str(err)
                self.errors_total += 1
                if ready is not None:
                    self._pending[:0] = ready[0]
                    ready = None
                # The writer re-read what is really on disk; continue from there.
                failed_first = self._next_seq
                self._next_seq = self.writer.last_seq + 1
                self._last_ts = max(self._last_ts, self.writer.last_ts)
                # What the storage holds past where this journal ended: its own batch (landed
                # although the commit reported an error), records another process wrote, or
                # nothing — told apart by content, never by count (JOURNAL.md "Storage and
                # durability").
                landed_to = await self._landed_by_content(rows, failed_first)
                seq = failed_first
                for entries, fut, _t in batch:
                    if not fut.done():
                        if seq + len(entries) - 1 <= landed_to:
                            # Each caller learns which of its records are in the file anyway, so
                            # that it can record the fate of any output they created.
                            mine = JournalError(str(err))
                            mine.landed = list(range(seq, seq + len(entries)))
                            _fail(fut, mine)
                        else:
                            _fail(fut, err)
                    seq += len(entries)
                if self.on_error:
                    self.on_error(err)
                if self.writer.last_seq < self._committed:
                    self._shrunk()
                    return
                if landed_to >= failed_first:
                    # The batch reached the disk although its commit reported an error (a failed
                    # fsync after the WAL write). Its senders were told E501 and nothing in it was
                    # forwarded or delivered: the journal will say so once it is healthy again.
                    self._note_landed(failed_first, landed_to)
                continue
            self.healthy = True
            self.last_error = None
            self._unsure.clear()
            self._unsure_n = 0
            self._last_commit_mono = time.monotonic()
            if self._commit_started is not None:
                self._served(self._commit_started, self._last_commit_mono)
            self._commit_started = None
            if self._landed is not None:
                lo, hi = self._landed
                self._landed = None
                self.submit([Entry(kind=Kind.ADMIN, code="E501", text=(
                    f"JOURNAL RECORDS SEQ/{lo}-{hi} WERE WRITTEN WHILE COMMITS REPORTED I/O ERRORS; THEIR SENDERS "
                    "WERE ANSWERED E501 AND NOTHING IN THEM WAS FORWARDED OR DELIVERED"))])
            for lo, hi in self._foreign:
                self.submit([Entry(kind=Kind.ADMIN, code=FOREIGN_CODE, text=(
                    f"JOURNAL RECORDS SEQ/{lo}-{hi} WERE WRITTEN BY ANOTHER PROCESS WHILE THIS SWITCH'S CONNECTION "
                    "TO THE JOURNAL WAS DOWN; THEY ARE NOT THIS SWITCH'S RECORDS"))])
            self._foreign.clear()
            first = rows[0].values[0]
            self._next_seq = rows[-1].values[0] + 1
            self._committed = max(self._committed, self._next_seq - 1)
            self._last_ts = max(self._last_ts, rows[-1].values[1])
            self._since_checkpoint += len(rows)
            seq = first
            for entries, fut, _t in batch:
                n = len(entries)
                if not fut.done():
                    fut.set_result(list(range(seq, seq + n)))
                seq += n
            if self.on_commit:
                self.on_commit([e for entries, _, _t in batch for e in entries], time.perf_counter() - t0)
            if self._since_checkpoint >= self.checkpoint_every:
                with contextlib.suppress(JournalError):
                    await self._checkpoint()

    async def _landed_by_content(self, rows: list[Row] | None, first: int) -> int:
        """After a failed commit (``rows``: the batch that reached the writer, numbered from
        ``first``; None: none did), the writer has re-read where the storage ends. Which of the
        records past ``first - 1`` are this journal's own? Returns the highest of the batch's
        sequence numbers that the storage holds *with the batch's content* (its leaf hashes: the
        writers' :meth:`~msc.journal.interfaces.JournalWriter.leaves`), or ``first - 1`` for none.

        Records there with the content of an *earlier* batch whose commit failed are this
        process's too, landed late (a frozen server continued runs the statement the watchdog
        gave up on): their senders were told E501 and nothing in them was forwarded or delivered —
        said in the ``E501`` ``ADMIN`` record like a batch that landed although its commit
        reported an error (:meth:`_note_landed`). Records after those are not this process's:
        another process wrote them while this writer's lock was lost (on PostgreSQL a session
        lock, gone with the connection) — said once in the log (``journal.foreign_records``, an
        error) and in an ``ADMIN`` record after the next commit; the next batch is numbered after
        them. When the storage cannot be read back, nothing is claimed: ``journal.landed_unknown``
        says which numbers are unexplained. What did not land is remembered as unsure."""
        import structlog

        end = self.writer.last_seq
        mine = {r.seq: leaf_hash(r.blob) for r in rows} if rows else {}
        try:
            if end < first:
                return first - 1
            top = min(end, max([*mine, *self._unsure], default=first - 1))
            try:
                held = await self.writer.leaves(first, top) if top >= first else {}
            except JournalError as exc:
                structlog.get_logger("msc.journal").error("journal.landed_unknown", first=first, last=end,
                                                          error=str(exc))
                return first - 1
            landed_to = own_to = first - 1  # this batch's records / this process's records, from first on
            for seq in range(first, end + 1):
                leaf = held.get(seq)
                if leaf is None:
                    break
                if landed_to == seq - 1 and mine.get(seq) == leaf:
                    landed_to = seq
                elif leaf not in self._unsure.get(seq, ()):
                    break
                own_to = seq
            if own_to > landed_to:
                self._note_landed(landed_to + 1, own_to)
                structlog.get_logger("msc.journal").warning(
                    "journal.landed_late", first=landed_to + 1, last=own_to,
                    note="this switch's records whose commit had failed: their senders were told E501")
            if end > own_to:
                structlog.get_logger("msc.journal").error(
                    "journal.foreign_records", first=own_to + 1, last=end,
                    note="written by another process while this switch's writer lock was lost; not its own")
                self._foreign.append((own_to + 1, end))
            for seq in range(first, landed_to + 1):
                mine.pop(seq, None)
            return landed_to
        finally:
            for seq, leaf in mine.items():  # what did not land (yet): it may still
                if self._unsure_n >= UNSURE_MAX:
                    break
                self._unsure.setdefault(seq, set()).add(leaf)
                self._unsure_n += 1

    async def _resync(self) -> None:
        """The writer, reconnected (by :meth:`probe`), found the storage ending past this
        journal's next number: records of a failed commit that landed late, or another
        process's. Tell them apart (:meth:`_landed_by_content`) and number the next batch after
        them — before it is sealed, so that it commits instead of failing on the numbers (a
        refused batch, E501 to its senders and a second outage in the availability ledger)."""
        first = self._next_seq
        self._next_seq = self.writer.last_seq + 1
        self._last_ts = max(self._last_ts, self.writer.last_ts)
        await self._landed_by_content(None, first)

    def _note_landed(self, lo: int, hi: int) -> None:
        """Records ``lo..hi`` of this process reached the storage although their commits reported
        errors: one ``E501`` ``ADMIN`` record names them all once the journal commits again."""
        if self._landed is not None:
            lo, hi = min(self._landed[0], lo), max(self._landed[1], hi)
        self._landed = (lo, hi)

    def _shrunk(self) -> None:
        """Records this process committed are gone (the files were cut while the writer was being
        replaced): never write over their sequence numbers. Fail closed for good."""
        lost_from, lost_to = self.writer.last_seq + 1, self._committed
        self.refused = (f"journal records {lost_from}..{lost_to} were committed and are gone from the files: "
                        "the journal was altered while the switch ran; nothing more is appended")
        self.healthy = False
        self.last_error = self.refused
        self._next_seq = self._committed + 1  # stays above what is lost (nothing more is written)
        for _entries, fut, _t in self._pending:
            if not fut.done():
                _fail(fut, JournalError(self.refused))
        self._pending.clear()
        self._idle.set()
        if self.on_integrity:
            self.on_integrity(self.refused)

    @property
    def unsigned_tail(self) -> int:
        """Committed records not yet covered by a signed checkpoint (JOURNAL.md: the unsigned
        tail); a pair's next active node signs what a stepped-down node left."""
        return max(0, self._committed - self.tree_size)

    @property
    def committed_size(self) -> int:
        """What the files hold as far as this process knows: the committed size, or after the
        journal was found cut while running, the size it was cut to."""
        return self.writer.last_seq if self.refused is not None else self._committed

    # -- reading (store-and-forward) ------------------------------------------------------

    async def texts(self, seqs: list[int]) -> dict[int, str]:
        """Texts of committed records (read connections in a worker thread, never the writer)."""
        from msc.journal.search import texts

        return await asyncio.to_thread(self._with_reader, lambda src: texts(src, self.keyring, seqs))

    async def texts_and_users(self, seqs: list[int]) -> dict[int, tuple[str, str | None]]:
        """Texts of committed records, each with its record's user (as :meth:`texts`)."""
        from msc.journal.search import texts_and_users

        return await asyncio.to_thread(self._with_reader, lambda src: texts_and_users(src, self.keyring, seqs))

    def with_reader(self, fn):
        """``fn(source)`` (blocking): ``source`` the journal directory (SQLite), or a reader of
        the storage, closed after — what the library functions of msc.journal read."""
        return self._with_reader(fn)

    def _with_reader(self, fn):
        """``fn(source)``: the journal directory (SQLite), or a reader of the storage, closed after."""
        if self.storage is None:
            return fn(self.dir)
        reader = self.storage.journal_reader()
        try:
            return fn(reader)
        finally:
            reader.close()

    async def unanswered_requests(self, window_s: float, up_to: int | None = None) -> list:
        from msc.journal.search import unanswered_requests

        return await asyncio.to_thread(self._with_reader,
                                       lambda src: unanswered_requests(src, self.keyring, window_s, up_to=up_to))

    async def open_answers(self, windows: dict[str, float], up_to: int | None = None,
                           last_part_of: frozenset[str] = frozenset()) -> list:
        from msc.journal.search import open_answers

        return await asyncio.to_thread(self._with_reader, lambda src: open_answers(
            src, self.keyring, windows, up_to=up_to, last_part_of=last_part_of))

    async def refused_answers(self, since_seq: int) -> set[str]:
        from msc.journal.search import refused_answers

        return await asyncio.to_thread(self._with_reader, lambda src: refused_answers(src, since_seq))

    async def starts_after(self, seq: int) -> list[int]:
        """Sequence numbers of the switch's ``START`` records after ``seq`` (a start that
        ended sessions of the run before it wrote them in its START's commit)."""
        from msc.journal.search import starts_after

        return await asyncio.to_thread(self._with_reader, lambda src: starts_after(src, self.keyring, seq))

    async def output_records_since(self, since: int) -> list[tuple]:
        from msc.journal.search import output_records_since

        return await asyncio.to_thread(self._with_reader, lambda src: list(output_records_since(src, since)))

    # -- retention ------------------------------------------------------------------------

    async def purge(self, retention_days: int, *, now: float | None = None, actor: str | None = None) -> list[tuple[str, int, int]]:
        """Delete whole months older than ``retention_days`` and destroy their keys: see
        :func:`msc.journal.retention.purge`. Returns (month, first seq, last seq) per month purged."""
        return await purge(self, retention_days, now=self._clock() if now is None else now, actor=actor)

    # -- checkpoints ----------------------------------------------------------------------

    async def _tick(self) -> None:
        """Checkpoints on time (monotonic: a clock set back must not stop them), looked at
        every :data:`TICK_S`.

        Unsigned tail bound (JOURNAL.md): a checkpoint follows the commit that brings
        ``checkpoint_every`` records since the last one, and the tick that finds
        ``checkpoint_interval_s`` elapsed with new records; idle, one every :data:`HEARTBEAT_S`.
        """
        while True:
            await asyncio.sleep(min(self.checkpoint_interval_s, TICK_S))
            self.keys_ahead()
            mono = time.monotonic()
            elapsed = mono - self._last_checkpoint_mono
            if elapsed < self.checkpoint_interval_s:
                continue
            # An idle journal whose only news is the previous checkpoint record: checkpoint only
            # once an hour, so that its timeline still shows the switch was running.
            idle = self._since_checkpoint == 0 or (
                self._since_checkpoint == 1 and self._record_seq == self._committed == self.tree_size + 1)
            if idle and (elapsed < HEARTBEAT_S or self._since_checkpoint == 0):
                if self._since_checkpoint == 0:
                    self._last_checkpoint_mono = mono
                continue
            with contextlib.suppress(JournalError):
                await self._checkpoint()

    async def checkpoint(self) -> Checkpoint | None:
        """Write a signed checkpoint now (the CLI and tests use this)."""
        await self.flush()
        return await self._checkpoint()

    async def _checkpoint(self, *, record: bool = True) -> Checkpoint | None:
        ts = max(int(self._clock() * 1_000_000), self._last_ts)
        try:
            cp = await self.writer.checkpoint(self.name, ts)
        except JournalFenced:
            # This node is giving the journal up (a pair's step-down): not a failure of the
            # checkpoint — the step-down says once what it leaves unsigned (unsigned_tail).
            raise
        except JournalError as exc:
            # The unsigned tail grows past its bound until checkpoints can be written again. Said
            # once until journal.checkpoint_recovered, not at every tick that tries again (every
            # TICK_S while its database is away: newcomer9's "an error at every tick").
            if not self._checkpoint_failing:
                import structlog

                structlog.get_logger("msc.journal").error("journal.checkpoint_failed", error=str(exc),
                                                          unsigned=self.unsigned_tail)
            self._checkpoint_failing = True
            raise
        if self._checkpoint_failing:  # the all-clear after the errors: an operator sees both
            import structlog

            self._checkpoint_failing = False
            size = cp.tree_size if cp is not None else self.tree_size
            structlog.get_logger("msc.journal").info(
                "journal.checkpoint_recovered", tree_size=size, signed=size - self.tree_size,
                unsigned=self.last_seq - size)
        self._last_checkpoint_mono = time.monotonic()
        if cp is None:
            return None
        self.tree_size = cp.tree_size
        self._since_checkpoint = self.last_seq - cp.tree_size
        if self.on_checkpoint:
            self.on_checkpoint(cp)
        if record and not self._closing:
            # JOURNAL.md: a checkpoint is also an ADMIN record (so it is itself in the tree).
            fut = self.submit([Entry(kind=Kind.ADMIN, text=f"CHECKPOINT TREE_SIZE/{cp.tree_size} ROOT/{cp.root.hex()}")])
            fut.add_done_callback(self._checkpoint_recorded)
        return cp

    def _checkpoint_recorded(self, fut: asyncio.Future) -> None:
        """The idle rule of :meth:`_tick` needs to know which record is the checkpoint's own: the
        one record since a checkpoint may be that record (news only for the hourly heartbeat) or
        any other (signed within ``checkpoint_interval_s``) — e.g. when the checkpoint record's
        own commit failed after another batch landed."""
        if not fut.cancelled() and fut.exception() is None:
            self._record_seq = fut.result()[0]
