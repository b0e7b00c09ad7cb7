"""Contract of the journal's storage (msc.journal.interfaces): any backend must pass this."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import pytest

from msc.journal.bundle_verifier import checkpoint_message
from msc.journal.interfaces import JournalReader, JournalWriter
from msc.journal.merkle import leaf_hash, root_of
from msc.journal.records import JournalError
from msc.journal.retention import TIMELINE_GAP_S
from msc.journal.schema import COLUMNS, Row
from msc.journal.writer import JournalBusy
from tests.waiting import HANG_S

NOV = int(dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp() * 1_000_000)
DEC = int(dt.datetime(2026, 12, 1, 0, 0, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


def period(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1e6, dt.UTC).strftime("%Y-%m")


def row(seq: int, ts: int, **meta) -> Row:
    """A record as the sealing step hands it over: the writer stores bytes, it never reads them."""
    fields = {"kind": "RECEIVED", "direction": "in", "peer": "T1", "mnemonic": "T1", "user": "TS0001",
              "taf": None, "ori": "CA0130000", "mke": "QW", "txn": f"X{seq}", "code": None,
              "purpose": None, "osn": None} | meta
    values = (seq, ts, *(fields[c] for c in COLUMNS[2:]))
    blob = b"sealed record %d" % seq
    return Row(period(ts), values, blob, [bytes([seq % 256]) * 16] if seq % 2 else [])


def rows(first: int, n: int, ts: int, step_us: int = 1000) -> list[Row]:
    return [row(first + i, ts + i * step_us) for i in range(n)]


async def opened(backend, signing) -> JournalWriter:
    w = backend.journal_writer(signing)
    assert isinstance(w, JournalWriter)
    await w.start()
    return w


@pytest.fixture
async def writer(journal_backend, signing):
    w = await opened(journal_backend, signing)
    yield w
    await w.close()


@pytest.fixture
def reader(journal_backend):
    r = journal_backend.journal_reader()
    assert isinstance(r, JournalReader)
    yield r
    r.close()


async def test_a_new_journal_is_empty_and_has_a_lasting_identity(journal_backend, signing):
    w = await opened(journal_backend, signing)
    assert (w.last_seq, w.last_ts, w.checkpoint_size) == (0, 0, 0)
    ident = w.journal_id
    assert ident
    await w.close()
    w = await opened(journal_backend, signing)
    assert w.journal_id == ident
    await w.close()
    r = journal_backend.journal_reader()
    assert r.journal_id() == ident
    assert (r.periods(), r.checkpoints(), r.purged(), r.last_checkpoint()) == ([], [], [], None)
    r.close()


async def test_commits_are_durable_in_order_and_read_back_exactly(journal_backend, signing, reader):
    w = await opened(journal_backend, signing)
    batch = rows(1, 30, NOV)
    await w.commit(batch[:10])
    await w.commit(batch[10:], poke_indexer=True)
    assert (w.last_seq, w.last_ts) == (30, batch[-1].values[1])
    await w.close()
    w = await opened(journal_backend, signing)  # a new writer re-reads the truth
    assert (w.last_seq, w.last_ts) == (30, batch[-1].values[1])
    await w.close()
    got = list(reader.records(period(NOV)))
    assert [g.values for g in got] == [b.values for b in batch]
    assert [g.blob for g in got] == [b.blob for b in batch]
    assert [g.leaf for g in got] == [leaf_hash(b.blob) for b in batch]
    assert [g.seq for g in reader.records(period(NOV), 25)] == [25, 26, 27, 28, 29, 30]
    assert reader.period_range(period(NOV)) == (1, 30)
    assert reader.blob(7) == (period(NOV), batch[6].blob)
    assert reader.blob(31) is None
    # many at once (store-and-forward reads outputs' texts in batches): absent ones are left out
    assert reader.blobs([7, 3, 31, 7, 0]) == {3: (period(NOV), batch[2].blob), 7: (period(NOV), batch[6].blob)}
    assert reader.blobs([]) == {}


# Batches that do not continue the journal: each is refused, nothing of it is written, and the
# writer still takes the right next batch.
@pytest.mark.parametrize("first", [0, 1, 5, 7, 100], ids=lambda f: f"starts-at-{f}")
async def test_a_batch_that_does_not_continue_the_sequence_is_refused_whole(writer, reader, first):
    await writer.commit(rows(1, 5, NOV))
    with pytest.raises(JournalError):
        await writer.commit(rows(first, 3, NOV + 10_000))
    assert writer.last_seq == 5
    await writer.commit(rows(6, 2, NOV + 20_000))
    assert writer.last_seq == 7
    assert [r.seq for r in reader.records(period(NOV))] == [1, 2, 3, 4, 5, 6, 7]


async def test_a_batch_across_a_month_end_lands_in_both_months(writer, reader):
    batch = [row(1, NOV), row(2, NOV + 1), row(3, DEC), row(4, DEC + 1)]
    await writer.commit(batch)
    assert reader.periods() == [period(NOV), period(DEC)]
    assert reader.period_range(period(DEC)) == (3, 4)
    assert reader.find_period(2) == period(NOV)
    assert reader.find_period(3) == period(DEC)
    assert reader.find_period(5) is None
    assert reader.blobs([1, 4, 5]) == {1: (period(NOV), batch[0].blob), 4: (period(DEC), batch[3].blob)}


async def test_checkpoints_sign_the_merkle_root_of_everything_committed(journal_backend, signing, reader):
    w = await opened(journal_backend, signing)
    assert await w.checkpoint("TEST-MSC", NOV) is None  # nothing to sign yet
    batch = rows(1, 13, NOV)
    await w.commit(batch[:6])
    cp1 = await w.checkpoint("TEST-MSC", NOV + 1)
    await w.commit(batch[6:])
    cp2 = await w.checkpoint("TEST-MSC", NOV + 2)
    assert await w.checkpoint("TEST-MSC", NOV + 3) is None  # nothing new
    assert (cp1.tree_size, cp2.tree_size) == (6, 13)
    for cp, n in ((cp1, 6), (cp2, 13)):
        assert cp.root == root_of(leaf_hash(b.blob) for b in batch[:n])
        signing.public_key().verify(cp.signature, checkpoint_message("TEST-MSC", cp.tree_size, cp.root, cp.ts))
    assert w.checkpoint_size == 13
    await w.close()
    assert reader.checkpoints() == [cp1, cp2]
    assert reader.last_checkpoint() == cp2
    assert reader.last_checkpoint(at_most=12) == cp1
    assert reader.last_checkpoint(at_most=5) is None
    w = await opened(journal_backend, signing)  # the frontier survives a restart
    assert w.checkpoint_size == 13
    more = rows(14, 3, NOV + 50_000)
    await w.commit(more)
    cp3 = await w.checkpoint("TEST-MSC", NOV + 60_000)
    assert cp3.root == root_of(leaf_hash(b.blob) for b in batch + more)
    await w.close()


async def test_calls_made_at_once_are_served_one_after_another(journal_backend, signing, reader):
    """The journal calls its writer from several tasks at once — the group commit, the
    checkpoint timer, a retention purge — so a writer serialises them (none is refused because
    another is running) and each sees the state the one before it left."""
    w = await opened(journal_backend, signing)
    batch = rows(1, 40, NOV)
    results = await asyncio.gather(w.commit(batch[:10]), w.checkpoint("TEST-MSC", NOV + 1),
                                   w.commit(batch[10:20]), w.checkpoint("TEST-MSC", NOV + 2), w.commit(batch[20:30]))
    assert results[0] is None and results[2] is None and results[4] is None
    signed = [cp.tree_size for cp in (results[1], results[3]) if cp is not None]
    assert signed == sorted(signed) and all(size in (10, 20, 30) for size in signed) and signed
    calls = []
    for i in range(5):  # commits in sequence order, each with a checkpoint asked for beside it
        calls += [w.commit(batch[30 + 2 * i:32 + 2 * i]), w.checkpoint("TEST-MSC", NOV + 10 + i)]
    await asyncio.gather(*calls)
    assert w.last_seq == 40
    cp = await w.checkpoint("TEST-MSC", NOV + 100)
    assert cp is None or cp.tree_size == 40
    await w.close()
    assert [r.seq for r in reader.records(period(NOV))] == list(range(1, 41))
    assert reader.last_checkpoint().root == root_of(leaf_hash(b.blob) for b in batch[:reader.last_checkpoint().tree_size])


async def test_one_writer_per_journal(journal_backend, signing, writer):
    second = journal_backend.journal_writer(signing)
    with pytest.raises(JournalBusy):
        await second.start()
    await second.close()
    await writer.commit(rows(1, 1, NOV))  # the first one is not disturbed
    assert writer.last_seq == 1


async def test_a_silence_longer_than_the_gap_bound_is_recorded(writer, reader):
    await writer.commit(rows(1, 2, NOV))
    later = NOV + 1000 + (TIMELINE_GAP_S + 5) * 1_000_000
    await writer.commit(rows(3, 1, later))
    await writer.commit(rows(4, 1, later + 1000))  # no silence: nothing more recorded
    assert reader.gaps() == [(NOV + 1000, later)]


async def test_purging_a_month_keeps_the_tree_and_the_sequence(journal_backend, signing, reader):
    w = await opened(journal_backend, signing)
    old, new = rows(1, 5, NOV), rows(6, 3, DEC)
    await w.commit(old)
    await w.commit(new)
    await w.checkpoint("TEST-MSC", DEC + 10_000)
    assert await w.purge_period(period(NOV), 8) == (1, 5)
    assert reader.purged() == [(period(NOV), 1, 5)]
    assert reader.periods() == [period(DEC)]  # a month being purged is not read any more
    await w.delete_partition(period(NOV))
    assert await w.purge_period("2026-01", 8) is None  # no such month
    await w.close()
    w = await opened(journal_backend, signing)
    assert w.last_seq == 8
    await w.commit(rows(9, 2, DEC + 20_000))
    cp = await w.checkpoint("TEST-MSC", DEC + 30_000)
    assert cp.root == root_of(leaf_hash(b.blob) for b in old + new + rows(9, 2, DEC + 20_000))
    await w.close()
    assert reader.find_period(3) is None
    assert reader.blob(3) is None
    assert reader.find_period(9) == period(DEC)


# -- fencing (issue 16 item 2): a backend with a fence hook runs it inside the transaction that
# makes a batch or a checkpoint durable; a fence that raises leaves nothing written.

class Fenced(Exception):
    """What a lease check raises when this node's epoch is no longer the current one."""


