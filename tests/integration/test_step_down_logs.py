"""A pair's node that steps down gives the journal up on purpose: its log says once, at info, what
it leaves to the next active node — no ``journal.checkpoint_failed`` or ``journal.purge_failed``
error for the checkpoint its fence refused or the retention run cut short (newcomer7: both were
logged as errors on every step-down, and an alert on either fired at each failover). In normal
service a checkpoint failure stays an error, and its all-clear says how many it then signed.

The lease is played by the writer's local fence (msc.server.node.FencedWriter, as ``msc serve``
installs it on a pair's node); SQLite stands in for the journal's database.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from msc.journal.records import Entry, JournalError, JournalFenced
from msc.server.node import FencedWriter
from tests.faults import FaultyWriter

pytestmark = pytest.mark.timeout(120)


class Lease:
    def __init__(self) -> None:
        self.held = True

    def check(self) -> None:
        if not self.held:
            raise RuntimeError("node msc-a no longer holds the lease")


def errors(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e.get("log_level") in ("error", "critical")]


async def fenced_switch(harness):
    sw = await harness.start_switch()
    lease = Lease()
    faults = FaultyWriter.install(sw.journal)  # under the fence: the checkpoint's own faults
    sw.journal.writer = FencedWriter(faults, lease.check)
    return sw, lease, faults


async def test_a_step_down_leaves_the_unsigned_tail_with_one_info_line_and_no_error(harness):
    sw, lease, _ = await fenced_switch(harness)
    await sw.journal.checkpoint()
    for text in ("a", "b", "c"):
        await sw.journal.append(Entry(kind="RECEIVED", text=text))
    unsigned = sw.journal.unsigned_tail
    assert unsigned >= 3
    lease.held = False  # the node was paused past its lease: it finds out at its next write
    with capture_logs() as logs:
        with pytest.raises(JournalFenced):
            await sw.journal.checkpoint()
        sw.step_down("the lease was not renewed in time")
        with pytest.raises(JournalError):
            await sw.journal.checkpoint()  # refused still (the tick may try once more): quiet
    assert [e["event"] for e in errors(logs)] == ["node.stepped_down"], errors(logs)
    [handed] = [e for e in logs if e["event"] == "journal.handed_over"]
    assert handed["log_level"] == "info" and handed["unsigned"] == unsigned
    assert "next active" in handed["note"]


async def test_a_step_down_with_everything_signed_says_so(harness):
    sw, lease, _ = await fenced_switch(harness)
    await sw.journal.append(Entry(kind="RECEIVED", text="a"))
    await sw.journal.checkpoint()
    await sw.journal.flush()
    await sw.journal.checkpoint()  # the first checkpoint's own record signed too
    lease.held = False
    with capture_logs() as logs:
        sw.step_down("a commit was fenced")
    [handed] = [e for e in logs if e["event"] == "journal.handed_over"]
    assert handed["unsigned"] == 0 and handed["note"] == "every committed record is signed"


# A retention run's failure: an error in normal service, nothing after a step-down (its reads are
# cut by the step-down) or when its own write was fenced.
RETENTION_FAILURES = [
    (JournalError("journal database: ConnectionAbortedError: this node stepped down"), True, False),
    (JournalFenced("not written: node msc-a no longer holds the lease"), False, False),
    (JournalError("journal commit failed: no answer from the database within 5 s"), False, True),
    (JournalError("journal database: OSError: [Errno 28] No space left on device"), False, True),
]


@pytest.mark.parametrize("exc, stepped_down, logged", RETENTION_FAILURES,
                         ids=["cut-by-step-down", "fenced", "db-timeout", "disk-full"])
async def test_retention_failure_is_an_error_only_in_normal_service(harness, monkeypatch, exc, stepped_down, logged):
    sw, _, _ = await fenced_switch(harness)

    async def purge(*_a, **_k):
        raise exc

    monkeypatch.setattr(sw.journal, "purge", purge)
    if stepped_down:
        sw.step_down("the lease was not renewed in time")
    with capture_logs() as logs:
        assert await sw.run_retention() == []
    assert bool([e for e in errors(logs) if e["event"] == "journal.purge_failed"]) is logged, logs


async def test_a_checkpoint_failing_in_service_is_an_error_and_its_all_clear_counts_what_it_signed(harness):
    sw, _, faults = await fenced_switch(harness)
    await sw.journal.checkpoint()
    await sw.journal.flush()
    signed_before = sw.journal.tree_size
    faults.fail_checkpoints = True
    with capture_logs() as logs:
        for text in ("a", "b"):
            await sw.journal.append(Entry(kind="RECEIVED", text=text))
        with pytest.raises(JournalError):
            await sw.journal.checkpoint()
        faults.fail_checkpoints = False
        cp = await sw.journal.checkpoint()
    assert cp is not None
    [failed] = [e for e in logs if e["event"] == "journal.checkpoint_failed"]
    assert failed["log_level"] == "error" and failed["unsigned"] >= 2
    [clear] = [e for e in logs if e["event"] == "journal.checkpoint_recovered"]
    assert clear["log_level"] == "info"
    assert clear["signed"] == cp.tree_size - signed_before >= 2 and clear["unsigned"] == 0


async def test_a_listener_opened_after_a_step_down_during_the_start_accepts_nobody(harness, monkeypatch):
    """The lease lost while a taking-over node starts — after its START record, as its listeners
    open (issue 16: the keeper's deadline timer steps down whatever the node awaits): step_down
    closed what was open then; a listener bound after it is closed at once, so no terminal is
    accepted by a node that no longer believes it is active, and /readyz stays 503."""
    import socket

    from msc.server.switch import Switch
    from tests.conftest import free_port

    listen = Switch._listen

    async def lost_first(self, lc, **kw):
        if self.stepped_down is None:
            self.step_down("the lease was not renewed in time")
        return await listen(self, lc, **kw)

    monkeypatch.setattr(Switch, "_listen", lost_first)
    port = free_port()
    sw = await harness.start_switch(port=port)  # the terminals' listener
    assert sw.listeners and sw.stepped_down is not None
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.1", port)) != 0, "a terminal was accepted by a node that stepped down"
    ready, reasons = sw.readiness()
    assert not ready and reasons.get("role") == "standby"
