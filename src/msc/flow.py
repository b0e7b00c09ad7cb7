"""Flow control on an asyncio transport, written once for client sessions and upstream links.

:class:`Outbox` coalesces writes: frames written in one event-loop iteration leave in one
``transport.write()`` — one syscall instead of one per frame, the relay's main cost
(PERFORMANCE.md) — and it knows whether the transport asked us to stop writing
(``pause_writing``/``resume_writing``, the high-water mark, STYLE.md "Backpressure"). Reading is
paused and resumed with :meth:`Outbox.pause_reading`/:meth:`Outbox.resume_reading`, each once,
and never on a closing transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Outbox:
    """The write side (and the read switch) of one connection's transport."""

    __slots__ = ("transport", "last_tx", "write_paused", "read_paused", "eof_sent", "_buf", "_clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.transport: asyncio.Transport | None = None
        self.last_tx = clock()
        self.write_paused = False  # the transport's buffer is over its high-water mark
        self.read_paused = False
        self.eof_sent = False  # write_eof() was called: nothing more can be written
        self._buf: list[bytes] = []
        self._clock = clock

    @property
    def open(self) -> bool:
        t = self.transport
        return t is not None and not t.is_closing()

    def write(self, data: bytes) -> bool:
        """Queue ``data``; it leaves with everything else queued in this loop iteration.
        False if the transport is gone or closing (nothing was queued)."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        self._buf.append(data)
        if len(self._buf) == 1:
            asyncio.get_running_loop().call_soon(self.flush)
        return True

    def flush(self) -> None:
        buf, self._buf = self._buf, []
        t = self.transport
        if buf and t is not None and not t.is_closing() and not self.eof_sent:
            t.write(buf[0] if len(buf) == 1 else b"".join(buf))
            self.last_tx = self._clock()

    def pause_reading(self) -> bool:
        """Stop reading (True if this paused it)."""
        t = self.transport
        if t is None or self.read_paused or t.is_closing():
            return False
        self.read_paused = True
        t.pause_reading()
        return True

    def resume_reading(self) -> bool:
        """Read again (True if this resumed it)."""
        t = self.transport
        if t is None or not self.read_paused or t.is_closing():
            return False
        self.read_paused = False
        t.resume_reading()
        return True

    def close(self) -> None:
        """Write what is queued, then close."""
        self.flush()
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
