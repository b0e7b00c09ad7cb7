"""msc.aio: a bounded await and a fired-off task leave nothing for asyncio's exception handler
(newcomer9 F4: "Task exception was never retrieved" with a traceback in the JSON log)."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from msc.aio import bounded, spawn
from tests.loopwatch import settle, watch


async def fails_when_cancelled() -> None:
    """A call whose cancellation ends in another error (a connect that failed in the same turn of
    the loop, a broken connection's rollback)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise ConnectionRefusedError(111, "Connection refused") from None


async def test_bounded_returns_and_times_out():
    async def answer() -> int:
        return 7

    assert await bounded(answer(), 5) == 7
    with pytest.raises(TimeoutError):
        await bounded(asyncio.Event().wait(), 0.01)


async def test_a_bounded_call_cancelled_from_outside_leaves_no_task_behind():
    """The keeper's shape: its task cancelled (the end of the lease's belief) while it awaits a
    call that ends in an error instead — the error is the caller's, nothing is left over.
    (``asyncio.wait_for`` on Python 3.11 left it in a task of its own.)"""
    complaints = watch()
    seen: list[BaseException] = []

    async def caller() -> None:
        try:
            await bounded(fails_when_cancelled(), 30)
        except ConnectionRefusedError as exc:
            seen.append(exc)

    task = asyncio.get_running_loop().create_task(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await settle()
    assert len(seen) == 1 and complaints == []


@pytest.mark.parametrize("ending, logged", [
    ("return", []),
    ("cancel", []),
    ("expected", [("warning", "ConnectionRefusedError: [Errno 111] Connection refused", False)]),
    ("fault", [("error", "KeyError: 'x'", True)]),
])
async def test_a_spawned_tasks_end_is_retrieved_and_said_once(ending, logged):
    complaints = watch()

    async def work() -> None:
        if ending == "expected":
            raise ConnectionRefusedError(111, "Connection refused")
        if ending == "fault":
            raise KeyError("x")
        if ending == "cancel":
            await asyncio.Event().wait()

    with capture_logs() as logs:
        task = spawn(work(), event="router.redirect_failed", expected=(OSError,), mnemonic="ECM1")
        del task  # fired off: nobody keeps it, nobody awaits it
        await settle()
        if ending == "cancel":
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
            await settle()
    said = [(e["log_level"], e["error"], "exc_info" in e) for e in logs if e["event"] == "router.redirect_failed"]
    assert said == logged
    assert all(e["mnemonic"] == "ECM1" for e in logs if e["event"] == "router.redirect_failed")
    assert complaints == []
