"""The router: requests out to upstream links, responses and unsolicited traffic back in.

Requests are matched to responses by header (mnemonic + ref) in the order they were sent: an
upstream answers a request with ``M`` frames whose header is the request's (PROTOCOL.md §4).
Every accepted request ends in exactly one of: a response delivered to its mnemonic, an upstream
``N`` reported as ``HEADER.MSC.<code> <reason>``, a lost link before the upstream's ``A``
(``MSC.E302``), or no response within ``timeout_s`` (``MSC.E303``). Notices are journaled like
any other output before they are delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from msc.journal.records import Entry, JournalError, Kind
from msc.mnemonics.directory import Directory, Route
from msc.protocol import framing
from msc.protocol.codes import ProtocolError, Reject
from msc.protocol.message import format_output, msc_notice, output_bytes, parse_upstream, wire_text
from msc.routing.delivery import Delivery, Output
from msc.routing.forwarding import land, needs_24x7
from msc.routing.upstream import Sent, UpstreamLink

log = structlog.get_logger("msc.router")

MSC_PEER = "MSC"  # the peer name of outputs msc generates itself (notices)


@dataclass(eq=False)
class Pending:
    """One accepted request on its way upstream."""

    txn: str
    header: str
    mnemonic: str
    endpoint: str
    user: str | None
    taf: str | None
    ori: str | None
    mke: str
    category: str
    upstream: str
    # CORI release fields (PPP §1.6.1 C, §1.7.1 A), carried to the response and its delivery.
    purpose: str | None = None
    requester: str | None = None
    recipient: str | None = None
    alloc: int | None = None  # the ACP allocation of a pooled mnemonic that sent the request
    expects_answer: bool = True  # False for AM: the upstream's A is the whole answer
    started: float = field(default_factory=time.perf_counter)
    sent_at: float = 0.0
    xid: int = 0
    upstream_acked: bool = False
    done: bool = False

    # Called by the UpstreamLink.
    def acked(self, link: UpstreamLink, sent: Sent) -> None:
        self.upstream_acked = True
        if not self.expects_answer:
            self.done = True

    def refused(self, link: UpstreamLink, sent: Sent, code: str, reason: str) -> None:
        self.router._resolve_failed(self, Reject[code] if code in Reject.__members__ else Reject.E502, reason)

    router: Any = field(default=None, repr=False)


class Router:
    def __init__(self, journal, delivery: Delivery, *, metrics: Any, directory: Directory,
                 boot_id: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.delivery = delivery
        self.metrics = metrics
        self.directory = directory
        self.links: dict[str, UpstreamLink] = {}
        self._waiting: dict[str, deque[Pending]] = {}
        self._by_link: dict[str, deque[Pending]] = {}
        self._boot = boot_id or format(int(time.time() * 1000), "x")  # unique across restarts
        self._txn = itertools.count(1)
        self._sweeper: asyncio.Task | None = None
        self.acp = None  # the switch's AccessControlPoint (pooled mnemonics)
        self.clock = clock

    # -- lifecycle ------------------------------------------------------------------------

    def add_link(self, link: UpstreamLink) -> None:
        self.links[link.name] = link
        self._by_link.setdefault(link.name, deque())

    def start(self) -> None:
        for link in self.links.values():
            link.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="router-timeouts")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for link in self.links.values():
            await link.stop()

    def new_txn(self) -> str:
        return f"{self._boot}-{next(self._txn):x}"

    # -- requests -------------------------------------------------------------------------

    def capacity(self, route: Route) -> tuple[UpstreamLink | None, Reject | None]:
        """Can the route's upstream take a request now? (E302 down, E307 over max_in_flight)."""
        link = self.links.get(route.upstream)
        if link is None or not link.up:
            return None, Reject.E302
        if link.in_flight >= link.cfg.max_in_flight:
            return None, Reject.E307
        return link, None

    def dispatch(self, pending: Pending, payload: bytes) -> None:
        """Send a committed request upstream (its RECEIVED/FORWARDED records are on disk)."""
        pending.router = self
        link = self.links.get(pending.upstream)
        try:
            if link is None:
                raise LookupError
            pending.xid = link.send(payload, pending.txn, pending).xid
        except Exception:
            self._resolve_failed(pending, Reject.E302, None)
            return
        pending.sent_at = time.monotonic()
        if pending.expects_answer:
            self._waiting.setdefault(pending.header, deque()).append(pending)
        self._by_link[pending.upstream].append(pending)
        self._in_flight_gauge(link)

    def outstanding(self) -> int:
        """Accepted requests whose fate (answer or notice) is not known yet."""
        return sum(1 for q in self._by_link.values() for p in q if not p.done)

    def _in_flight_gauge(self, link: UpstreamLink) -> None:
        self.metrics.upstream_in_flight.labels(link.name).set(link.in_flight)

    def _forget(self, pending: Pending) -> None:
        q = self._waiting.get(pending.header)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(pending)
            if not q:
                del self._waiting[pending.header]

    def _resolve_failed(self, pending: Pending, reject: Reject, detail: str | None) -> None:
        if pending.done:
            return
        pending.done = True
        self._forget(pending)
        link = self.links.get(pending.upstream)
        if link is not None:
            self._in_flight_gauge(link)
        self.metrics.reject(reject.code)
        self.notice(pending, reject, detail)

    def on_lost(self, link: UpstreamLink, lost: list[Sent]) -> None:
        """The link dropped: requests the upstream never acknowledged are answered E302."""
        for sent in lost:
            pending: Pending = sent.context
            if not pending.upstream_acked:
                self._resolve_failed(pending, Reject.E302, f"{link.name.upper()} LINK LOST BEFORE ACKNOWLEDGEMENT")
        self._in_flight_gauge(link)

    async def _sweep(self) -> None:
        """Time out requests with no response (E303). O(1) per request: queues are in send order."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for name, q in list(self._by_link.items()):
                link = self.links.get(name)
                if link is None:
                    continue
                timeout = link.cfg.timeout_s
                while q and (q[0].done or now - q[0].sent_at >= timeout):
                    p = q.popleft()
                    if not p.done and not (p.upstream_acked and not p.expects_answer):
                        link.sent.pop(p.xid, None)
                        self._resolve_failed(p, Reject.E303, f"NO RESPONSE FROM {name.upper()} WITHIN {timeout:g} S")

    # -- outputs --------------------------------------------------------------------------

    def notice(self, pending: Pending, reject: Reject, detail: str | None) -> None:
        """Tell the operator the fate of an accepted request: ``HEADER.MSC.<code> <reason>``."""
        payload = msc_notice(pending.header, reject, detail)
        entry_kw = dict(user=pending.user, taf=pending.taf, ori=pending.ori, mke="MSC", code=reject.code,
                        txn=pending.txn)
        asyncio.get_running_loop().create_task(
            self._emit_retrying(pending.endpoint, pending.mnemonic, payload, MSC_PEER, entry_kw, pending.category))

    async def _emit_retrying(self, endpoint: str, mnemonic: str, payload: bytes, peer: str, entry_kw: dict,
                             category: str | None) -> None:
        """Journal then deliver an msc-generated output; retry while the journal is failing."""
        delay = 0.1
        while True:
            try:
                await self.emit([(endpoint, mnemonic)], payload, peer, entry_kw, category=category)
                return
            except JournalError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def emit(self, destinations: list[tuple[str, str]], payload: bytes, peer: str, entry_kw: dict,
                   *, category: str | None = None, started: float | None = None) -> list[Output]:
        """Journal an output for each (endpoint, mnemonic), then hand them to delivery."""
        outputs, entries = self._prepare(destinations, payload, peer, entry_kw, category, started)
        seqs = await self.journal.submit(entries)
        for o, seq in zip(outputs, seqs):
            o.seq = seq
            self.delivery.deliver(o)
        return outputs

    def _prepare(self, destinations, payload, peer, entry_kw, category, started):
        outputs, entries = [], []
        # The journal keeps every byte as received; the client gets the byte policy's copy
        # (PROTOCOL.md §1: disallowed bytes written visibly as <HH>).
        text = wire_text(payload)
        delivered = output_bytes(text)
        for endpoint, mnemonic in destinations:
            osn = self.delivery.next_osn(endpoint)
            o = Output(endpoint, osn, mnemonic, delivered, txn=entry_kw.get("txn"), category=category, started=started,
                       created=self.clock(),
                       cori=(entry_kw.get("purpose"), entry_kw.get("requester"), entry_kw.get("recipient")))
            if started is not None and category is not None:
                o.on_done = self._observe_latency
            outputs.append(o)
            entries.append(Entry(kind=Kind.RECEIVED, direction="in", peer=peer, mnemonic=mnemonic, osn=osn,
                                 text=text, **entry_kw))
        return outputs, entries

    def _observe_latency(self, output: Output) -> None:
        self.metrics.transaction_seconds.labels(output.category).observe(time.perf_counter() - output.started)

    # -- traffic from upstream --------------------------------------------------------------

    def on_upstream_message(self, link: UpstreamLink, generation: Any, xid: int, payload: bytes) -> None:
        try:
            msg = parse_upstream(payload)
            destinations, pending = self._destinations(msg.dest, msg.mke)
            if pending is None and not all(self.delivery.room(e) for e, _ in destinations):
                raise ProtocolError(Reject.E307, "DESTINATION QUEUE FULL, TRY AGAIN")
        except ProtocolError as exc:
            self._refuse_upstream(link, generation, xid, payload, exc.reject, exc.detail)
            return
        entry_kw = dict(ori=msg.ori, mke=msg.mke)
        category = started = None
        if pending is not None:
            pending.done = True
            self._forget(pending)
            self.links[pending.upstream].sent.pop(pending.xid, None)
            self._in_flight_gauge(link)
            entry_kw.update(user=pending.user, taf=pending.taf, txn=pending.txn, ori=msg.ori or pending.ori,
                            purpose=pending.purpose, requester=pending.requester, recipient=pending.recipient)
            category, started = pending.category, pending.started
        else:
            entry_kw["txn"] = self.new_txn()
        outputs, entries = self._prepare(destinations, payload, link.name, entry_kw, category, started)
        fut = self.journal.submit(entries)

        def committed(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None:
                self.metrics.reject(Reject.E501.code)
                link.reply(framing.nak(xid, Reject.E501.code, Reject.E501.reason), generation)
                return
            link.reply(framing.ack(xid), generation)
            for o, seq in zip(outputs, f.result()):
                o.seq = seq
                self.delivery.deliver(o)

        fut.add_done_callback(committed)

    def _destinations(self, dest: str, mke: str | None = None) -> tuple[list[tuple[str, str]], Pending | None]:
        """Resolve an upstream header to (endpoint, mnemonic) pairs, and the request it answers.

        An answer goes back to the mnemonic that asked. Unsolicited traffic goes to a mnemonic,
        every station of an ORI that receives administrative traffic, or a group's members —
        each through TAMF and, for hit confirmations and locates, the 24 x 7 rule
        (:mod:`msc.routing.forwarding`).
        """
        d = self.directory
        q = self._waiting.get(dest)
        if q:
            pending = q[0]
            if pending.alloc is None or (self.acp is not None and (h := self.acp.holder(pending.mnemonic))
                                         and h.id == pending.alloc):
                return [(pending.endpoint, pending.mnemonic)], pending
            # The pooled session that asked has ended (its mnemonic may be lent to someone else
            # now): the answer is unsolicited traffic for a pooled mnemonic (PPP §1.6.2 B 1 f).
            return self._pooled_unsolicited(pending.mnemonic), pending
        now = dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)
        if dest in d.groups:
            stations = list(d.groups[dest])
        elif dest in d.agencies:
            agency = d.agencies[dest]
            if needs_24x7(mke) and agency.duty_station:
                stations = [agency.duty_station]
            else:
                stations = d.admin_receivers(dest)
            if not stations:
                raise ProtocolError(Reject.E304, f"NO STATION OF {dest} RECEIVES ADMINISTRATIVE TRAFFIC")
        else:
            mnemonic = dest[:4]
            if mnemonic in d.pool_of:
                return self._pooled_unsolicited(mnemonic), None
            if d.endpoint_of(mnemonic) is None:
                raise ProtocolError(Reject.E304, f"DESTINATION {dest} UNKNOWN")
            if mnemonic in d.host_of and mnemonic not in d.stations:
                return [(d.host_of[mnemonic], mnemonic)], None  # a CAD workstation: its host delivers
            stations = [mnemonic]
        out: list[tuple[str, str]] = []
        for m in stations:
            target = land(d, m, mke, now, self.delivery.attached)
            endpoint = d.endpoint_of(target)
            if endpoint is not None and (endpoint, target) not in out:
                out.append((endpoint, target))
        if not out:
            raise ProtocolError(Reject.E304, f"DESTINATION {dest} UNKNOWN")
        return out, None

    def _pooled_unsolicited(self, mnemonic: str) -> list[tuple[str, str]]:
        """PPP §1.6.2 B 1 f: "Unsolicited messages cannot be delivered to a pooled mnemonic
        unless there is a defined destination, such as a printer." (PROTOCOL.md §5)"""
        pool = self.directory.pools.get(self.directory.pool_of.get(mnemonic, ""))
        target = pool.unsolicited_to if pool else None
        endpoint = self.directory.endpoint_of(target) if target else None
        if endpoint is None:
            raise ProtocolError(Reject.E306, f"NO DEFINED DESTINATION FOR POOLED MNEMONIC {mnemonic}")
        return [(endpoint, target)]

    def _refuse_upstream(self, link, generation, xid, payload, reject: Reject, detail: str) -> None:
        self.metrics.reject(reject.code)
        fut = self.journal.submit([Entry(kind=Kind.REJECTED, direction="in", peer=link.name, code=reject.code,
                                         text=wire_text(payload))])

        def committed(f: asyncio.Future) -> None:
            link.reply(framing.nak(xid, reject.code, detail), generation)

        fut.add_done_callback(committed)


__all__ = ["MSC_PEER", "Pending", "Router", "format_output"]
