"""What a terminal of a pair's node past its lease is told (newcomer8: ``E501 JOURNAL UNAVAILABLE``
read as a database fault when the node had lost its lease; PROTOCOL.md §6 E501): every message
whose commit the fence refused — a query, an administrative message, a LOGOFF — gets
``E501 NODE NO LONGER ACTIVE, NOTHING WAS FORWARDED``; a journal that fails for itself keeps
``E501 JOURNAL UNAVAILABLE, NOTHING WAS FORWARDED``.

The lease is played by the writer's local fence (msc.server.node.FencedWriter, as ``msc serve``
installs it on a pair's node); SQLite stands in for the journal's database.
"""

from __future__ import annotations

import pytest

from msc.server.node import FencedWriter
from tests.faults import FaultyWriter

pytestmark = pytest.mark.timeout(120)

MESSAGES = ["ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101", "ICS1.AM.CA0130000.ICS2.TXT SHIFT CHANGE", "ICS1.LOGOFF"]


class Lease:
    def __init__(self) -> None:
        self.held = True

    def check(self) -> None:
        if not self.held:
            raise RuntimeError("node msc-a no longer holds the lease")


async def fenced_operator(harness):
    await harness.start_stub()
    sw = await harness.start_switch()
    lease = Lease()
    faults = FaultyWriter.install(sw.journal)
    sw.journal.writer = FencedWriter(faults, lease.check)
    await harness.wait_upstream()
    return await harness.operator("ICS1", "TS0001"), lease, faults


@pytest.mark.parametrize("text", MESSAGES, ids=["query", "admin", "logoff"])
async def test_a_message_the_fence_refused_is_told_the_node_is_no_longer_active(harness, text):
    c, lease, _ = await fenced_operator(harness)
    lease.held = False
    reply = await c.send(text)
    assert (reply.type, reply.text) == ("N", "E501 NODE NO LONGER ACTIVE, NOTHING WAS FORWARDED"), reply
    assert not any(text.split(".", 1)[1] in line for line in harness.stub_log())  # nothing forwarded


@pytest.mark.parametrize("text", MESSAGES, ids=["query", "admin", "logoff"])
async def test_a_journal_that_fails_for_itself_is_still_journal_unavailable(harness, text):
    c, _, faults = await fenced_operator(harness)
    faults.fail_commits = True  # the lease is held: the disk fails
    reply = await c.send(text)
    assert (reply.type, reply.text) == ("N", "E501 JOURNAL UNAVAILABLE, NOTHING WAS FORWARDED"), reply