def fencing(journal_backend, why: str = "the SQLite backend is one node's files: it has no fence"):
    if not isinstance(journal_backend, PgBackendType()):
        pytest.skip(why)


def PgBackendType():  # noqa: N802 - a type, looked up late (the PostgreSQL backend's class)
    from tests.contract.conftest import PgBackend

    return PgBackend


# Ways a fence refuses: its own exception, a JournalError, a database error raised by SQL run
# on the transaction's own connection (as an epoch check in PostgreSQL does).
async def _raise_fenced(conn):
    raise Fenced("epoch 3 is not the current epoch 4")


async def _raise_journal_error(conn):
    raise JournalError("fenced: lease lost")


async def _raise_in_sql(conn):
    await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'stale epoch' USING ERRCODE = 'MSC01'; END $$")


async def _write_then_raise(conn):
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS fence_probe(x int)")
    raise Fenced("refused after the fence touched the transaction")


@pytest.mark.parametrize("refuse", [_raise_fenced, _raise_journal_error, _raise_in_sql, _write_then_raise],
                         ids=["own-exception", "journal-error", "sql-error", "after-a-statement"])
async def test_a_fence_that_refuses_aborts_the_commit_and_nothing_is_written(journal_backend, signing, refuse):
    fencing(journal_backend)
    state = {"refuse": False, "calls": 0}

    async def fence(conn):
        state["calls"] += 1
        if state["refuse"]:
            await refuse(conn)

    w = journal_backend.journal_writer(signing, fence=fence)
    await w.start()
    await w.commit(rows(1, 3, NOV))
    cp = await w.checkpoint("TEST-MSC", NOV + 5000)
    assert state["calls"] == 2  # the batch and the checkpoint each went through it
    state["refuse"] = True
    with pytest.raises(JournalError):
        await w.commit(rows(4, 5, NOV + 10_000) + [row(9, DEC)])  # two months: neither lands
    assert (w.last_seq, w.last_ts) == (3, rows(1, 3, NOV)[-1].ts)
    with pytest.raises(JournalError):
        await w.commit(rows(4, 1, NOV + 20_000))
    assert await w.checkpoint("TEST-MSC", NOV + 30_000) is None  # nothing new to sign
    state["refuse"] = False
    await w.commit(rows(4, 2, NOV + 40_000))  # the lease is back: the writer goes on from 4
    with pytest.raises(JournalError):
        state["refuse"] = True
        await w.checkpoint("TEST-MSC", NOV + 50_000)
    await w.close()
    r = journal_backend.journal_reader()
    try:
        assert [x.seq for x in r.records(period(NOV))] == [1, 2, 3, 4, 5]
        assert r.periods() == [period(NOV)]
        assert r.checkpoints() == [cp]
        assert r.blob(9) is None
    finally:
        r.close()


