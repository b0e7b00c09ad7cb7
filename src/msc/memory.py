"""Giving memory back to the system after a burst (issue 14: memory "returns after the queue drains").

Queued output texts wait in the journal (:mod:`msc.routing.delivery`), and every pipeline that
holds messages in memory is bounded (a session's and an upstream link's messages awaiting their
commit, read-back batches). What a burst still leaves behind is *freed* memory the C allocator
keeps: glibc returns free memory to the system only from the top of its heaps, so a few
long-lived objects allocated during a burst (a queued output's bookkeeping, a session) pin
megabytes of freed message buffers below them; and buffers freed by another thread stay in that
thread's arena. ``malloc_trim(0)`` (glibc ≥ 2.8) releases the free pages anywhere in every arena
(``madvise(MADV_DONTNEED)``), which the allocator does not do by itself.

Measured with ``bench/queue_bench.py`` (notes/queues.md): without it, 3,000 administrative
messages of 30 kB queued and drained left `msc serve` ~20 MB above its pre-burst size; with it,
within a few percent. So the switch calls :meth:`Trimmer.check` every few seconds: when the
resident size grew by ``threshold`` bytes since the last trim (a burst), it trims once; steady
use that keeps the memory (more sessions, a deeper queue) does not trigger it again until it
grows further. A trim of a heap of a few hundred MB takes milliseconds on the event loop.

Python's own small-object allocator (pymalloc) returns an arena only when all of it is free;
nothing here changes that — the bounds above keep the number of objects a burst can create small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from typing import Any

#: Resident bytes above the process's lowest that make a trim due: this many, or this fraction of
#: the lowest, whichever is more.
TRIM_MIN_BYTES = 4 * 1024 * 1024
TRIM_FRACTION = 0.05
#: After a trim that gave back less than a quarter of the threshold (the memory is in use: more
#: sessions, deeper queues), the next waits twice as long as the last wait, at most this long.
TRIM_BACKOFF_MAX_S = 60.0

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _load_malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, or not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _load_malloc_trim()


# glibc mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: The allocator settings ``msc serve`` starts with (see :func:`tune_allocator`).
ARENA_MAX = 2
TRIM_THRESHOLD = 2 * 1024 * 1024
MMAP_THRESHOLD = 1024 * 1024


def tune_allocator() -> bool:
    """Settle glibc's allocator for a long-running server whose load comes in bursts (mallopt(3)).

    By default glibc raises its trim and mmap thresholds each time a large block is freed (up to
    64 MB and 32 MB), and gives every thread that allocates its own arena; the top of a
    thread's arena is given back only when a free leaves more than the trim threshold there,
    and ``malloc_trim`` does not cut it. After a burst of 30 kB administrative messages, one
    worker thread's arena was found holding 31 MB, all free, ~16 MB of it resident, for good
    (notes/queues.md). Fixed thresholds (an unused top beyond 2 MiB goes back on free; blocks
    of 1 MiB and more are mapped and unmapped on their own) and two arenas (the event loop's and
    one for every worker thread, which mostly wait for the GIL anyway) keep what a burst leaves
    behind small. Returns False where there is no glibc (nothing is changed)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, ARENA_MAX) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    ok &= mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(ok)


def resident_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``), 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class Trimmer:
    """Give freed C-heap memory back when the resident size is well above the process's lowest.

    ``check()`` is cheap (one read of /proc/self/statm); it trims when the resident size is
    ``threshold`` above the lowest seen. A trim walks the allocator's free lists (a few
    milliseconds after a burst on a heap of ~100 MB; ~0.5 s on a 2 GB heap of a million free
    chunks), so one that gives little back — the memory is in use — makes the next wait twice
    as long (up to :data:`TRIM_BACKOFF_MAX_S`); one that gives back memory lets the next come at
    the next check.
    """

    def __init__(self, *, min_bytes: int = TRIM_MIN_BYTES, fraction: float = TRIM_FRACTION,
                 metrics: Any = None, clock=time.monotonic) -> None:
        self.min_bytes = min_bytes
        self.fraction = fraction
        self.metrics = metrics
        self.clock = clock
        self.available = _malloc_trim is not None
        self.floor = resident_bytes()  # the lowest resident size seen
        self._wait = 0.0
        self._next = 0.0
        self._soon = False

    @property
    def due_soon(self) -> bool:
        """:meth:`soon` was called and the trim it asked for has not run yet."""
        return self._soon

    def soon(self) -> None:
        """Memory was just freed in bulk (the delivery queues drained): the next :meth:`check`
        trims if the resident size is above the threshold, whatever the back-off says."""
        self._soon = True
        self._next = 0.0

    def threshold(self) -> int:
        return max(self.min_bytes, int(self.floor * self.fraction))

    def check(self) -> tuple[int, int, float] | None:
        """Trim if due. Returns (resident bytes before, after, seconds taken) when it trimmed."""
        rss = resident_bytes()
        if rss:
            self.floor = min(self.floor, rss)
        threshold = self.threshold()
        now = self.clock()
        self._soon = False
        if not self.available or rss - self.floor < threshold or now < self._next:
            return None
        t0 = time.perf_counter()
        _malloc_trim(0)
        took = time.perf_counter() - t0
        after = resident_bytes()
        self.floor = min(self.floor, after)
        if rss - after < threshold // 4:
            self._wait = min(max(self._wait * 2, 5.0), TRIM_BACKOFF_MAX_S)
        else:
            self._wait = 0.0
        self._next = now + self._wait
        if self.metrics is not None:
            self.metrics.memory_trims.inc()
            self.metrics.memory_trimmed_bytes.inc(max(0, rss - after))
        return rss, after, took
