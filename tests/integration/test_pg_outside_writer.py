"""A process outside the switch that journals (the ``msc`` command, the web console: an ``ADMIN``
or logon record) while the switch runs on PostgreSQL and its connection to the database is down
(a restart, a failover, a network cut) — the writer lock (a session advisory lock on that
connection) is free for that moment.

Before: :func:`msc.actions.journaling.record` opened the journal *directly first*, and went to
the switch's control socket only when that was refused. In the window it wrote its records itself,
a second writer beside the running switch; the switch's next commit found them
(``journal.commit_failed: the batch starts at 4 but the journal ends at 6``), took them for its
own batch having landed — its senders told ``landed`` sequence numbers that were not theirs — and
then journaled ``JOURNAL RECORDS SEQ/4-6 WERE WRITTEN WHILE COMMITS REPORTED I/O ERRORS …`` about
records it had not written: a false statement in the legal record.

Now (1) the record goes through the running switch whenever it answers on its control socket;
and (2) a switch that still meets records it did not write (a process that did not follow that
rule: a command on another machine, an older version) tells them from its own batch by their
content: its senders get a plain ``E501``, no landed claim is made, the next sequence number
follows the foreign records, and the journal says plainly which records another process wrote.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import structlog

from msc.actions import journaling
from msc.journal.records import Entry, JournalError, Kind
from msc.journal.verify import verify
from msc.storage.backends import Backends
from tests.integration import test_pg_storage_outage as outage

cluster, site = outage.cluster, outage.site  # the fixtures: a switch (one node) on a PostgreSQL of its own
pytestmark = pytest.mark.timeout(300)

LANDED_WORDS = "WERE WRITTEN WHILE COMMITS REPORTED I/O ERRORS"


async def journal_texts(sw) -> dict[int, str]:
    j = sw.journal
    return await j.texts(list(range(1, j.last_seq + 1)))


def verified(settings) -> None:
    with Backends(settings).journal_source() as src:
        res = verify(src, Backends(settings).keyring(), name=settings.config.switch.name)
    assert res.ok, res.problems


async def test_a_record_made_outside_while_the_switchs_connection_is_down_goes_through_the_switch(site):
    """The colleague's case: the database stopped and started under ``msc serve``; ``msc user
    unlock --as …`` (its ADMIN record, :func:`journaling.record`) in the window before the switch
    reconnected. The window is held open here (the switch's writer is kept from reconnecting: its
    own probe would otherwise race the command, as in production) — the command must not write the
    journal itself in it: it waits for the switch, whose answer (a refusal or the sequence numbers
    it committed) it returns."""
    sw = site.switch
    held = await site.operator("ICS1", "TS0001")
    assert await site.message(held) == "A"
    writer = sw.journal.writer
    async with writer._lock:  # the switch's writer: no commit, no probe, no reconnect meanwhile
        site.cluster.stop("fast")
        site.cluster.start()
        outsider = asyncio.ensure_future(asyncio.to_thread(
            journaling.record, sw.settings, [Entry(kind=Kind.ADMIN, user="AD0001", text="UNLOCK TS0002 BY AD0001")]))
        done, _ = await asyncio.wait([outsider], timeout=5)
        assert not done, f"the command wrote the journal itself beside the running switch: {outsider.result()}"
    try:
        seqs = await asyncio.wait_for(outsider, 120)
    except JournalError as exc:  # the switch's commit met the dead connection: refused, said why
        assert "journal" in str(exc), exc
        seqs = []
    await site.until(lambda: sw.readiness()[0], "/readyz 200 again")
    assert await site.message(held) == "A"
    texts = await journal_texts(sw)
    assert not [t for t in texts.values() if LANDED_WORDS in t], texts
    assert [s for s, t in texts.items() if t == "UNLOCK TS0002 BY AD0001"] == seqs  # once, if acknowledged
    verified(sw.settings)


async def test_records_another_process_wrote_while_the_connection_was_down_are_not_taken_for_the_switchs_own(site):
    """A process that does not go through the switch (a command on another machine, an older
    msc) writes two records directly while the switch's connection is down. The switch's next
    commit fails on the dead connection; what the database holds at its batch's numbers is not its
    batch: the sender gets E501 with nothing landed, no E501-landed statement is journaled, the
    next message is numbered after the foreign records, and the journal says once which records
    another process wrote."""
    sw = site.switch
    held = await site.operator("ICS1", "TS0001")
    assert await site.message(held) == "A"
    db = sw.settings.config.storage.dsn.rsplit("/", 1)[1]
    before = sw.journal.last_seq
    landed: list = []
    with structlog.testing.capture_logs() as logs:
        async with sw.journal.writer._lock:
            outage.terminate_sessions(site.cluster, db)
            foreign = await asyncio.to_thread(lambda: asyncio.run(journaling._direct(sw.settings, [
                Entry(kind=Kind.ADMIN, user="AD0009", text="WRITTEN ELSEWHERE 1"),
                Entry(kind=Kind.ADMIN, user="AD0009", text="WRITTEN ELSEWHERE 2")])))
        assert foreign == [before + 1, before + 2]
        fut = sw.journal.submit([Entry(kind=Kind.ADMIN, text="THE SWITCH'S OWN")])
        with contextlib.suppress(JournalError):
            await asyncio.wait_for(fut, 60)
        if fut.exception() is not None:
            landed = getattr(fut.exception(), "landed", [])
        assert landed == [], f"the switch took another process's records for its own: {landed}"
        await site.until(lambda: sw.readiness()[0], "/readyz 200 again")
        assert await site.message(held) == "A"
        await sw.journal.flush()
    texts = await journal_texts(sw)
    assert texts[before + 1] == "WRITTEN ELSEWHERE 1" and texts[before + 2] == "WRITTEN ELSEWHERE 2"
    assert not [t for t in texts.values() if LANDED_WORDS in t], texts
    said = [t for t in texts.values() if "WRITTEN BY ANOTHER PROCESS" in t]
    assert len(said) == 1 and f"SEQ/{before + 1}-{before + 2}" in said[0], said
    own = [s for s, t in texts.items() if t == "THE SWITCH'S OWN"]
    # refused (the batch that met the foreign records): not in the journal; else after them, once
    assert own == ([] if fut.exception() is not None else fut.result()) and all(s > before + 2 for s in own), own
    events = [e for e in logs if e.get("event") == "journal.foreign_records"]
    assert [(e["first"], e["last"]) for e in events] == [(before + 1, before + 2)], events
    verified(sw.settings)