def _fence_of(lease: dict, name: str):
    """A node's fence: it passes while ``lease["holder"]`` is this node (the lease in PostgreSQL, as
    tests/integration/test_ha_lease_pg.py tests it, reduced to who holds it)."""

    async def fence(conn):
        if lease["holder"] != name:
            raise Fenced(f"{name} does not hold the lease ({lease['holder']} does)")

    return fence


async def test_the_lease_holder_takes_the_writer_lock_from_a_writer_that_lost_the_lease(journal_backend, signing):
    """Two nodes on one journal: A's writer holds the one-writer lock with its connection open — A
    was SIGSTOPped, or is cut off, and the database keeps a session's lock as long as the session.
    B, once it holds the lease, must be able to write: its writer ends A's session and takes the
    lock. A standby (its fence refuses) takes nothing; a single node (no fence) is refused as
    before; A, continued, commits nothing (its session is gone and its fence now refuses) and the
    journal goes on from B's records without a gap (found by make ha-soak: the new active node
    looped on "being written by another process" while the stopped one lived)."""
    fencing(journal_backend)
    lease = {"holder": "A"}
    a = journal_backend.journal_writer(signing, fence=_fence_of(lease, "A"))
    await a.start()
    await a.commit(rows(1, 3, NOV))
    for intruder in (journal_backend.journal_writer(signing, fence=_fence_of(lease, "B")),  # a standby
                     journal_backend.journal_writer(signing)):  # a single node: no fence, no lease
        with pytest.raises(JournalBusy):
            await intruder.start()
        await intruder.close()
    await a.commit(rows(4, 1, NOV + 10_000))  # A was not disturbed

    lease["holder"] = "B"  # A paused; B took the lease over
    b = journal_backend.journal_writer(signing, fence=_fence_of(lease, "B"))
    await b.start()
    assert b.last_seq == 4
    await b.commit(rows(5, 2, NOV + 20_000))
    for attempt in (rows(5, 1, NOV + 30_000), rows(5, 1, NOV + 40_000)):  # A continued: refused, twice
        with pytest.raises(JournalError):
            await a.commit(attempt)
    await b.commit(rows(7, 1, NOV + 50_000))
    await a.close()
    await b.close()
    r = journal_backend.journal_reader()
    try:
        assert [x.seq for x in r.records(period(NOV))] == [1, 2, 3, 4, 5, 6, 7]
        assert [x.blob for x in r.records(period(NOV))][4:] == [x.blob for x in rows(5, 2, NOV + 20_000)
                                                                 + rows(7, 1, NOV + 50_000)]
    finally:
        r.close()


