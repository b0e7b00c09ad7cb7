"""One delivery endpoint's queue, in memory (PROTOCOL.md §5): the :class:`Output` being made or
sent, the endpoint's :class:`Outbox` of waiting outputs as parallel arrays (no Python object
per output), and :class:`EndpointState` (its OSN counter, outbox, session, reservations, texts
held). The data only: :class:`msc.routing.delivery.Delivery` decides what goes in and out.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Output:
    """One output of one endpoint. Only what finds it stays in memory while it waits: its text is
    in the journal (record ``seq``) and is read back when it is sent."""

    endpoint: str
    osn: int
    mnemonic: str
    #: The bytes to send, only in transit: from the maker to :meth:`Delivery.deliver` (which takes
    #: them), or to :attr:`Delivery.on_oversize`. None while the output waits.
    payload: bytes | None
    txn: str | None = None
    created: float = field(default_factory=time.time)
    seq: int = 0  # the journal record that created it (its text is read back from there)
    size: int = 0  # bytes of the payload; 0 until known (restored after a restart)
    sent: bool = False
    queued_recorded: bool = False
    category: str | None = None
    cori: tuple[str | None, str | None, str | None] = (None, None, None)  # purpose, requester, recipient
    started: float | None = None  # perf_counter of the request's acceptance (latency metric)
    on_done: Callable[[Output], None] | None = None
    #: The operator whose request it answers, kept only on an output that goes to another station
    #: than the asker's (a pooled mnemonic's fate at its pool's printer, PROTOCOL.md §4): the
    #: records of its delivery name them, as no one is logged on at a printer. None otherwise.
    user: str | None = None



# Flags of an output in an Outbox.
PRESENT, SENT, QUEUED = 1, 2, 4
#: A hole-compaction of an outbox happens once its arrays hold this many more slots than outputs.
COMPACT_SLACK = 1024
_CLEAR_SENT = bytes(f & ~SENT for f in range(256))


class Outbox:
    """The outputs of one endpoint, oldest first, as parallel arrays: no Python object per output.

    Bursts leave nothing behind this way: Python's small-object allocator gives a 1 MiB arena
    back only when every object in it is gone, and a queue of 10,000 outputs made of objects
    (an Output, its OSN, sequence number, time and txn) scattered among a burst's transient
    objects kept ~8 MB of arenas after the queue had drained (bench/queue_bench.py). An output
    here is 38 bytes of arrays; only what is not the switch's own (a txn of an earlier run, the
    CORI fields of an answer, the latency callback of a request's first part) is kept as
    objects, in :attr:`meta`.

    Positions: ``xosn`` (the OSN extended with its wrap-around epoch, increasing) is sorted, so
    an output is found by bisection; a removed output leaves a hole that is trimmed from the head
    at once and compacted away once holes outnumber outputs (:data:`COMPACT_SLACK`). ``cursor``:
    every present output before it has been written to the attached session.
    """

    __slots__ = ("xosn", "seq", "size", "created", "txn", "mn", "flags", "meta", "mnemonics", "head", "count",
                 "cursor")

    def __init__(self) -> None:
        self.xosn = array("Q")
        self.seq = array("Q")
        self.size = array("L")
        self.created = array("d")
        self.txn = array("Q")  # the switch's own txn counter + 1 (see Delivery._txn_code); 0: in meta or none
        self.mn = array("H")  # index into mnemonics
        self.flags = bytearray()
        self.meta: dict[int, tuple] = {}  # xosn → (txn, cori, category, started, on_done, user)
        self.mnemonics: list[str] = []
        self.head = 0
        self.count = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.count

    def add(self, xosn: int, seq: int, size: int, created: float, mnemonic: str, txn_code: int,
            meta: tuple | None, flags: int = PRESENT) -> None:
        try:
            mn = self.mnemonics.index(mnemonic)
        except ValueError:
            mn = len(self.mnemonics)
            self.mnemonics.append(mnemonic)
        if meta is not None:
            self.meta[xosn] = meta
        self.count += 1
        if not self.xosn or xosn > self.xosn[-1]:  # outputs are committed in OSN order: the usual case
            self.xosn.append(xosn)
            self.seq.append(seq)
            self.size.append(size)
            self.created.append(created)
            self.txn.append(txn_code)
            self.mn.append(mn)
            self.flags.append(flags)
            return
        i = bisect_left(self.xosn, xosn)
        for arr, v in ((self.xosn, xosn), (self.seq, seq), (self.size, size), (self.txn, txn_code), (self.mn, mn)):
            arr.insert(i, v)
        self.created.insert(i, created)
        self.flags.insert(i, flags)
        self.head = min(self.head, i)
        if self.cursor > i:
            self.cursor = i  # not sent yet
        else:
            self.cursor = min(self.cursor, len(self.flags))

    def find(self, xosn: int) -> int:
        """The position of a present output, or -1."""
        i = bisect_left(self.xosn, xosn, self.head)
        if i < len(self.xosn) and self.xosn[i] == xosn and self.flags[i]:
            return i
        return -1

    def next_present(self, i: int) -> int:
        """The first present position at or after ``i``, or -1."""
        flags, n = self.flags, len(self.flags)
        i = max(i, self.head)
        while i < n and not flags[i]:
            i += 1
        return i if i < n else -1

    def positions(self) -> Iterator[int]:
        """Present positions, oldest first (do not remove while iterating)."""
        flags = self.flags
        for i in range(self.head, len(flags)):
            if flags[i]:
                yield i

    def remove(self, i: int) -> None:
        """Remove the output at ``i``; positions stay valid until :meth:`compact`."""
        self.flags[i] = 0
        self.count -= 1
        self.meta.pop(self.xosn[i], None)
        if i == self.head:
            flags, n, h = self.flags, len(self.flags), self.head
            while h < n and not flags[h]:
                h += 1
            self.head = h
            self.cursor = max(self.cursor, h)

    def compact(self) -> None:
        """Drop holes once they outnumber the outputs (amortised O(1) per removal). Positions
        change: call only where no position is held."""
        n = len(self.flags)
        if n - self.count <= max(COMPACT_SLACK, self.count):
            return
        keep = [i for i in range(self.head, n) if self.flags[i]]
        cursor = sum(1 for i in keep if i < self.cursor)
        # In place: the array objects live as long as the endpoint (new ones made here, among a
        # burst's transient objects, would each keep an allocator arena alive).
        for arr in (self.xosn, self.seq, self.size, self.txn, self.mn):
            arr[:] = array(arr.typecode, [arr[i] for i in keep])
        self.created[:] = array("d", [self.created[i] for i in keep])
        self.flags[:] = bytes(self.flags[i] for i in keep)
        self.head, self.cursor = 0, cursor

    def clear_sent(self) -> None:
        self.flags[:] = self.flags.translate(_CLEAR_SENT)
        self.cursor = self.head

    def sent_count(self) -> int:
        return self.flags.count(PRESENT | SENT) + self.flags.count(PRESENT | SENT | QUEUED)

    def oldest(self) -> float | None:
        """The earliest creation time of a present output (holes included: an upper bound)."""
        return min(self.created[self.head:], default=None) if self.count else None


@dataclass(eq=False, slots=True)
class EndpointState:
    name: str
    osn: int = 0  # the last OSN given (PROTOCOL.md §5: 1..2**32-1, then 1 again)
    epoch: int = 0  # times the OSN wrapped around (extends OSNs into an increasing order)
    outbox: Outbox = field(default_factory=Outbox)
    sink: Any = None
    #: Slots admitted and not yet in the outbox (outputs being committed, open requests' fates).
    reserved: int = 0
    #: Texts in memory for unsent outputs (within the byte budgets), by extended OSN.
    held: dict[int, bytes] = field(default_factory=dict)
    held_bytes: int = 0
    reading: bool = False  # a read-back from the journal is on its way

    def xosn(self, osn: int) -> int:
        """An OSN of this endpoint's outbox extended with its epoch (OSNs above the last one given
        are from before the last wrap-around)."""
        epoch = self.epoch if osn <= self.osn or self.epoch == 0 else self.epoch - 1
        return (epoch << 32) | osn
