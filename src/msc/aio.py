"""Awaiting with a time limit, and tasks fired off, without leaving asyncio anything to report.

asyncio prints what nobody retrieved — "Task exception was never retrieved", with a traceback —
through the loop's exception handler: in msc's JSON log an error line that no runbook lists
(OPERATIONS.md "Logs"). Two ways msc made such tasks (newcomer9 F4: at a step-down during a
database outage, ``PgLease.announce()``'s task ended with ``LeaseUnavailable`` and nobody took
it):

- :func:`asyncio.wait_for` on a coroutine (Python 3.11) runs it as a task of its own. Cancelled
  from outside — the lease keeper at the end of its belief, a process ending —, it cancels that
  task and waits for it, but if the task ends with an exception instead (its own awaited call
  failed in the same turn of the loop, a broken connection's rollback raised instead of the
  cancellation), wait_for raises ``CancelledError`` and leaves the exception in the task.
  :func:`bounded` runs the coroutine in the caller's task under :func:`asyncio.timeout`: whatever
  it ends with is the caller's.
- ``loop.create_task(coro)`` fired off and forgotten: an exception it ends with is never
  retrieved (and the loop holds only a weak reference to it). :func:`spawn` keeps the task until
  it ends and says what it ended with: an expected failure (a database away) as one warning
  line, anything else as an error with its traceback (a fault of msc).

Pure asyncio and structlog: importable from every msc package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from msc.reasons import explain

T = TypeVar("T")

#: Tasks :func:`spawn` started and that have not ended (the event loop keeps only weak references).
_running: set[asyncio.Task[Any]] = set()


async def bounded(coro: Coroutine[Any, Any, T], timeout_s: float | None) -> T:
    """``await coro``, ``TimeoutError`` after ``timeout_s`` seconds (None: no limit) — in the
    calling task, unlike Python 3.11's :func:`asyncio.wait_for` (module docstring)."""
    async with asyncio.timeout(timeout_s):
        return await coro


def spawn(coro: Coroutine[Any, Any, Any], *, event: str, expected: tuple[type[BaseException], ...] = (),
          name: str | None = None, logger: Any = None, **context: Any) -> asyncio.Task[Any]:
    """Run ``coro`` as a task nobody awaits. Its end is retrieved: cancelled, or returned, says
    nothing; an exception in ``expected`` is logged as ``event`` at warning with its reason
    (``error``) and ``context``, no traceback; any other exception as ``event`` at error with its
    traceback."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)

    def ended(t: asyncio.Task[Any]) -> None:
        _running.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            return
        log = logger if logger is not None else structlog.get_logger("msc")
        if isinstance(exc, expected):
            log.warning(event, error=explain(exc), **context)
        else:
            log.error(event, error=explain(exc), exc_info=exc, **context)

    task.add_done_callback(ended)
    return task
