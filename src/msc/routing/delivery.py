"""Delivery of outputs to mnemonics: output sequence numbers, acknowledgement, store-and-forward.

PROTOCOL.md §5. Every output goes to a delivery *endpoint* — a terminal or printer station, a
host station (shared by its workstation mnemonics), or a pooled mnemonic — and gets that
endpoint's next output sequence number (OSN), used as the frame's xid. An output stays in the
endpoint's outbox until the client answers ``A`` with that xid (``DELIVERED``), refuses it
(``N``, ``UNDELIVERED``), or it expires after ``queue_expiry_s`` (``UNDELIVERED``). While no
session is attached, outputs wait (``QUEUED``) and go out in OSN order when one attaches.

Durability (see :mod:`msc.routing.outbox`): the record that creates an output is committed before
the output is offered to anyone; the outbox snapshot in state.db follows behind, holding only
effects of committed records, and is completed from the journal after a restart. Outputs
restored that way carry only their journal sequence number; their text is read back (decrypted)
when their mnemonic is next attached.

Bounds: an endpoint's outbox holds ``queue_max`` outputs. Beyond that, new unsolicited traffic
for it is refused to its sender with E307, and its own operator's new requests get E307 too
(:meth:`room`), so a terminal that does not read cannot make msc hold unbounded output for it.
Answers to requests already accepted are always kept (at most ``max_in_flight`` more).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from msc.journal.records import Entry, Kind
from msc.protocol.message import output_bytes
from msc.routing.outbox import OutboxStore, Stored

log = structlog.get_logger("msc.delivery")

FLUSH_INTERVAL_S = 0.5
EXPIRY_SWEEP_S = 5.0


class Sink(Protocol):
    """What a session offers the delivery layer."""

    user: str | None
    taf: str | None
    max_output: int  # the longest payload the client takes (PROTOCOL.md §1 max_frame, less 5)

    def send_output(self, osn: int, payload: bytes) -> bool:
        """Write one output frame; False if the session cannot take it now (backpressure)."""


@dataclass(eq=False)
class Output:
    endpoint: str
    osn: int
    mnemonic: str
    payload: bytes | None  # None until read back from the journal (restored after a restart)
    txn: str | None = None
    created: float = field(default_factory=time.time)
    seq: int = 0  # the journal record that created it
    sent: bool = False
    queued_recorded: bool = False
    category: str | None = None
    cori: tuple[str | None, str | None, str | None] = (None, None, None)  # purpose, requester, recipient
    started: float | None = None  # perf_counter of the request's acceptance (latency metric)
    on_done: Callable[[Output], None] | None = None


@dataclass(eq=False)
class EndpointState:
    name: str
    osn: int = 0
    outbox: OrderedDict[int, Output] = field(default_factory=OrderedDict)
    sink: Any = None
    loading: bool = False


class Delivery:
    """All endpoints' outboxes. Runs on the event loop; never blocks on disk."""

    def __init__(self, journal, *, queue_max: int = 10000, expiry_s: float = 72 * 3600, metrics: Any = None,
                 clock: Callable[[], float] = time.time, store: OutboxStore | None = None,
                 endpoint_of: Callable[[str], str | None] = lambda m: m) -> None:
        self.journal = journal
        self.queue_max = queue_max
        self.expiry_s = expiry_s
        self.metrics = metrics
        self.clock = clock
        self.store = store
        self.endpoint_of = endpoint_of
        self.endpoints: dict[str, EndpointState] = {}
        self._count = 0
        self._adds: dict[tuple[str, int], Stored] = {}
        self._removes: set[tuple[str, int]] = set()
        self._osn_dirty: dict[str, int] = {}
        self._safe_seq = 0  # every committed effect up to this journal seq is registered
        self._tasks: list[asyncio.Task] = []
        #: Called with an output taken out of its outbox because it is longer than the attached
        #: session takes (its listener's max_frame shrank since the output was made): the router
        #: records it UNDELIVERED and sends it again in parts (PROTOCOL.md §5).
        self.on_oversize: Callable[[Output, int], None] | None = None

    def _ep(self, name: str) -> EndpointState:
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = EndpointState(name)
        return ep

    # -- start and stop -------------------------------------------------------------------

    async def restore(self) -> int:
        """Load the snapshot and replay the journal after it. Returns the outputs waiting."""
        if self.store is None:
            return 0
        rows, osns, applied = await asyncio.to_thread(self.store.load)
        for name, last in osns.items():
            self._ep(name).osn = last
        for r in rows:
            self._ep(r.endpoint).outbox[r.osn] = Output(r.endpoint, r.osn, r.mnemonic, None, txn=r.txn,
                                                        created=r.created, seq=r.seq, queued_recorded=True)
        replayed = 0
        for seq, ts, kind, direction, mnemonic, osn, txn in await self.journal.output_records_since(applied):
            endpoint = self.endpoint_of(mnemonic) if mnemonic else None
            if endpoint is None:
                log.warning("delivery.replay_unknown_mnemonic", seq=seq)
                continue
            ep = self._ep(endpoint)
            ep.osn = max(ep.osn, osn)
            self._osn_dirty[endpoint] = ep.osn
            if kind == Kind.RECEIVED and direction == "in":
                o = Output(endpoint, osn, mnemonic, None, txn=txn, created=ts / 1e6, seq=seq, queued_recorded=True)
                ep.outbox[osn] = o
                self._adds[(endpoint, osn)] = Stored(endpoint, osn, seq, mnemonic, txn, o.created)
            elif kind in (Kind.DELIVERED, Kind.UNDELIVERED):
                ep.outbox.pop(osn, None)
                self._adds.pop((endpoint, osn), None)
                self._removes.add((endpoint, osn))
            replayed += 1
        for ep in self.endpoints.values():  # OSN order, whatever order they were found in
            ep.outbox = OrderedDict(sorted(ep.outbox.items()))
        self._count = sum(len(ep.outbox) for ep in self.endpoints.values())
        self._safe_seq = self.journal.last_seq
        self._gauge()
        await self.flush()
        log.info("delivery.restored", waiting=self._count, replayed=replayed)
        return self._count

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flusher(), name="delivery-flush"),
                       asyncio.create_task(self._expirer(), name="delivery-expiry")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._safe_seq = self.journal.last_seq
        with contextlib.suppress(Exception):
            await self.journal.flush()
            await self.flush()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush()
            except Exception as exc:  # the snapshot lags; the journal still has everything
                log.warning("delivery.flush_failed", error=str(exc))

    async def flush(self) -> None:
        """Write the snapshot. ``applied`` lags one interval behind the journal so that every
        commit callback for the records it covers has run (the replay picks up the rest)."""
        if self.store is None:
            return
        applied, self._safe_seq = self._safe_seq, self.journal.last_seq
        adds, self._adds = list(self._adds.values()), {}
        removes, self._removes = list(self._removes), set()
        osns, self._osn_dirty = self._osn_dirty, {}
        await asyncio.to_thread(self.store.apply, adds, removes, osns, applied)

    # -- creating outputs -----------------------------------------------------------------

    def next_osn(self, endpoint: str) -> int:
        ep = self._ep(endpoint)
        ep.osn = ep.osn + 1 if ep.osn < 0xFFFFFFFF else 1
        self._osn_dirty[endpoint] = ep.osn
        return ep.osn

    def room(self, endpoint: str) -> bool:
        """Is there room for one more output in this endpoint's queue?"""
        ep = self.endpoints.get(endpoint)
        return ep is None or len(ep.outbox) < self.queue_max

    def deliver(self, output: Output) -> None:
        """Offer a committed output: send it now if a session is attached, else queue it."""
        ep = self._ep(output.endpoint)
        ep.outbox[output.osn] = output
        self._count += 1
        self._adds[(output.endpoint, output.osn)] = Stored(output.endpoint, output.osn, output.seq, output.mnemonic,
                                                           output.txn, output.created)
        self._gauge()
        if ep.sink is not None:
            if not ep.loading:
                self._send(ep, output)
        else:
            self._record_queued(output, "NOT CONNECTED")

    def _send(self, ep: EndpointState, output: Output) -> None:
        if output.payload is None:
            return
        limit = getattr(ep.sink, "max_output", None)
        if limit is not None and len(output.payload) > limit and self.on_oversize is not None:
            # Never a frame the station must refuse: out of the outbox, and again in parts.
            del ep.outbox[output.osn]
            self._count -= 1
            self._gauge()
            self.on_oversize(output, limit)
            return
        if ep.sink.send_output(output.osn, output.payload):
            output.sent = True

    def _record_queued(self, output: Output, why: str) -> None:
        if output.queued_recorded:
            return
        output.queued_recorded = True
        self.journal.submit([Entry(kind=Kind.QUEUED, direction="out", peer=output.endpoint, mnemonic=output.mnemonic,
                                   txn=output.txn, osn=output.osn, text=f"OSN {output.osn} {why}")])

    def _finished(self, endpoint: str, osn: int, entry: Entry) -> None:
        """Record an output's fate; the snapshot forgets it only once that record is committed."""
        def done(f: asyncio.Future) -> None:
            if not f.cancelled() and f.exception() is None:
                self._adds.pop((endpoint, osn), None)
                self._removes.add((endpoint, osn))

        self.journal.submit([entry]).add_done_callback(done)

    def forget(self, endpoint: str, osn: int) -> None:
        """An output taken out of its outbox has had its fate committed (see :attr:`on_oversize`)."""
        self._adds.pop((endpoint, osn), None)
        self._removes.add((endpoint, osn))

    # -- sessions -------------------------------------------------------------------------

    def attach(self, endpoint: str, sink: Sink) -> int:
        """A session can now receive the endpoint's outputs; send what waits, in OSN order."""
        ep = self._ep(endpoint)
        ep.sink = sink
        for output in ep.outbox.values():
            output.sent = False
        if any(o.payload is None for o in ep.outbox.values()):
            ep.loading = True
            asyncio.get_running_loop().create_task(self._load(ep, sink))
        else:
            self.resume(endpoint)
        return len(ep.outbox)

    async def _load(self, ep: EndpointState, sink: Sink) -> None:
        """Read the texts of restored outputs back from the journal, then send them."""
        try:
            missing = [o for o in ep.outbox.values() if o.payload is None]
            texts = await self.journal.texts([o.seq for o in missing])
            for o in missing:
                text = texts.get(o.seq)
                if text is not None:
                    o.payload = output_bytes(text)
                else:  # purged or unreadable: its fate must still be recorded
                    ep.outbox.pop(o.osn, None)
                    self._count -= 1
                    self._finished(ep.name, o.osn, Entry(kind=Kind.UNDELIVERED, direction="out", peer=ep.name,
                                                         mnemonic=o.mnemonic, txn=o.txn, osn=o.osn,
                                                         text=f"OSN {o.osn} TEXT NO LONGER READABLE"))
        except Exception as exc:
            log.error("delivery.load_failed", endpoint=ep.name, error=str(exc))
        finally:
            ep.loading = False
        if ep.sink is sink:
            self.resume(ep.name)

    def resume(self, endpoint: str) -> None:
        """Send outputs not yet written (after attach, or when the session's writes drained)."""
        ep = self.endpoints.get(endpoint)
        if ep is None or ep.sink is None or ep.loading:
            return
        for output in list(ep.outbox.values()):
            if not output.sent:
                self._send(ep, output)
                if not output.sent and output.osn in ep.outbox:
                    break  # the session pushed back; resume() is called again when it drains

    def detach(self, endpoint: str, sink: Sink) -> None:
        ep = self.endpoints.get(endpoint)
        if ep is None or ep.sink is not sink:
            return
        ep.sink = None
        for output in ep.outbox.values():
            output.sent = False
            self._record_queued(output, "NOT ACKNOWLEDGED")

    def attached(self, endpoint: str) -> bool:
        ep = self.endpoints.get(endpoint)
        return ep is not None and ep.sink is not None

    def acked(self, endpoint: str, osn: int, sink: Sink) -> bool:
        """The client answered ``A`` for an output: it is delivered."""
        ep = self.endpoints.get(endpoint)
        output = ep.outbox.pop(osn, None) if ep is not None else None
        if output is None:
            return False  # a duplicate or stale ack (at-least-once delivery)
        self._count -= 1
        self._gauge()
        purpose, requester, recipient = output.cori
        self._finished(endpoint, osn, Entry(kind=Kind.DELIVERED, direction="out", peer=endpoint,
                                            mnemonic=output.mnemonic, user=sink.user, taf=sink.taf, txn=output.txn,
                                            osn=osn, purpose=purpose, requester=requester, recipient=recipient,
                                            text=f"OSN {osn}"))
        if output.on_done is not None:
            output.on_done(output)
        return True

    def refused(self, endpoint: str, osn: int, code: str, reason: str, sink: Sink) -> bool:
        """The client answered ``N``: the output has a definite fate, recorded as UNDELIVERED."""
        ep = self.endpoints.get(endpoint)
        output = ep.outbox.pop(osn, None) if ep is not None else None
        if output is None:
            return False
        self._count -= 1
        self._gauge()
        self._finished(endpoint, osn, Entry(kind=Kind.UNDELIVERED, direction="out", peer=endpoint,
                                            mnemonic=output.mnemonic, user=sink.user, taf=sink.taf, txn=output.txn,
                                            osn=osn, code=code, text=f"OSN {osn} REFUSED BY CLIENT: {reason}"))
        return True

    def abandon(self, endpoint: str, reason: str) -> list[Output]:
        """Give up an endpoint's outbox (a pooled mnemonic whose session ended): every output is
        recorded UNDELIVERED with the reason and returned, oldest first."""
        ep = self.endpoints.get(endpoint)
        if ep is None or not ep.outbox:
            return []
        outputs = list(ep.outbox.values())
        ep.outbox.clear()  # the OSN sequence goes on: OSNs are per mnemonic, for good
        self._count -= len(outputs)
        self._gauge()
        for o in outputs:
            self._finished(endpoint, o.osn, Entry(kind=Kind.UNDELIVERED, direction="out", peer=endpoint,
                                                  mnemonic=o.mnemonic, txn=o.txn, osn=o.osn, text=f"OSN {o.osn} {reason}"))
        return outputs

    # -- expiry ---------------------------------------------------------------------------

    async def _expirer(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            self.expire()

    def expire(self, now: float | None = None) -> int:
        """Record outputs older than ``queue_expiry_s`` UNDELIVERED and drop them."""
        now = self.clock() if now is None else now
        limit = now - self.expiry_s
        n = 0
        for ep in self.endpoints.values():
            for osn, o in list(ep.outbox.items()):
                if o.created > limit:
                    continue
                del ep.outbox[osn]
                self._count -= 1
                n += 1
                hours = self.expiry_s / 3600
                self._finished(ep.name, osn, Entry(kind=Kind.UNDELIVERED, direction="out", peer=ep.name,
                                                   mnemonic=o.mnemonic, txn=o.txn, osn=osn,
                                                   text=f"OSN {osn} EXPIRED: NOT ACKNOWLEDGED WITHIN {hours:g} H"))
        if n:
            self._gauge()
        return n

    def pending(self) -> int:
        return self._count

    def unacknowledged(self) -> int:
        """Outputs written to an attached session and not yet acknowledged."""
        return sum(1 for ep in self.endpoints.values() if ep.sink is not None for o in ep.outbox.values() if o.sent)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.delivery_queued.set(self._count)