async def test_a_node_paused_inside_a_commit_transaction_is_ended_by_the_server(journal_backend, signing,
                                                                                 monkeypatch):
    """A node paused after its fence share-locked the lease row (between the fence and COMMIT) would
    keep every other node from acquiring the lease: the server ends its session once it has been
    idle in the transaction for IDLE_IN_TRANSACTION_S; nothing of the batch is written."""
    fencing(journal_backend)
    from msc.storage import pgjournal

    monkeypatch.setattr(pgjournal, "IDLE_IN_TRANSACTION_S", 0.3)
    paused = asyncio.Event()

    async def fence_then_pause(conn):
        await conn.execute("SELECT 1")
        paused.set()
        await asyncio.Event().wait()  # the process stopped here (SIGSTOP): the server sees idle in transaction

    w = journal_backend.journal_writer(signing, fence=fence_then_pause)
    await w.start()
    task = asyncio.create_task(w.commit(rows(1, 2, NOV)))
    await asyncio.wait_for(paused.wait(), HANG_S)
    watcher = await journal_backend.settings.connect()
    try:  # the paused writer's session (the writer lock's holder) is idle in a transaction, then gone
        holder = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1"
        pid = await watcher.fetchval(holder, pgjournal.WRITER_LOCK)
        assert await watcher.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid) == "idle in transaction"
        deadline = asyncio.get_running_loop().time() + 30
        while await watcher.fetchval(holder, pgjournal.WRITER_LOCK) is not None:
            assert asyncio.get_running_loop().time() < deadline, "the paused session was not ended"
            await asyncio.sleep(0.05)
    finally:
        await watcher.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, JournalError):
        await task
    await asyncio.wait_for(w.close(), HANG_S)
    r = journal_backend.journal_reader()
    try:
        assert list(r.records(period(NOV))) == []
    finally:
        r.close()


