"""``msc serve``: the one place that creates the event loop (uvloop) and owns signals."""

from __future__ import annotations

import asyncio
import signal

import structlog
import uvloop

from msc.config.load import Settings
from msc.server.switch import Switch

log = structlog.get_logger("msc.serve")
SWITCH_INTERVAL_S = 0.0005


async def run(settings: Settings, *, ready_file: str | None = None) -> int:
    switch = Switch(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(switch.reload()))
    await switch.start()
    if ready_file:
        with open(ready_file, "w") as fh:
            fh.write("ready\n")
    await stop.wait()
    log.info("switch.stopping")
    await switch.drain()
    return 0


def serve(settings: Settings, *, ready_file: str | None = None) -> int:
    import sys

    # The journal writer thread needs the GIL briefly per batch; with CPython's default 5 ms
    # switch interval it can wait that long behind the event loop, on every commit.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Before any worker thread exists: what bursts leave in the allocator goes back (issue 14).
    from msc.memory import tune_allocator

    tune_allocator()
    return uvloop.run(run(settings, ready_file=ready_file))
