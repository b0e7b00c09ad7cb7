"""Delivery of outputs to mnemonics: output sequence numbers, acknowledgement, store-and-forward.

PROTOCOL.md §5. Every output goes to a delivery *endpoint* — a terminal or printer station, a
host station (shared by its workstation mnemonics), or a pooled mnemonic — and gets that
endpoint's next output sequence number (OSN), used as the frame's xid. An output stays in the
endpoint's outbox until the client answers ``A`` with that xid (``DELIVERED``), refuses it
(``N``, ``UNDELIVERED``), or it expires after ``queue_expiry_s`` (``UNDELIVERED``). While no
session is attached, outputs wait (``QUEUED``) and go out in OSN order when one attaches.

Durability (see :mod:`msc.routing.outbox`): the record that creates an output is committed before
the output is offered to anyone; the outbox snapshot in state.db follows behind, holding only
effects of committed records, and is completed from the journal after a restart.

**Texts wait in the journal, not in memory.** A queued output keeps only what finds it (endpoint,
OSN, journal sequence number, size, txn, CORI fields). The bytes in hand when it is made are
written at once if its session takes them; otherwise they are kept only while a byte budget
allows (``output_memory_bytes`` for all endpoints, :data:`READ_BATCH_BYTES` per endpoint) and
are otherwise read back from the journal — decrypted in a worker thread, :data:`READ_BATCH`
outputs or :data:`READ_BATCH_BYTES` at a time — when the session can take them. Memory for
outputs is therefore bounded by configuration, whatever waits, and is given back as queues drain.

**Bounds, admitted atomically.** An endpoint's *depth* is the outputs in its outbox plus the
slots *reserved* for outputs whose creating record is still being committed, or for the fate
of a request its operator has open (the first part of its answer, or its notice —
:meth:`reserve` at acceptance). Whoever makes outputs reserves their slots first, for every
destination at once (:meth:`reserve`: all or none), and the depth never exceeds ``queue_max``:
new unsolicited traffic, answer parts beyond the reserved one, administrative messages and new
requests from the operator are refused ``E307`` when there is no room (PROTOCOL.md §5
"Bounds"); msc's own notices wait for room.

Why one module of ~650 lines (issue 15: none over ~500 without a reason): the bounds above (depth
within ``queue_max`` with its reservations, the held-bytes budget, OSN order) are kept together by
every method of :class:`Delivery`; the queue's data structures are :mod:`msc.routing.endpoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from msc.aio import spawn
from msc.journal.records import Entry, Kind
from msc.outage import Outage
from msc.protocol.message import output_bytes
from msc.routing.endpoint import PRESENT, QUEUED, SENT, EndpointState, Output
from msc.routing.outbox import OutboxBackend, Stored

log = structlog.get_logger("msc.delivery")

FLUSH_INTERVAL_S = 0.5
EXPIRY_SWEEP_S = 5.0
#: Outputs read back from the journal at once for one endpoint, at most (and their bytes, by the
#: sizes known; an output of unknown size counts :data:`UNKNOWN_SIZE`). At least one is read.
READ_BATCH = 128
READ_BATCH_BYTES = 256 * 1024
UNKNOWN_SIZE = 1024
#: Read-backs running at once (each in a worker thread), and the wait after one failed.
READERS = 2
READ_RETRY_S = 1.0
#: Default bound of the bytes of output texts held in memory, all endpoints together.
OUTPUT_MEMORY_BYTES = 32 * 1024 * 1024
_MASK32 = 0xFFFFFFFF  # an OSN is 32 bits (PROTOCOL.md §5); the outbox extends it with its epoch


class QueueFull(Exception):
    """A destination queue has no room for the outputs (nothing was made or reserved)."""

    def __init__(self, destinations: Iterable[tuple[str, str]] = ()) -> None:
        self.destinations = list(destinations)
        super().__init__("no room in " + ", ".join(e for e, _m in self.destinations))


class Sink(Protocol):
    """What a session offers the delivery layer."""

    @property
    def user(self) -> str | None: ...  # the logged-on user's ID

    @property
    def taf(self) -> str | None: ...

    @property
    def max_output(self) -> int: ...  # the longest payload the client takes (PROTOCOL.md §1 max_frame, less 5)

    def send_output(self, osn: int, payload: bytes) -> bool:
        """Write one output frame; False if the session cannot take it now (backpressure)."""


class Delivery:
    """All endpoints' outboxes. Runs on the event loop; never blocks on disk."""

    def __init__(self, journal, *, queue_max: int = 10000, expiry_s: float = 72 * 3600, metrics: Any = None,
                 clock: Callable[[], float] = time.time, store: OutboxBackend | None = None,
                 endpoint_of: Callable[[str], str | None] = lambda m: m,
                 output_memory_bytes: int = OUTPUT_MEMORY_BYTES) -> None:
        self.journal = journal
        self.queue_max = queue_max
        self.expiry_s = expiry_s
        self.metrics = metrics
        self.clock = clock
        self.store = store
        self.endpoint_of = endpoint_of
        self.output_memory_bytes = output_memory_bytes
        #: The switch's own txns are ``<txn_prefix><hex counter>`` (Router.new_txn): kept as the
        #: number, so that a queued output holds no string for it.
        self.txn_prefix: str | None = None
        self.endpoints: dict[str, EndpointState] = {}
        self._count = 0
        self._held_bytes = 0
        self._adds: dict[tuple[str, int], Stored] = {}
        self._removes: set[tuple[str, int]] = set()
        self._osn_dirty: dict[str, int] = {}
        self._safe_seq = 0  # every committed effect up to this journal seq is registered
        self._tasks: list[asyncio.Task] = []
        # One outage of the queues' or the journal's database, one warning each (msc.outage): the
        # snapshot is tried every FLUSH_INTERVAL_S, a read-back every READ_RETRY_S.
        self._flush_outage = Outage("delivery.flush_failed", "delivery.flush_recovered", logger=log)
        self._read_outage = Outage("delivery.read_failed", "delivery.read_recovered", logger=log)
        self._readers: asyncio.Semaphore | None = None
        self._queued_entries: list[Entry] = []
        #: Called with an output taken out of its outbox because it is longer than the attached
        #: session takes (its listener's max_frame shrank since the output was made), its bytes in
        #: ``payload``: the router records it UNDELIVERED and sends it again in parts
        #: (PROTOCOL.md §5). Its slot stays reserved for the parts.
        self.on_oversize: Callable[[Output, int], None] | None = None
        if metrics is not None:
            metrics.delivery_depth_max.set_function(self.depth_max)
            metrics.delivery_queue_limit.set_function(lambda: self.queue_max)
            metrics.delivery_held_bytes.set_function(lambda: self._held_bytes)

    def _ep(self, name: str) -> EndpointState:
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = EndpointState(name)
        return ep

    # -- outputs in and out of the arrays ---------------------------------------------------

    def _txn_code(self, txn: str | None) -> int:
        p = self.txn_prefix
        if txn is not None and p is not None and txn.startswith(p):
            rest = txn[len(p):]
            if rest and all(c in "0123456789abcdef" for c in rest) and len(rest) <= 15:
                return int(rest, 16) + 1
        return 0

    def _store(self, ep: EndpointState, o: Output, flags: int = PRESENT) -> int:
        """Put ``o`` in its endpoint's outbox; returns its extended OSN."""
        code = self._txn_code(o.txn)
        cori = o.cori if o.cori != (None, None, None) else None
        meta: tuple | None
        if o.on_done is not None:  # the latency metric, when the request's last part is delivered
            meta = (o.txn if not code else None, cori, o.category, o.started, o.on_done, o.user)
        elif cori is not None or (o.txn is not None and not code) or o.user is not None:
            meta = (o.txn if not code else None, cori, None, None, None, o.user)
        else:
            meta = None
        x = ep.xosn(o.osn)
        ep.outbox.add(x, o.seq, o.size, o.created, o.mnemonic, code, meta,
                      flags | (QUEUED if o.queued_recorded else 0))
        return x

    def _output(self, ep: EndpointState, i: int) -> Output:
        """A (transient) Output for the one at position ``i``."""
        ob = ep.outbox
        x = ob.xosn[i]
        txn, cori, category, started, on_done, user = ob.meta.get(x) or (None, None, None, None, None, None)
        code = ob.txn[i]
        if code:
            txn = f"{self.txn_prefix}{code - 1:x}"
        return Output(ep.name, x & _MASK32, ob.mnemonics[ob.mn[i]], None, txn=txn, created=ob.created[i],
                      seq=ob.seq[i], size=ob.size[i], sent=bool(ob.flags[i] & SENT),
                      queued_recorded=bool(ob.flags[i] & QUEUED), category=category,
                      cori=cori or (None, None, None), started=started, on_done=on_done, user=user)

    def _remove(self, ep: EndpointState, i: int) -> None:
        ob = ep.outbox
        self._unhold(ep, ob.xosn[i])
        ob.remove(i)
        self._count -= 1

    # -- start and stop -------------------------------------------------------------------

    async def restore(self, users_at: Iterable[str] = ()) -> int:
        """Load the snapshot and replay the journal after it. Returns the outputs waiting.

        ``users_at``: endpoints where no one logs on that receive outputs for someone else's
        request (the pools' printers, :meth:`msc.mnemonics.directory.Directory.pool_printers`): each of
        their waiting outputs gets back the user of its record (:attr:`Output.user`), read from
        the journal, so that its delivery record names that operator after a restart as before."""
        if self.store is None:
            return 0
        rows, osns, applied = await asyncio.to_thread(self.store.load)
        waiting: dict[str, dict[int, Output]] = {}
        for name, last in osns.items():
            self._ep(name).osn = last
        for r in rows:
            waiting.setdefault(r.endpoint, {})[r.osn] = Output(r.endpoint, r.osn, r.mnemonic, None, txn=r.txn,
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
                waiting.setdefault(endpoint, {})[osn] = o
                self._adds[(endpoint, osn)] = Stored(endpoint, osn, seq, mnemonic, txn, o.created)
            elif kind in (Kind.DELIVERED, Kind.UNDELIVERED):
                waiting.get(endpoint, {}).pop(osn, None)
                self._adds.pop((endpoint, osn), None)
                self._removes.add((endpoint, osn))
            replayed += 1
        await self._restore_users(waiting, set(users_at))
        for endpoint, outputs in waiting.items():  # OSN order, whatever order they were found in
            ep = self._ep(endpoint)
            ep.osn = max(ep.osn, max(outputs, default=0))
            for osn in sorted(outputs):
                self._store(ep, outputs[osn])
            self._count += len(outputs)
        del waiting
        self._safe_seq = self.journal.last_seq
        self._gauge()
        await self.flush()
        log.info("delivery.restored", waiting=self._count, replayed=replayed)
        return self._count

    async def _restore_users(self, waiting: dict[str, dict[int, Output]], endpoints: set[str]) -> None:
        outputs = [o for e in endpoints for o in waiting.get(e, {}).values()]
        for k in range(0, len(outputs), READ_BATCH):
            batch = outputs[k:k + READ_BATCH]
            try:
                found = await self.journal.texts_and_users([o.seq for o in batch])
            except Exception as exc:  # the start goes on: the records then name no user
                log.warning("delivery.restore_users_failed", error=str(exc) or type(exc).__name__, outputs=len(outputs))
                return
            for o in batch:
                if o.seq in found:
                    o.user = found[o.seq][1]

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
                self._flush_outage.failed(str(exc) or type(exc).__name__)
            else:
                self._flush_outage.ok()

    def abandon(self) -> None:
        """A node that stepped down is leaving: the snapshot and the expiry stop now, without a
        last flush (its storage is given back: nothing more of it may be written)."""
        for t in self._tasks:
            t.cancel()

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

    # -- admission ------------------------------------------------------------------------

    def depth(self, endpoint: str) -> int:
        """Outputs waiting for ``endpoint`` plus slots reserved for it (never above queue_max
        through :meth:`reserve`)."""
        ep = self.endpoints.get(endpoint)
        return 0 if ep is None else ep.outbox.count + ep.reserved

    def depth_max(self) -> int:
        """The deepest endpoint's depth (the ``msc_delivery_queue_depth_max`` gauge)."""
        return max((ep.outbox.count + ep.reserved for ep in self.endpoints.values()), default=0)

    def room(self, endpoint: str, n: int = 1) -> bool:
        """Would ``n`` more outputs fit in this endpoint's queue now? (Nothing is reserved.)"""
        return self.depth(endpoint) + n <= self.queue_max

    def reserve(self, counts: Mapping[str, int], *, path: str | None = None) -> bool:
        """Reserve ``counts[endpoint]`` slots at every endpoint, or none if one has no room.

        Atomic: the check and the reservation happen in one step on the event loop, so however
        many messages arrive at once, no more are admitted than fit — what is being committed
        counts. Each reserved slot is taken by one :meth:`deliver`, or given back with
        :meth:`release`. ``path`` labels a refusal in ``msc_delivery_refused_total``."""
        eps = self.endpoints
        limit = self.queue_max
        for endpoint, n in counts.items():
            if n <= 0:
                continue
            ep = eps.get(endpoint)
            if (0 if ep is None else ep.outbox.count + ep.reserved) + n > limit:
                if path is not None and self.metrics is not None:
                    self.metrics.delivery_refused.labels(path).inc()
                return False
        for endpoint, n in counts.items():
            if n > 0:
                self._ep(endpoint).reserved += n
        return True

    def release(self, counts: Mapping[str, int]) -> None:
        """Give back slots reserved and not used (the commit failed, or a request ended without
        an output)."""
        for endpoint, n in counts.items():
            ep = self.endpoints.get(endpoint)
            if ep is not None and n > 0:
                ep.reserved = max(0, ep.reserved - n)

    def reserved(self, endpoint: str) -> int:
        ep = self.endpoints.get(endpoint)
        return 0 if ep is None else ep.reserved

    # -- creating outputs -----------------------------------------------------------------

    def next_osn(self, endpoint: str) -> int:
        ep = self._ep(endpoint)
        if ep.osn < _MASK32:
            ep.osn += 1
        else:
            ep.osn, ep.epoch = 1, ep.epoch + 1
        self._osn_dirty[endpoint] = ep.osn
        return ep.osn

    def deliver(self, output: Output) -> None:
        """Offer a committed output (its slot was reserved): send it now if its session takes it,
        else it waits — its bytes in memory only within the budgets, else in the journal."""
        ep = self._ep(output.endpoint)
        if ep.reserved > 0:
            ep.reserved -= 1
        payload, output.payload = output.payload, None
        if payload is not None:
            output.size = len(payload)
        ob = ep.outbox
        attached = ep.sink is not None
        if not attached:
            output.queued_recorded = True  # recorded just below
        x = self._store(ep, output)
        self._count += 1
        self._adds[(output.endpoint, output.osn)] = Stored(output.endpoint, output.osn, output.seq, output.mnemonic,
                                                           output.txn, output.created)
        self._gauge()
        if not attached:
            self._queued(Entry(kind=Kind.QUEUED, direction="out", peer=output.endpoint, mnemonic=output.mnemonic,
                               txn=output.txn, osn=output.osn, text=f"OSN {output.osn} NOT CONNECTED"))
            return
        i = len(ob.flags) - 1
        if ob.next_present(ob.cursor) == i and payload is not None:
            if self._send(ep, i, payload) and ob.cursor <= i:
                ob.cursor = i + 1
                return
            if ob.find(x) < 0:
                return  # taken out (longer than the session takes)
        if payload is not None:
            self._hold(ep, x, payload)

    def _send(self, ep: EndpointState, i: int, payload: bytes) -> bool:
        """Write the output at ``i`` to the attached session; False if the session pushed back.
        An output longer than the session takes is taken out instead (see :attr:`on_oversize`)."""
        ob = ep.outbox
        limit = getattr(ep.sink, "max_output", None)
        if limit is not None and len(payload) > limit and self.on_oversize is not None:
            # Never a frame the station must refuse: out of the outbox, and again in parts
            # (its slot stays reserved for them).
            output = self._output(ep, i)
            output.payload = payload
            self._remove(ep, i)
            ep.reserved += 1
            self._gauge()
            self.on_oversize(output, limit)
            return True
        if ep.sink.send_output(ob.xosn[i] & _MASK32, payload):
            ob.flags[i] |= SENT
            return True
        return False

    def _hold(self, ep: EndpointState, x: int, payload: bytes, *, force: bool = False) -> None:
        """Keep an unsent output's bytes in memory if the budgets allow (``force``: a read-back
        batch, sized to the budgets when it was started)."""
        n = len(payload)
        if x in ep.held:
            return
        if not force and (ep.held_bytes + n > READ_BATCH_BYTES or self._held_bytes + n > self.output_memory_bytes):
            return  # it is read back from the journal when its turn comes
        ep.held[x] = payload
        ep.held_bytes += n
        self._held_bytes += n

    def _unhold(self, ep: EndpointState, x: int) -> None:
        payload = ep.held.pop(x, None)
        if payload is not None:
            ep.held_bytes -= len(payload)
            self._held_bytes -= len(payload)

    def _drop_held(self, ep: EndpointState) -> None:
        self._held_bytes -= ep.held_bytes
        ep.held.clear()
        ep.held_bytes = 0

    def _queued(self, entry: Entry) -> None:
        """Journal a QUEUED record; those of one event-loop iteration go in one append."""
        if not self._queued_entries:
            asyncio.get_running_loop().call_soon(self._submit_queued)
        self._queued_entries.append(entry)

    def _submit_queued(self) -> None:
        entries, self._queued_entries = self._queued_entries, []
        for k in range(0, len(entries), READ_BATCH):
            self.journal.submit(entries[k:k + READ_BATCH])

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

    # -- reading texts back -----------------------------------------------------------------

    async def texts_and_users(self, outputs: Iterable[Output]) -> dict[int, tuple[bytes, str | None]]:
        """As :meth:`texts`, each with the user of the record that made the output (the operator
        whose request it answers, or None)."""
        outputs = list(outputs)
        found = await self.journal.texts_and_users([o.seq for o in outputs])
        self._count_read(len(found), sum(len(t) for t, _u in found.values()))
        return {o.osn: (output_bytes(found[o.seq][0]), found[o.seq][1]) for o in outputs if o.seq in found}

    async def texts(self, outputs: Iterable[Output]) -> dict[int, bytes]:
        """The bytes of outputs (by OSN) from the journal, in a worker thread; an output whose
        text cannot be read (its month purged) is missing from the answer."""
        outputs = list(outputs)
        texts = await self.journal.texts([o.seq for o in outputs])
        self._count_read(len(texts), sum(len(t) for t in texts.values()))
        return {o.osn: output_bytes(texts[o.seq]) for o in outputs if o.seq in texts}

    def _count_read(self, n: int, size: int) -> None:
        if self.metrics is not None and n:
            self.metrics.delivery_read_back.inc(n)
            self.metrics.delivery_read_back_bytes.inc(size)

    def _read(self, ep: EndpointState) -> None:
        """Read the next unsent outputs' texts back from the journal, then go on sending."""
        ep.reading = True
        spawn(self._read_batch(ep), event="delivery.read_failed", logger=log, endpoint=ep.name)

    def _batch(self, ep: EndpointState) -> list[tuple[int, int]]:
        """(extended OSN, journal seq) of the next unsent outputs whose bytes are not in memory:
        :data:`READ_BATCH` at most, within the per-endpoint and global byte budgets (at least one)."""
        ob = ep.outbox
        room = min(READ_BATCH_BYTES - ep.held_bytes, self.output_memory_bytes - self._held_bytes)
        batch: list[tuple[int, int]] = []
        size = 0
        flags, held = ob.flags, ep.held
        for i in range(max(ob.cursor, ob.head), len(flags)):
            if not flags[i] or flags[i] & SENT or ob.xosn[i] in held:
                continue
            n = ob.size[i] or UNKNOWN_SIZE
            if batch and (len(batch) >= READ_BATCH or size + n > room):
                break
            batch.append((ob.xosn[i], ob.seq[i]))
            size += n
        return batch

    async def _read_batch(self, ep: EndpointState) -> None:
        if self._readers is None:
            self._readers = asyncio.Semaphore(READERS)
        try:
            async with self._readers:  # the batch is sized when its turn comes, to the budgets then
                batch = self._batch(ep) if ep.sink is not None else []
                if not batch:
                    return
                texts = await self.journal.texts([seq for _x, seq in batch])
        except Exception as exc:  # the journal's database away: said once per outage, retried
            self._read_outage.failed(str(exc) or type(exc).__name__)
            asyncio.get_running_loop().call_later(READ_RETRY_S, self.resume, ep.name)
            return
        finally:
            ep.reading = False
        self._read_outage.ok()
        self._count_read(len(texts), sum(len(t) for t in texts.values()))
        ob = ep.outbox
        for x, seq in batch:
            i = ob.find(x)
            if i < 0 or ob.flags[i] & SENT:
                continue  # its fate was settled meanwhile
            text = texts.get(seq)
            if text is None:  # purged or unreadable: its fate must still be recorded
                o = self._output(ep, i)
                self._remove(ep, i)
                self._finished(ep.name, o.osn, Entry(kind=Kind.UNDELIVERED, direction="out", peer=ep.name,
                                                     mnemonic=o.mnemonic, txn=o.txn, osn=o.osn,
                                                     text=f"OSN {o.osn} TEXT NO LONGER READABLE"))
                continue
            if ep.sink is not None:
                payload = output_bytes(text)
                ob.size[i] = len(payload)
                self._hold(ep, x, payload, force=True)
        ob.compact()
        self._gauge()
        self.resume(ep.name)

    # -- sessions -------------------------------------------------------------------------

    def attach(self, endpoint: str, sink: Sink) -> int:
        """A session can now receive the endpoint's outputs; send what waits, in OSN order."""
        ep = self._ep(endpoint)
        ep.sink = sink
        ep.outbox.clear_sent()
        self.resume(endpoint)
        return ep.outbox.count

    def resume(self, endpoint: str) -> None:
        """Send outputs not yet written (after attach, a read-back, or when the session's writes
        drained), in OSN order, reading their texts back from the journal as needed."""
        ep = self.endpoints.get(endpoint)
        if ep is None or ep.sink is None:
            return
        ob = ep.outbox
        while ep.sink is not None:
            i = ob.next_present(ob.cursor)
            if i < 0:
                ob.cursor = len(ob.flags)
                return
            if ob.flags[i] & SENT:
                ob.cursor = i + 1
                continue
            x = ob.xosn[i]
            payload = ep.held.get(x)
            if payload is None:
                ob.cursor = i
                if not ep.reading:
                    self._read(ep)
                return
            if not self._send(ep, i, payload):
                ob.cursor = i
                return  # the session pushed back; resume() is called again when it drains
            self._unhold(ep, x)
            if ob.find(x) >= 0:
                ob.cursor = i + 1
        ob.compact()

    def detach(self, endpoint: str, sink: Sink) -> None:
        ep = self.endpoints.get(endpoint)
        if ep is None or ep.sink is not sink:
            return
        ep.sink = None
        self._drop_held(ep)
        ob = ep.outbox
        ob.clear_sent()
        for i in ob.positions():
            if not ob.flags[i] & QUEUED:
                ob.flags[i] |= QUEUED
                o = self._output(ep, i)
                self._queued(Entry(kind=Kind.QUEUED, direction="out", peer=endpoint, mnemonic=o.mnemonic,
                                   txn=o.txn, osn=o.osn, text=f"OSN {o.osn} NOT ACKNOWLEDGED"))

    def attached(self, endpoint: str) -> bool:
        ep = self.endpoints.get(endpoint)
        return ep is not None and ep.sink is not None

    def _take_one(self, endpoint: str, osn: int) -> Output | None:
        ep = self.endpoints.get(endpoint)
        if ep is None:
            return None
        i = ep.outbox.find(ep.xosn(osn))
        if i < 0:
            return None
        output = self._output(ep, i)
        self._remove(ep, i)
        ep.outbox.compact()
        self._gauge()
        return output

    def acked(self, endpoint: str, osn: int, sink: Sink) -> bool:
        """The client answered ``A`` for an output: it is delivered. The record names the user
        logged on at ``sink``; at a station where no one logs on (a printer) the operator the
        output was moved there for (:attr:`Output.user`), if any."""
        output = self._take_one(endpoint, osn)
        if output is None:
            return False  # a duplicate or stale ack (at-least-once delivery)
        purpose, requester, recipient = output.cori
        self._finished(endpoint, osn, Entry(kind=Kind.DELIVERED, direction="out", peer=endpoint,
                                            mnemonic=output.mnemonic, user=sink.user or output.user, taf=sink.taf,
                                            txn=output.txn, osn=osn, purpose=purpose, requester=requester, recipient=recipient,
                                            text=f"OSN {osn}"))
        if output.on_done is not None:
            output.on_done(output)
        return True

    def refused(self, endpoint: str, osn: int, code: str, reason: str, sink: Sink) -> bool:
        """The client answered ``N``: the output has a definite fate, recorded as UNDELIVERED."""
        output = self._take_one(endpoint, osn)
        if output is None:
            return False
        self._finished(endpoint, osn, Entry(kind=Kind.UNDELIVERED, direction="out", peer=endpoint,
                                            mnemonic=output.mnemonic, user=sink.user or output.user, taf=sink.taf,
                                            txn=output.txn, osn=osn, code=code, text=f"OSN {osn} REFUSED BY CLIENT: {reason}"))
        return True

    def take(self, endpoint: str) -> list[Output]:
        """Take every output out of an endpoint's outbox, oldest first, *without* recording their
        fate: the caller records it (and calls :meth:`forget` once that is committed). Until then
        the journal still has them open, so a crash meanwhile loses nothing."""
        ep = self.endpoints.get(endpoint)
        if ep is None or not ep.outbox.count:
            return []
        ob = ep.outbox
        outputs = [self._output(ep, i) for i in ob.positions()]
        for i in ob.positions():
            ob.remove(i)  # the OSN sequence goes on: OSNs are per mnemonic, for good
        ob.compact()
        self._drop_held(ep)
        self._count -= len(outputs)
        self._gauge()
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
        hours = self.expiry_s / 3600
        n = 0
        for ep in self.endpoints.values():
            ob = ep.outbox
            oldest = ob.oldest()
            if oldest is None or oldest > limit:
                continue
            for i in [i for i in ob.positions() if ob.created[i] <= limit]:
                o = self._output(ep, i)
                self._remove(ep, i)
                n += 1
                self._finished(ep.name, o.osn, Entry(kind=Kind.UNDELIVERED, direction="out", peer=ep.name,
                                                     mnemonic=o.mnemonic, txn=o.txn, osn=o.osn,
                                                     text=f"OSN {o.osn} EXPIRED: NOT ACKNOWLEDGED WITHIN {hours:g} H"))
            ob.compact()
        if n:
            self._gauge()
        return n

    def pending(self) -> int:
        return self._count

    def held_bytes(self) -> int:
        """Bytes of output texts in memory, all endpoints (bounded by ``output_memory_bytes``,
        plus at most one read-back batch per endpoint)."""
        return self._held_bytes

    def unacknowledged(self) -> int:
        """Outputs of attached sessions not yet acknowledged: written, or about to be (their text
        being read back from the journal, or waiting for the session's writes to drain). A
        stopping switch waits for these (``drain``): an answer committed while its terminal is
        logged on must not be left queued because its read-back was still under way."""
        return sum(ep.outbox.count for ep in self.endpoints.values() if ep.sink is not None)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.delivery_queued.set(self._count)