async def test_a_writer_whose_connection_is_cut_refuses_then_goes_on_from_the_truth(journal_backend, signing):
    """The connection dies between two commits (a failover, a restart): the next commit fails
    closed (JournalError), the writer reconnects, takes the writer lock again and re-reads where
    the journal ends and its Merkle frontier, and the one after it continues without a gap."""
    fencing(journal_backend, "the SQLite backend has no connection to lose (its faults: tests/faults.py)")
    w = await opened(journal_backend, signing)
    batch = rows(1, 8, NOV)
    await w.commit(batch[:5])
    assert journal_backend.cut_connections() >= 1
    with pytest.raises(JournalError):
        await w.commit(batch[5:])
    assert w.last_seq == 5
    await w.commit(batch[5:])  # reconnected: the same batch again, now it lands
    cp = await w.checkpoint("TEST-MSC", NOV + 50_000)
    assert cp.root == root_of(leaf_hash(b.blob) for b in batch)
    second = journal_backend.journal_writer(signing)  # the lock was taken again
    with pytest.raises(JournalBusy):
        await second.start()
    await second.close()
    await w.close()


def _logged_connection_class(sent: list[str]):
    """An asyncpg connection that notes, in order, each transaction it opens (TRANSACTION) and each
    statement it is asked to run, by kind (:data:`_STATEMENT`): what the database is sent."""
    import asyncpg

    class Logged(asyncpg.Connection):
        def transaction(self, **kw):
            sent.append("TRANSACTION")
            return super().transaction(**kw)

        async def execute(self, query, *args, **kw):
            sent.append(_statement(query))
            return await super().execute(query, *args, **kw)

    return Logged


class _Logged:
    """The writer's database settings, its connections :func:`_logged_connection_class`'s."""

    def __init__(self, settings, sent: list[str]) -> None:
        self._settings, self._sent = settings, sent

    def __getattr__(self, name):
        return getattr(self._settings, name)

    async def connect(self):
        import asyncpg

        return await asyncpg.connect(self._settings.dsn, password=self._settings.password, timeout=HANG_S,
                                     connection_class=_logged_connection_class(self._sent))


def _statement(sql: str) -> str:
    """BATCH (records and their tokens: a data-modifying WITH), INSERT (a silence's or a
    checkpoint's row), or OTHER (a month's first partitions and its journal_periods row)."""
    words = sql.split(None, 3)
    if words[0].upper() == "WITH":
        return "BATCH"
    if words[0].upper() == "INSERT" and words[2] in ("journal_gaps(seq,", "journal_checkpoints(tree_size,"):
        return "INSERT"
    return "OTHER"


async def _statements(sent: list[str], call) -> list[str]:
    """What ``call`` sent the database."""
    sent.clear()
    await call
    return list(sent)


_LATER = NOV + 1000 + (TIMELINE_GAP_S + 5) * 1_000_000


