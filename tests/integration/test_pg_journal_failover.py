"""The journal on PostgreSQL across a failover of PostgreSQL itself (issue 16 items 1 and 4):
the primary is killed with kill -9 under the journal's writer, the synchronous standby is
promoted, and the writer — through the multi-host URI with target_session_attrs=read-write —
fails the batch in flight closed, reconnects to the promoted server, takes the writer lock there,
re-reads where the journal ends and its Merkle frontier, and goes on: every acknowledged batch
is there, nothing twice, the signed checkpoints and the records verify."""

from __future__ import annotations

import time

import pytest

from msc.journal.records import JournalError
from msc.journal.verify import verify
from msc.keyring import KeyRing
from msc.storage.pgjournal import PgReader, PgWriter
from msc.storage.postgres import PgSettings
from tests.contract.test_journal_contract import NOV
from tests.contract.test_verify_contract import NAME, sealed


@pytest.fixture
def pair():
    from tests import pg

    reason = pg.missing_reason()
    if reason:
        pytest.skip(reason)
    with pg.primary_with_standby(synchronous=True) as (primary, standby):
        yield primary, standby


async def test_kill_9_of_the_primary_loses_no_acknowledged_record(pair, tmp_path):
    primary, standby = pair
    primary.sql("CREATE DATABASE journal")
    # asyncpg gives up on a host that answers with an error (here: no such database yet on the
    # standby) instead of trying the next: wait until the standby has replayed the CREATE.
    deadline = time.monotonic() + 60
    while standby.sql("SELECT count(*) FROM pg_database WHERE datname = 'journal'") != "1":
        assert time.monotonic() < deadline, "the standby never replayed CREATE DATABASE"
        time.sleep(0.02)
    # the standby listed first: the URI must find the primary by its session attributes
    dsn = (f"postgresql://postgres@127.0.0.1:{standby.port},127.0.0.1:{primary.port}/journal"
           "?target_session_attrs=read-write")
    settings = PgSettings(dsn, primary.password)
    ring = KeyRing(tmp_path / "keys", tmp_path / "master.key")
    ring.init()
    batch = sealed(ring, 1, 40, NOV)
    w = PgWriter(settings, ring.signing_key().sign)
    await w.start()
    acknowledged = 0
    for i in range(0, 20, 5):  # acknowledged: committed on the primary and flushed by the sync standby
        await w.commit(batch[i : i + 5])
        acknowledged = i + 5
    await w.checkpoint(NAME, batch[acknowledged - 1].ts + 1)

    primary.kill()
    with pytest.raises(JournalError):  # the batch in flight fails closed: E501 for its senders
        await w.commit(batch[acknowledged : acknowledged + 5])
    standby.promote()
    assert w.last_seq in (acknowledged, acknowledged + 5)  # the truth, as far as it could be read
    # the caller re-numbers from what the writer says is durable (as the Journal does); the
    # writer reconnects within this call, to the promoted server
    await w.commit(batch[w.last_seq : w.last_seq + 5])
    assert w.last_seq >= acknowledged + 5
    await w.commit(batch[w.last_seq : 40])
    cp = await w.checkpoint(NAME, batch[-1].ts + 1)
    assert cp is not None and cp.tree_size == 40
    await w.close()

    r = PgReader(settings)
    try:
        seqs = [rec.seq for p in r.periods() for rec in r.records(p)]
        assert seqs == list(range(1, 41))  # every acknowledged record, none twice, no hole
        res = verify(r, ring, name=NAME)
        assert res.ok, res.problems
        assert (res.records, res.checkpoints) == (40, 2)
    finally:
        r.close()
