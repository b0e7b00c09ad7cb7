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
* refuses a waiter that has not started within ``logon_wait_s``.

A refused logon raises :class:`Busy`: the caller answers ``E307`` (try again) — it was not checked,
so it says nothing about the account and counts as no attempt of it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """No check slot within the bounds: answer E307."""


class LogonGate:
    def __init__(self, executor: Executor, *, checks: int, queue: int, wait_s: float, metrics=None) -> None:
        self.executor = executor
        self.checks = checks
        self.queue = queue
        self.wait_s = wait_s
        self.metrics = metrics
        self.running = 0
        self._heap: list[tuple[Any, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._waiting = 0

    def configure(self, *, checks: int, queue: int, wait_s: float) -> None:
        self.checks, self.queue, self.wait_s = checks, queue, wait_s
        self._wake()

    async def run(self, key: Any, fn: Callable[..., T], *args) -> T:
        """Run ``fn(*args)`` in the executor once a check slot is free (``key``: lower first)."""
        if self.running >= self.checks or self._waiting:
            await self._wait(key)
        else:
            self.running += 1
        self._gauges()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args))
        finally:
            self.running -= 1
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
        self._gauges()
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except asyncio.TimeoutError:
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
                self._wake()
            elif not fut.done():
                fut.cancel()
                self._waiting -= 1
            raise
        # (a Busy set by a newcomer that took this waiter's place propagates from here)

    def _wake(self) -> None:
        while self.running < self.checks and self._heap:
            _key, _seq, fut = heapq.heappop(self._heap)
            if fut.done():
                continue  # refused or gone (already uncounted)
            self._waiting -= 1
            self.running += 1
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