# (what is committed, what the database is sent without a fence, with one). PERFORMANCE.md "Where
# the tail came from": a batch is one statement (records and tokens, its own transaction); a
# transaction (BEGIN … COMMIT) only where more than one statement must land together — a fence's
# check and the batch, or the batch and a recorded silence (journal_gaps).
_ROUND_TRIPS = [
    ("batch", lambda w: w.commit(rows(4, 3, NOV + 10_000)), ["BATCH"], ["TRANSACTION", "FENCE", "BATCH"]),
    ("one-record", lambda w: w.commit(rows(4, 1, NOV + 10_000)), ["BATCH"], ["TRANSACTION", "FENCE", "BATCH"]),
    ("two-months", lambda w: w.commit(rows(4, 2, NOV + 10_000) + [row(6, DEC)]), ["BATCH"],
     ["TRANSACTION", "FENCE", "BATCH"]),
    ("after-a-silence", lambda w: w.commit(rows(4, 1, _LATER)), ["TRANSACTION", "BATCH", "INSERT"],
     ["TRANSACTION", "FENCE", "BATCH", "INSERT"]),
    ("checkpoint", lambda w: w.checkpoint("TEST-MSC", NOV + 20_000), ["INSERT"], ["TRANSACTION", "FENCE", "INSERT"]),
]


@pytest.mark.parametrize("fenced", [False, True], ids=["single-node", "fenced"])
@pytest.mark.parametrize(("what", "call", "alone", "with_fence"), _ROUND_TRIPS, ids=[c[0] for c in _ROUND_TRIPS])
async def test_a_commit_without_a_fence_is_one_statement_and_lands_whole(journal_backend, signing, fenced, what, call,
                                                                         alone, with_fence):
    fencing(journal_backend, "the SQLite backend sends no statements over a network")
    sent: list[str] = []

    async def fence(conn):
        sent.append("FENCE")

    w = PgWriterType()(_Logged(journal_backend.settings, sent), signing.sign, fence=fence if fenced else None)
    await w.start()
    try:
        await w.commit(rows(1, 3, NOV))  # the month's partitions exist before the call measured
        got = await _statements(sent, call(w))
        assert [s for s in got if s != "OTHER"] == (with_fence if fenced else alone), what
    finally:
        await w.close()
    r = journal_backend.journal_reader()
    try:
        if what == "checkpoint":
            assert [c.tree_size for c in r.checkpoints()] == [3]
        else:
            stored = [x.seq for p in r.periods() for x in r.records(p)]
            assert stored == list(range(1, w.last_seq + 1)) and w.last_seq > 3
        if what == "after-a-silence":
            assert r.gaps() == [(NOV + 2000, _LATER)]
    finally:
        r.close()


def PgWriterType():  # noqa: N802 - a type, looked up late (PostgreSQL's writer)
    from msc.storage.pgjournal import PgWriter

    return PgWriter


async def test_leaves_are_read_back_from_the_storage(writer):
    """What the storage holds at some sequence numbers, by leaf hash (the journal tells its own
    batch from another process's records with it after a failed commit): every month, nothing
    for a number it does not hold."""
    batch = rows(1, 3, NOV) + rows(4, 3, DEC)
    await writer.commit(batch)
    assert await writer.leaves(2, 9) == {b.seq: leaf_hash(b.blob) for b in batch[1:]}
    assert await writer.leaves(7, 9) == {}


async def test_records_another_writer_made_while_the_lock_was_lost_are_not_taken_for_the_batch(journal_backend,
                                                                                                signing):
    """PostgreSQL's writer lock is a session lock: while the writer's connection is down another
    writer can take it and commit (a command on another machine, an older msc). The first
    writer's next batch then fails, it re-reads where the journal ends — past its batch's first
    number — and what the database holds there is the other writer's, not its batch: told by the
    leaf hashes, not by the count."""
    fencing(journal_backend, "the SQLite backend's lock is a file lock held for the writer's life")
    w = await opened(journal_backend, signing)
    await w.commit(rows(1, 3, NOV))
    assert journal_backend.cut_connections() >= 1
    other = await opened(journal_backend, signing)  # the lock is free: another writer takes it
    theirs = [Row(r.period, r.values, b"another writer's %d" % r.seq, r.tokens)
              for r in (row(4, NOV + 10_000, txn="THEIRS4"), row(5, NOV + 11_000, txn="THEIRS5"))]
    await other.commit(theirs)
    await other.close()
    mine = rows(4, 3, NOV + 20_000)
    with pytest.raises(JournalError):
        await w.commit(mine)
    assert w.last_seq == 5
    held = await w.leaves(4, 6)
    assert held == {t.seq: leaf_hash(t.blob) for t in theirs}
    assert all(held.get(m.seq) != leaf_hash(m.blob) for m in mine)
    await w.commit(rows(6, 2, NOV + 30_000))  # numbered after them, it lands
    await w.close()
