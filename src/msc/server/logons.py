"""The logon gate: how many password checks run at once, and who waits for one (issue 14 item 5).

A password check is one scrypt KDF (``[switch] password_cost``, ~0.1 s of a core at 15). Without a
bound, 50 connections guessing kept every core busy and queued every real operator's logon behind
their guesses (0.7–2.5 s instead of 0.1 s). The gate:

* runs at most ``max_logon_checks`` checks at once (default: the CPUs, at most 4 — the switch's
  own KDF threads);
* lets at most ``logon_queue`` more wait, **best first** (the key the caller gives:
  :meth:`msc.mnemonics.throttle.AddressAttempts.priority` — known addresses, then fewest recent
  failures), the oldest first among equals; when the queue is full, whichever of the newcomer and
  the worst waiter sorts last is refused;
* refuses a waiter that has not started within ``logon_wait_s``;
* keeps one of the slots (when there are two or more) for **known** addresses — keys whose first
  element is 0 (an address that logged on successfully recently): logons from anywhere else use
  at most ``checks - 1`` at once, so a flood from new or failing addresses leaves a core for the
  operators who log on every day.

Checks for addresses that are not known run in threads of lower CPU priority (Linux: nice 10 for
those threads only, :func:`lower_priority`): while they wait for a core, the event loop, the
journal writer and known operators' checks get it first.

A refused logon raises :class:`Busy`: the caller answers ``E307`` (try again) — it was not checked,
so it says nothing about the account and counts as no attempt of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


#: How much lower the CPU priority of checks for addresses not known is (nice increment).
UNKNOWN_NICE = 10


def lower_priority() -> None:
    """A ThreadPoolExecutor initializer: this worker thread runs at ``nice + UNKNOWN_NICE``. On
    Linux a thread has its own nice value (setpriority with the thread's id); elsewhere nothing is
    changed (there the call would name a process)."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + UNKNOWN_NICE))


class Busy(Exception):
    """No check slot within the bounds: answer E307."""


class LogonGate:
    def __init__(self, executor: Executor, *, checks: int, queue: int, wait_s: float, metrics: Any = None,
                 low_executor: Executor | None = None) -> None:
        """``executor`` runs the checks of known addresses; ``low_executor`` (default: the same)
        the others (made with ``initializer=lower_priority``)."""
        self.executor = executor
        self.low_executor = low_executor or executor
        self.checks = checks
        self.queue = queue
        self.wait_s = wait_s
        self.metrics = metrics
        self.running = 0
        self.running_unknown = 0  # of them, for keys whose first element is not 0
        self._heap: list[tuple[Any, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._waiting = 0

    def configure(self, *, checks: int, queue: int, wait_s: float) -> None:
        self.checks, self.queue, self.wait_s = checks, queue, wait_s
        self._wake()

    def _room(self, key: Any) -> bool:
        if self.running >= self.checks:
            return False
        known = isinstance(key, tuple) and key and key[0] == 0
        return known or self.running_unknown < max(1, self.checks - 1)

    def _take_slot(self, key: Any) -> None:
        self.running += 1
        if not (isinstance(key, tuple) and key and key[0] == 0):
            self.running_unknown += 1

    async def run(self, key: Any, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the executor once a check slot is free (``key``: lower first;
        a tuple whose first element is 0 may use the slot kept for known addresses)."""
        if self._waiting or not self._room(key):
            await self._wait(key)  # the slot is taken for it when it is granted
        else:
            self._take_slot(key)
        self._gauges()
        known = isinstance(key, tuple) and key and key[0] == 0
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor if known else self.low_executor,
                                                                    lambda: fn(*args))
        finally:
            self.running -= 1
            if not (isinstance(key, tuple) and key and key[0] == 0):
                self.running_unknown -= 1
            self._wake()

    async def _wait(self, key: Any) -> None:
        fut = asyncio.get_running_loop().create_future()
        entry = (key, next(self._seq), fut)
        if self._waiting >= self.queue:
            worst = max((e for e in self._heap if not e[2].done()), default=None, key=lambda e: (e[0], e[1]))
            if worst is None or (worst[0], worst[1]) < (key, entry[1]):
                self._refused("queue")
                raise Busy("queue full")
            worst[2].set_exception(Busy("queue full"))
            self._waiting -= 1
            self._refused("queue")
        if len(self._heap) > 2 * (self.queue + self.checks):
            self._heap = [e for e in self._heap if not e[2].done()]  # drop the refused and gone
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, entry)
        self._waiting += 1
        self._wake()  # it may go at once: a slot kept for known addresses, and it is one
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except TimeoutError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return  # granted at the last moment: keep the slot
            if not fut.done():
                fut.cancel()
                self._waiting -= 1
            self._refused("wait")
            self._gauges()
            raise Busy("waited too long") from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.running -= 1  # granted, but the caller is gone: give the slot back
                if not (isinstance(key, tuple) and key and key[0] == 0):
                    self.running_unknown -= 1
                self._wake()
            elif not fut.done():
                fut.cancel()
                self._waiting -= 1
            raise
        # (a Busy set by a newcomer that took this waiter's place propagates from here)

    def _wake(self) -> None:
        while self.running < self.checks and self._heap:
            key, _seq, fut = self._heap[0]
            if fut.done():
                heapq.heappop(self._heap)
                continue  # refused or gone (already uncounted)
            if not self._room(key):
                break  # the best waiter is not known and the rest is kept for known addresses
            heapq.heappop(self._heap)
            self._waiting -= 1
            self._take_slot(key)
            fut.set_result(None)
        if not self._waiting:
            self._heap.clear()
        self._gauges()

    def _refused(self, why: str) -> None:
        if self.metrics is not None:
            self.metrics.logon_throttled.labels(why).inc()

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.logon_checks.labels("running").set(self.running)
            self.metrics.logon_checks.labels("waiting").set(self._waiting)
