"""What reaches the running event loop's exception handler — where asyncio's "never retrieved"
and "Exception in callback" tracebacks come from — for tests that a path leaves nothing there."""

from __future__ import annotations

import asyncio
import gc


def watch() -> list[dict]:
    """From now on, what reaches the running loop's exception handler, in a list (a test asserts
    it stays empty)."""
    seen: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    return seen


async def settle() -> None:
    """A few turns of the loop, a collection (a dropped task's exception is reported when it is
    collected), and a few turns more."""
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    for _ in range(5):
        await asyncio.sleep(0)
