"""The month keys a journal needs, made ahead, off the event loop (JOURNAL.md "Encryption").

A journal seals each record under its month's key (:meth:`msc.keyring.KeyRing.period`). Made when
the month's first record is sealed, the key would be made on the event loop — on PostgreSQL one
database round trip, blocking the switch up to the client's bound when the database is away, and
then ``E501`` for that batch. So the journal makes this month's and next month's keys when it
opens, and :class:`MonthKeys` makes the month after at the first tick of each month — about a month
before its first record — and looks every :data:`KEYS_CHECK_S` whether this machine's master key
file still opens the key ring (``msc keys rotate`` on another machine), all in a worker thread.
Making a key is race-free between nodes by the store's own rule (both read back the one stored);
the key made on demand when sealing stays the fallback for a month nothing could prepare.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from msc.keyring import KeyRing, next_period, period_of

#: The key ring's work is done this often (seconds), and at the first tick of each month: this
#: month's and next month's keys made if missing, this machine's master key file checked against
#: the key ring. Also the pause before a failed attempt is tried again.
KEYS_CHECK_S = 60.0


def month_at(clock: Callable[[], float]) -> str:
    """``YYYY-MM`` (UTC) of ``clock()`` (Unix seconds)."""
    return period_of(int(clock() * 1e6))


class MonthKeys:
    """A journal's look at its key ring (see the module docstring). ``clock``: the journal's (Unix
    seconds); ``on_keys(error)``: what each look found (None: the keys of this month and the next
    are in hand and the key ring opens with this machine's master key file)."""

    def __init__(self, keyring: KeyRing, clock: Callable[[], float],
                 on_keys: Callable[[BaseException | None], None] | None = None) -> None:
        self.keyring = keyring
        self.clock = clock
        self.on_keys = on_keys
        self._month: str | None = None  # the month whose keys, and the next month's, are in hand
        self._tried: tuple[str, float] = ("", -KEYS_CHECK_S)  # the last look: its month, monotonic time
        self._task: asyncio.Future[None] | None = None

    def prepare(self) -> str:
        """Make this month's and next month's keys if missing (blocking: the journal calls it in a
        worker thread at its open). Returns this month."""
        month = month_at(self.clock)
        self.keyring.period(month)
        self.keyring.period(next_period(month))
        return month

    def prepared(self, month: str) -> None:
        """:meth:`prepare` of ``month`` succeeded (at the journal's open): told to ``on_keys``."""
        self._month, self._tried = month, (month, time.monotonic())
        if self.on_keys:
            self.on_keys(None)

    def start_if_due(self) -> asyncio.Future[None] | None:
        """Start the look in a worker thread if it is due — the month changed since the last one,
        or :data:`KEYS_CHECK_S` passed — and none is running: this month's and next month's keys,
        then :meth:`msc.keyring.KeyRing.check_usable`. Returns the work started, or None."""
        if self._task is not None and not self._task.done():
            return None
        month, mono = month_at(self.clock), time.monotonic()
        tried_month, tried_at = self._tried
        if mono - tried_at < KEYS_CHECK_S and month in (self._month, tried_month):
            return None
        self._tried = (month, mono)

        def work() -> None:
            self.keyring.period(month)
            self.keyring.period(next_period(month))
            self.keyring.check_usable()

        self._task = task = asyncio.ensure_future(asyncio.to_thread(work))
        task.add_done_callback(lambda t: self._done(month, t))
        return task

    def _done(self, month: str, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._month = month
        if self.on_keys:
            self.on_keys(exc)

    def ready(self) -> bool:
        """Whether this month's and next month's keys (by the clock) are in hand."""
        return self._month == month_at(self.clock)

    def cancel(self) -> None:
        """The journal is closing: a look in flight is not waited for (its thread ends by itself)."""
        if self._task is not None:
            self._task.cancel()
