"""The router: requests out to upstream links, answers and unsolicited traffic back in.

The life of a request — waiting for its first answer part, answered and open for further parts
for its route's answer window, closed and remembered for late parts — is kept in one place,
:class:`msc.routing.requests.RequestTable` (PROTOCOL.md §4). Every accepted request ends in
exactly one of: at least one answer part delivered to the session that asked (or its queue),
an upstream ``N`` reported as ``HEADER.MSC.<code> <reason>``, a lost link before its answer
(``MSC.E302``, at once, acknowledged by the upstream or not), no answer part within
``timeout_s`` (``MSC.E303``), or an answer that the journal could not record and the upstream
did not send again within ``resend_wait_s`` (``MSC.E501``). Every part of an answer is
journaled with the request's txn, user, ``PUR/``, ``ATN/`` and ``REL/``. Notices are journaled
like any other output before they are delivered; an output larger than a station can take goes
out in parts (:mod:`msc.protocol.parts`).

A message that answers no request is unsolicited traffic: it is classified by the unsolicited
table (:mod:`msc.routing.forwarding`) and lands on the addressed station or a 24 × 7 station.

Why one module of ~750 lines (issue 15: none over ~500 without a reason): a request's whole life
— sent, answered in parts, timed out, refused, lost with its link, its answer unrecorded and sent
again — turns on one request table and one order (journal, then deliver) that every method here
keeps; split, the halves would share that private state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from msc.aio import spawn
from msc.journal.records import Entry, JournalError, Kind
from msc.mnemonics.acp import AccessControlPoint
from msc.mnemonics.directory import Directory, Route
from msc.protocol import framing
from msc.protocol.codes import ProtocolError, Reject
from msc.protocol.message import (
    UpstreamMessage,
    format_output,
    msc_notice,
    output_bytes,
    parse_upstream,
    wire_text,
)
from msc.protocol.parts import FRAME_OVERHEAD, split_output
from msc.routing.delivery import READ_BATCH, Delivery, Output, QueueFull
from msc.routing.destinations import pooled, upstream_destination
from msc.routing.forwarding import DELIVER_24X7, UNKNOWN, classifier
from msc.routing.requests import Match, Pending, RequestTable, ends_answer
from msc.routing.resends import COMMITTING, Resends
from msc.routing.upstream import Sent, UpstreamLink

log = structlog.get_logger("msc.router")

MSC_PEER = "MSC"  # the peer name of outputs msc generates itself (notices, parts)
PROBE_MIN_S = 0.25  # first retry of a refusal record while the journal fails; doubles to 5 s
PROBE_MAX_S = 5.0
#: The ACP allocation of a request made in an earlier run of the switch: it ended with that run,
#: and no allocation of this run has its id (ids start at 1).
ENDED = 0
SWEEP_S = 0.25  # how often deadlines (E303, answer windows, resends) are looked at


class Router:
    def __init__(self, journal, delivery: Delivery, *, metrics: Any, directory: Directory,
                 boot_id: str | None = None, clock: Callable[[], float] = time.time,
                 late_answer_s: float = 3600.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.delivery = delivery
        self.metrics = metrics
        self.directory = directory
        self.links: dict[str, UpstreamLink] = {}
        #: Every request from forwarding to its last answer part (PROTOCOL.md §4).
        self.requests = RequestTable(late_answer_s=late_answer_s, clock=monotonic)
        self._boot = boot_id or format(int(time.time() * 1000), "x")  # unique across restarts
        delivery.txn_prefix = f"{self._boot}-"  # queued outputs keep the switch's own txns as numbers
        self._txn = itertools.count(1)
        self._sweeper: asyncio.Task | None = None
        self.acp: AccessControlPoint | None = None  # the switch's AccessControlPoint (pooled mnemonics)
        self.clock = clock
        #: The largest output payload every station can take: the smallest listener max_frame
        #: less the frame's type and xid (PROTOCOL.md §1). Longer outputs go out in parts.
        self.output_limit: Callable[[], int] = lambda: framing.DEFAULT_MAX_FRAME - FRAME_OVERHEAD
        #: Requests whose answer the journal could not record (the upstream was told N E501):
        #: they wait for the upstream to send it again (insertion-ordered set).
        self._unrecorded: dict[Pending, None] = {}
        self._recording = 0  # upstream traffic whose journal commit is under way
        #: Messages each upstream may send again: journaled, their A not written (msc.routing.resends).
        self.resends = Resends(wait_s=lambda name: self.links[name].cfg.resend_wait_s if name in self.links else 30.0,
                               up_at=lambda name: link.up_at if (link := self.links.get(name)) else None,
                               clock=monotonic)
        self._probe_at = 0.0
        self._probe_backoff = PROBE_MIN_S
        self._probing = False
        self._stopping = False
        #: The journal text of a refused upstream message (link name, reject code, payload, its
        #: whole text, whether it must have a record of its own) — whole, compact, or None when
        #: it is only counted: the switch's refusal budgets (msc.server.budgets.Budgets.upstream,
        #: JOURNAL.md "Refused traffic"). Without them every refusal keeps its whole text.
        self.refused_text: Callable[..., str | None] = lambda link, code, payload, text, always=False: text()

    # -- lifecycle ------------------------------------------------------------------------

    def add_link(self, link: UpstreamLink) -> None:
        self.links[link.name] = link

    def start(self) -> None:
        for link in self.links.values():
            link.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="router-timeouts")

    async def stop(self) -> None:
        # Requests still waiting when the switch stops are told by the next start's recovery
        # pass (msc.routing.recovery.recover_unanswered), not by notices raced against the journal's close.
        self._stopping = True
        if self._sweeper:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
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
        if link is not None and link.in_flight >= link.cfg.max_in_flight:
            # capacity() was checked when the request was accepted, but a burst of requests
            # accepted together all passed it before any of them was sent: the bound holds
            # here, where the request is put in flight (one step of the event loop), and the
            # excess is told E307 like a request refused at acceptance (SECURITY.md "Bounded
            # under abuse").
            self._resolve_failed(pending, Reject.E307, f"{link.name.upper()} AT MAX_IN_FLIGHT", remember=False)
            return
        try:
            if link is None:
                raise LookupError
            pending.xid = link.send(payload, pending.txn, pending).xid
        except Exception:
            self._resolve_failed(pending, Reject.E302, None, remember=False)
            return
        self.requests.opened(pending, link.cfg.timeout_s)
        self._in_flight_gauge(link)

    def outstanding(self) -> int:
        """Accepted requests whose fate (an answer or a notice) is not known yet, and upstream
        traffic whose record is being committed (an answer is neither awaited nor queued then)."""
        return (sum(1 for p in self.requests.outstanding() if p not in self._unrecorded)
                + len(self._unrecorded) + self._recording)

    def open_answers(self) -> int:
        """Answered requests whose answer window is still open (more parts may come)."""
        return len(self.requests.open_answers())

    def _in_flight_gauge(self, link: UpstreamLink) -> None:
        self.metrics.upstream_in_flight.labels(link.name).set(link.in_flight)

    def _resolve_failed(self, pending: Pending, reject: Reject, detail: str | None, *, remember: bool = True) -> None:
        """Tell the operator a request failed (E302, E303, E501, an upstream's N), once.

        ``remember``: keep the request for late parts (an upstream that lost the link or was
        slow may still answer; one that said ``N`` will not)."""
        if pending.done:
            return
        pending.done = True
        self.requests.close(pending, remember=remember)
        link = self.links.get(pending.upstream)
        if link is not None:
            self._in_flight_gauge(link)
        self.metrics.reject(reject.code)
        self.notice(pending, reject, detail)

    def upstream_refused(self, pending: Pending, code: str, reason: str) -> None:
        """The upstream answered the request ``N``: no answer will come for it."""
        reject = Reject[code] if code in Reject.__members__ else Reject.E502
        self._resolve_failed(pending, reject, reason, remember=False)

    def on_lost(self, link: UpstreamLink, lost: list[Sent]) -> None:
        """The link dropped (closed, or declared failed): every request on it that has no answer
        yet — acknowledged by the upstream or not — is answered ``MSC.E302`` now, not E303 after
        ``timeout_s`` (PROTOCOL.md §4). Requests that already had an answer keep it; an answer
        the journal could not record keeps waiting for the upstream to send it again (it may, on
        the next connection) until its ``resend_wait_s``. Nothing is resent on the operator's
        behalf: the upstream may have acted on it (an entry, a hit confirmation). A request told
        E302 is still remembered: an answer that comes on the next connection is linked to it."""
        if self._stopping:
            return
        name = link.name.upper()
        for pending in self.requests.waiting_on(link.name):
            if pending.done or pending.answered or pending in self._unrecorded:
                continue
            if not pending.expects_answer and pending.upstream_acked:
                continue
            why = "BEFORE THE ANSWER" if pending.upstream_acked else "BEFORE ACKNOWLEDGEMENT"
            self._resolve_failed(pending, Reject.E302, f"{name} LINK LOST {why}", remember=pending.expects_answer)
        self._in_flight_gauge(link)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.expire()

    def expire(self) -> None:
        """Deadlines: E303 for requests no part of whose answer came within ``timeout_s``;
        answered requests whose answer window ended are closed (late parts still link);
        answers the journal could not record and the upstream did not send again (E501)."""
        timed_out, _closed = self.requests.expire()
        for p in timed_out:
            if p in self._unrecorded:
                continue  # an answer came; its fate is decided by _sweep_unrecorded
            link = self.links.get(p.upstream)
            if link is not None:
                sent = link.sent.get(p.xid)
                if sent is not None and sent.context is p:
                    del link.sent[p.xid]
            self._resolve_failed(p, Reject.E303, f"NO RESPONSE FROM {p.upstream.upper()} WITHIN {p.timeout_s:g} S",
                                 remember=p.expects_answer)
        if self._unrecorded:
            self._sweep_unrecorded(time.monotonic())

    # -- answers the journal could not record ------------------------------------------------

    def _answer_unrecorded(self, pending: Pending, link: UpstreamLink) -> None:
        """The journal failed to record an answer to ``pending``; the upstream was told N E501.

        The request is not finished: it waits (matchable by header again) for the upstream to
        send the answer again. Its refusal is journaled (a REJECTED E501 record, retried until the
        journal records again — the first success is when the journal has recovered); from then,
        or from a later refusal, the upstream has ``resend_wait_s`` to send the answer again, or
        the operator gets ``MSC.E501`` (PROTOCOL.md §4)."""
        self.metrics.answers_unrecorded.inc()
        pending.refusal_code = Reject.E501.code
        # The part does not count; a request none of whose parts was recorded waits for its
        # first part again, first in line for its header (RequestTable.unrecorded). Its fate is
        # open again either way: a part that is not sent again ends in E501.
        self.requests.unrecorded(pending)
        pending.done = False
        self._unrecorded[pending] = None
        if pending.refusal_recorded:
            pending.resend_deadline = time.monotonic() + self._resend_wait(pending)
        else:
            pending.resend_deadline = float("inf")  # set when the refusal record commits

    def _resend_wait(self, pending: Pending) -> float:
        link = self.links.get(pending.upstream)
        return link.cfg.resend_wait_s if link is not None else 30.0

    @staticmethod
    def _refusal_entry(p: Pending) -> Entry:
        up = p.upstream.upper()
        why = "DESTINATION QUEUE FULL" if p.refusal_code == Reject.E307.code else "JOURNAL FAILURE"
        return Entry(kind=Kind.REJECTED, direction="in", peer=p.upstream, mnemonic=p.mnemonic, user=p.user, taf=p.taf,
                     ori=p.ori, mke=p.mke, txn=p.txn, code=p.refusal_code,
                     text=f"ANSWER TO {p.header} FROM {up} NOT RECORDED: {why}; {up} TOLD {p.refusal_code}")

    def _sweep_unrecorded(self, now: float) -> None:
        todo = [p for p in self._unrecorded if not p.refusal_recorded and not p.refusal_sending]
        if todo and not self._probing and now >= self._probe_at:
            self._probing = True
            entries = [self._refusal_entry(p) for p in todo]
            for p in todo:
                p.refusal_sending = True

            def recorded(f: asyncio.Future) -> None:
                self._probing = False
                t = time.monotonic()
                for p in todo:
                    p.refusal_sending = False
                exc = None if f.cancelled() else f.exception()
                if f.cancelled() or (exc is not None and not getattr(exc, "landed", None)):
                    self._probe_at = t + self._probe_backoff
                    self._probe_backoff = min(self._probe_backoff * 2, PROBE_MAX_S)
                    return
                self._probe_backoff = PROBE_MIN_S
                for p in todo:
                    p.refusal_recorded = True
                    if p in self._unrecorded:
                        p.resend_deadline = t + self._resend_wait(p)

            self.journal.submit(entries).add_done_callback(recorded)
        for p in [p for p in self._unrecorded if p.resend_deadline is not None and now >= p.resend_deadline]:
            del self._unrecorded[p]
            p.resend_deadline = None
            what = f"{'PART OF THE ' if p.answered else ''}ANSWER FROM {p.upstream.upper()}"
            if p.refusal_code == Reject.E307.code:
                self._resolve_failed(p, Reject.E307, f"{what} REFUSED: OUTPUT QUEUE FULL, NOT SENT AGAIN; "
                                     "ACKNOWLEDGE OUTPUTS AND REPEAT THE REQUEST")
            else:
                self._resolve_failed(p, Reject.E501, f"{what} COULD NOT BE RECORDED AND WAS NOT SENT AGAIN; "
                                     "REPEAT THE REQUEST")

    # -- outputs --------------------------------------------------------------------------

    def notice(self, pending: Pending, reject: Reject, detail: str | None) -> None:
        """Tell the operator the fate of an accepted request: ``HEADER.MSC.<code> <reason>``.

        The request's reserved slot in its asker's queue, if it still holds it, takes the notice;
        otherwise the notice waits for room (PROTOCOL.md §5 "Bounds")."""
        payload = msc_notice(pending.header, reject, detail)
        entry_kw = dict(user=pending.user, taf=pending.taf, ori=pending.ori, mke="MSC", code=reject.code,
                        txn=pending.txn)
        spawn(self._emit_retrying(pending.endpoint, pending.mnemonic, payload, MSC_PEER, entry_kw, pending.category,
                                  pending=pending, alloc=pending.alloc), event="router.notice_failed", logger=log)

    def notify(self, endpoint: str, mnemonic: str, payload: bytes, entry_kw: dict, *,
               alloc: int | None = None) -> None:
        """Journal and deliver a notice msc generates itself (``peer`` MSC) for the session that
        asked (``alloc``: see :meth:`to_asker`), retried while the journal fails and waiting while
        the queue is full."""
        spawn(self.tell(endpoint, mnemonic, payload, entry_kw, alloc=alloc), event="router.notice_failed", logger=log)

    async def tell(self, endpoint: str, mnemonic: str, payload: bytes, entry_kw: dict, *,
                   alloc: int | None = None) -> None:
        """:meth:`notify`, awaited until the notice is journaled (and handed to delivery)."""
        await self._emit_retrying(endpoint, mnemonic, payload, MSC_PEER, entry_kw, None, alloc=alloc)

    def to_asker(self, endpoint: str, mnemonic: str, alloc: int | None) -> list[tuple[str, str]]:
        """Where an answer part or msc's notice for the session that asked goes (PROTOCOL.md §4).

        ``alloc``: the ACP allocation of the pooled mnemonic that asked (``None``: a static
        mnemonic; :data:`ENDED`: an allocation of an earlier run of the switch, ended with it). A
        pooled mnemonic is the asker only while that allocation still holds it; after that the
        mnemonic may be lent to someone else, and the output is unsolicited traffic for a pooled
        mnemonic — its pool's defined destination (PPP §1.6.2 B 1 f). Raises E306 if the pool
        has none."""
        if alloc is None or (self.acp is not None and (h := self.acp.holder(mnemonic)) is not None
                             and h.id == alloc):
            return [(endpoint, mnemonic)]
        return pooled(self.directory, mnemonic)

    def redirect_waiting(self, mnemonic: str) -> int:
        """Everything waiting in a pooled mnemonic's queue belongs to an allocation that ended (a
        logoff, a lost connection, a restart of the switch): it goes to the pool's defined
        destination, or is recorded undelivered (:meth:`redirect_pooled`). Returns how many."""
        outputs = self.delivery.take(mnemonic)  # a pooled mnemonic is its own endpoint
        if outputs:
            d = self.directory
            pool = d.pools.get(d.pool_of.get(mnemonic, ""))
            target = pool.unsolicited_to if pool else None
            endpoint = d.endpoint_of(target) if target is not None else None
            # (its outputs' texts unreadable — the journal's database away —: they stay open in the
            # journal and the next start redirects them; said once, a warning, not a task's traceback)
            spawn(self.redirect_pooled(mnemonic, outputs, target, endpoint), event="router.redirect_failed",
                  expected=(JournalError, OSError), logger=log, mnemonic=mnemonic, outputs=len(outputs))
        return len(outputs)

    async def _emit_retrying(self, endpoint: str, mnemonic: str, payload: bytes, peer: str, entry_kw: dict,
                             category: str | None, pending: Pending | None = None,
                             alloc: int | None = None) -> None:
        """Journal then deliver an msc-generated output; retry while the journal is failing, and
        wait while its queue has no room (the notice itself is small and waits in memory: at most
        one per accepted request). Its destination is decided at each try (:meth:`to_asker`): a
        pooled session that ended meanwhile does not pass its notices to the next holder."""
        delay = 0.1
        while True:
            held = pending.endpoint if pending is not None and pending.slot else None
            try:
                try:
                    destinations = self.to_asker(endpoint, mnemonic, alloc)
                except ProtocolError:
                    await self._undeliverable(endpoint, mnemonic, payload, peer, entry_kw, held)
                else:
                    await self.emit(destinations, payload, peer, entry_kw, category=category, held=held,
                                    keep_user=destinations != [(endpoint, mnemonic)])
            except (JournalError, QueueFull):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if pending is not None and held is not None:
                pending.slot = False  # taken by the notice, or given back by emit
            return

    async def emit(self, destinations: list[tuple[str, str]], payload: bytes, peer: str, entry_kw: dict,
                   *, category: str | None = None, started: float | None = None, held: str | None = None,
                   path: str | None = None, keep_user: bool = False) -> list[Output]:
        """Journal an output for each (endpoint, mnemonic), then hand them to delivery.

        Every destination's queue must have room for all its outputs (the parts of a long
        payload), or nothing is made: :class:`QueueFull`. ``held``: an endpoint where the caller
        already holds one reserved slot (a request's fate slot); it is used, or given back once
        the outputs are committed. Raises JournalError if the journal could not record them (the
        held slot is then kept by the caller)."""
        split = self._split(payload)
        need = self._counts(destinations, split)
        if held is not None and need.get(held, 0) > 0:
            need[held] -= 1
        if not self.delivery.reserve(need, path=path):
            raise QueueFull(destinations)
        outputs, entries, at = self.prepare(destinations, payload, peer, entry_kw, category, started, split=split,
                                            keep_user=keep_user)
        try:
            seqs = await self.journal.submit(entries)
        except BaseException as exc:
            self.delivery.release(need)
            self.landed_undelivered(outputs, at, exc if isinstance(exc, JournalError) else None)
            raise
        if held is not None and not any(e == held for e, _m in destinations):
            self.delivery.release({held: 1})
        self.deliver_committed(outputs, at, seqs)
        return outputs

    async def redirect_pooled(self, mnemonic: str, outputs: list[Output], target: str | None,
                              endpoint: str | None) -> None:
        """What waited for a pooled mnemonic whose session ended goes to the pool's defined
        destination (PPP §1.6.2 B 1 f) as far as its queue has room, oldest first; each output's
        fate (UNDELIVERED … REDIRECTED TO / NOT REDIRECTED) is journaled in one commit with the
        outputs that replace it, retried while the journal fails. Until then the journal still has
        the outputs open, so a crash meanwhile loses nothing."""
        room = True
        for i in range(0, len(outputs), READ_BATCH):  # texts read back a batch at a time
            room = await self._redirect_batch(mnemonic, outputs[i:i + READ_BATCH], target, endpoint, room)

    async def _redirect_batch(self, mnemonic: str, outputs: list[Output], target: str | None, endpoint: str | None,
                              room: bool) -> bool:
        router = self
        # Each output's text and the user of its record (the operator whose request it answers):
        # the records of the move, the copy and its delivery name them, as they did the original.
        try:
            found = await self.delivery.texts_and_users(outputs)
        except Exception:
            if endpoint is not None:
                raise  # (as before: the outputs stay open in the journal; a restart redirects them)
            found = {}  # no printer: their fates are written without the user rather than not at all
        delay = 0.1
        while True:
            entries: list[Entry] = []
            made: list[Output] = []
            at: list[int] = []
            counts: dict[str, int] = {}
            fits = room
            for o in outputs:
                payload, user = found.get(o.osn, (None, None))
                why, code = "POOLED SESSION ENDED", None
                if target is None or endpoint is None:
                    pass
                elif payload is None:
                    why += f", TEXT NO LONGER READABLE, NOT REDIRECTED TO {target}"
                else:
                    split = router._split(payload)
                    n = len(split[1])
                    # Oldest first: once one does not fit, none after it goes (the order is kept).
                    fits = fits and self.delivery.reserve({endpoint: n}, path="redirect")
                    if fits:
                        counts[endpoint] = counts.get(endpoint, 0) + n
                        outs, ents, pos = router.prepare([(endpoint, target)], payload, MSC_PEER,
                                                          dict(txn=o.txn, user=user, code=None), None, None,
                                                          split=split, keep_user=True)
                        entries.append(Entry(kind=Kind.UNDELIVERED, direction="out", peer=mnemonic,
                                             mnemonic=o.mnemonic, user=user, txn=o.txn, osn=o.osn,
                                             text=f"OSN {o.osn} {why}, REDIRECTED TO {target} AS OSN {outs[0].osn}"))
                        at += [len(entries) + i for i in pos]
                        entries += ents
                        made += outs
                        continue
                    why, code = why + f", QUEUE OF {target} FULL, NOT REDIRECTED", Reject.E307.code
                entries.append(Entry(kind=Kind.UNDELIVERED, direction="out", peer=mnemonic, mnemonic=o.mnemonic,
                                     user=user, txn=o.txn, osn=o.osn, code=code, text=f"OSN {o.osn} {why}"))
            try:
                seqs = await self.journal.submit(entries)
            except JournalError as exc:
                self.delivery.release(counts)
                router.landed_undelivered(made, at, exc)  # landed: the copies are closed E501 …
                if exc.landed:
                    break  # … and the originals' fates are written: once is enough
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            router.deliver_committed(made, at, seqs)
            break
        for o in outputs:
            self.delivery.forget(mnemonic, o.osn)
        return fits

    async def _undeliverable(self, endpoint: str, mnemonic: str, payload: bytes, peer: str, entry_kw: dict,
                             held: str | None) -> None:
        """msc's notice for a pooled session that ended, in a pool with no defined destination
        (PROTOCOL.md §4): journaled for its mnemonic and, in the same commit, recorded
        ``UNDELIVERED … E306`` — in the record, never in the next holder's queue. Raises
        JournalError if the journal could not record it."""
        outputs, entries, _at = self.prepare([(endpoint, mnemonic)], payload, peer, entry_kw, None, None)
        entries += [Entry(kind=Kind.UNDELIVERED, direction="out", peer=mnemonic, mnemonic=o.mnemonic,
                          user=entry_kw.get("user"), txn=o.txn, osn=o.osn, code=Reject.E306.code,
                          text=f"OSN {o.osn} POOLED SESSION ENDED, NO DEFINED DESTINATION (E306)") for o in outputs]
        await self.journal.submit(entries)
        if held is not None:
            self.delivery.release({held: 1})

    def slot_free(self, pending: Pending) -> None:
        """A request ended without an output of its own (an AM the upstream acknowledged): give
        back the slot it held in its asker's queue."""
        if pending.slot:
            pending.slot = False
            self.delivery.release({pending.endpoint: 1})

    def landed_undelivered(self, outputs: list[Output], at: list[int], exc: BaseException | None) -> None:
        """A commit that created outputs failed, but its records reached the file anyway
        (``JournalError.landed``: an fsync error after the WAL write). Those outputs were never
        offered to anyone; record each UNDELIVERED (retried until the journal records again), so
        that no output stays open in the journal and a restart does not deliver what was refused."""
        landed = getattr(exc, "landed", None)
        if not landed or not outputs:
            return
        entries = [Entry(kind=Kind.UNDELIVERED, direction="out", peer=o.endpoint, mnemonic=o.mnemonic, txn=o.txn,
                         osn=o.osn, code=Reject.E501.code,
                         text=f"OSN {o.osn} NOT DELIVERED: ITS RECORD SEQ/{landed[i]} WAS WRITTEN WHILE THE JOURNAL "
                              "REPORTED AN ERROR (E501)")
                   for o, i in zip(outputs, at, strict=True)]

        async def record() -> None:
            delay = 0.1
            while True:
                try:
                    await self.journal.submit(entries)
                except JournalError as exc:
                    if not exc.landed:  # landed: these records are in the file; once is enough
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                for o in outputs:
                    self.delivery.forget(o.endpoint, o.osn)
                return

        spawn(record(), event="router.record_failed", logger=log)

    def deliver_committed(self, outputs: list[Output], at: list[int], seqs: list[int]) -> None:
        """Hand outputs whose records committed (``at``: each output's index in ``seqs``) to delivery."""
        for o, i in zip(outputs, at, strict=True):
            o.seq = seqs[i]
            self.delivery.deliver(o)

    def _split(self, payload: bytes) -> tuple[str, list[bytes]]:
        """The journal text of ``payload`` and the bytes each station is sent: one payload, or
        its parts if it is longer than every station takes (:attr:`output_limit`)."""
        # The journal keeps every byte as received; the client gets the byte policy's copy
        # (PROTOCOL.md §1: disallowed bytes written visibly as <HH>), in parts if too long.
        text = wire_text(payload)
        delivered = output_bytes(text)
        limit = self.output_limit()
        return text, (split_output(delivered, limit) if len(delivered) > limit else [delivered])

    @staticmethod
    def _counts(destinations, split: tuple[str, list[bytes]]) -> dict[str, int]:
        """Slots the outputs of one payload take in each destination endpoint's queue."""
        counts: dict[str, int] = {}
        n = len(split[1])
        for endpoint, _mnemonic in destinations:
            counts[endpoint] = counts.get(endpoint, 0) + n
        return counts

    def prepare(self, destinations, payload, peer, entry_kw, category, started, *, split=None, keep_user=False):
        """The outputs of ``payload`` for each destination and the journal entries that create them.

        Returns (outputs, entries, at): ``at[k]`` is the index in ``entries`` of the record that
        creates ``outputs[k]``. A payload longer than a station can take
        (:attr:`output_limit`) is journaled once, whole and as received (a RECEIVED record
        without OSN), and goes out as parts (:mod:`msc.protocol.parts`): one RECEIVED record
        per part, peer ``MSC``, each with its own OSN. ``keep_user``: the outputs go to another
        station than the asker's (a pooled mnemonic's fate at its pool's printer): each keeps the
        asker's user (:attr:`Output.user`) for the records of its delivery.
        """
        outputs, entries, at = [], [], []
        user = entry_kw.get("user") if keep_user else None
        text, parts = split if split is not None else self._split(payload)
        cori = (entry_kw.get("purpose"), entry_kw.get("requester"), entry_kw.get("recipient"))
        for endpoint, mnemonic in destinations:
            if len(parts) > 1:
                entries.append(Entry(kind=Kind.RECEIVED, direction="in", peer=peer, mnemonic=mnemonic, text=text,
                                     **entry_kw))
            for k, part in enumerate(parts):
                osn = self.delivery.next_osn(endpoint)
                o = Output(endpoint, osn, mnemonic, part, txn=entry_kw.get("txn"), category=category, started=started,
                           created=self.clock(), cori=cori, user=user)
                if started is not None and category is not None and k == len(parts) - 1:
                    o.on_done = self._observe_latency
                outputs.append(o)
                at.append(len(entries))
                if len(parts) == 1:
                    entries.append(Entry(kind=Kind.RECEIVED, direction="in", peer=peer, mnemonic=mnemonic, osn=osn,
                                         text=text, **entry_kw))
                else:
                    entries.append(Entry(kind=Kind.RECEIVED, direction="in", peer=MSC_PEER, mnemonic=mnemonic,
                                         osn=osn, text=wire_text(part), same_fields_as_previous=True,
                                         **entry_kw))
        return outputs, entries, at

    def resplit(self, output: Output, limit: int) -> None:
        """An output longer than the session it is for takes (a listener's max_frame shrank
        after it was made): record it UNDELIVERED and send it again as parts of at most ``limit``
        bytes, with new OSNs, in one commit (retried while the journal fails). Until that commit
        the original stays the journal's open output, so a crash meanwhile loses nothing."""
        spawn(self._resplit(output, limit), event="router.record_failed", logger=log)

    async def _resplit(self, output: Output, limit: int) -> None:
        payload, output.payload = output.payload, None
        if payload is None:
            payload = (await self.delivery.texts([output])).get(output.osn, b"")
        parts = split_output(payload, min(limit, self.output_limit()))
        entry_kw: dict[str, Any] = dict(txn=output.txn, user=output.user, purpose=output.cori[0],
                                        requester=output.cori[1], recipient=output.cori[2])
        delay = 0.1
        # The output's own slot stays reserved for its first part; the others wait for room.
        while len(parts) > 1 and not self.delivery.reserve({output.endpoint: len(parts) - 1}):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        delay = 0.1
        while True:
            outputs: list[Output] = []
            entries: list[Entry] = []
            at: list[int] = []
            first = 0
            for part in parts:
                osn = self.delivery.next_osn(output.endpoint)
                first = first or osn
                o = Output(output.endpoint, osn, output.mnemonic, part, txn=output.txn, created=output.created,
                           cori=output.cori, user=output.user)
                outputs.append(o)
                at.append(len(entries) + 1)
                entries.append(Entry(kind=Kind.RECEIVED, direction="in", peer=MSC_PEER, mnemonic=output.mnemonic,
                                     osn=osn, text=wire_text(part), **entry_kw))
            entries.insert(0, Entry(kind=Kind.UNDELIVERED, direction="out", peer=output.endpoint,
                                    mnemonic=output.mnemonic, txn=output.txn, osn=output.osn,
                                    text=f"OSN {output.osn} LONGER THAN THE STATION TAKES ({len(payload)} > "
                                         f"{limit} BYTES): SENT AGAIN AS OSN {first}-{first + len(parts) - 1}"))
            try:
                seqs = await self.journal.submit(entries)
            except JournalError as exc:
                self.landed_undelivered(outputs, at, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.delivery.forget(output.endpoint, output.osn)
            self.deliver_committed(outputs, at, seqs)
            return

    def _observe_latency(self, output: Output) -> None:
        if output.started is not None:
            self.metrics.transaction_seconds.labels(output.category).observe(time.perf_counter() - output.started)

    # -- traffic from upstream --------------------------------------------------------------

    def on_upstream_message(self, link: UpstreamLink, generation: Any, xid: int, payload: bytes) -> None:
        if self.resends.may_hold(link.name, generation) and self._resent(link, generation, xid, payload):
            return
        unsolicited_class = None
        pending = None
        try:
            msg = parse_upstream(payload)
            match = self.requests.match(msg.dest)
            pending = match.pending
            if pending is not None:
                destinations = self._answer_destinations(pending)
            else:
                destinations, unsolicited_class = self._unsolicited_destinations(msg)
        except ProtocolError as exc:
            self._refuse_upstream(link, generation, xid, payload, exc.reject, exc.detail)
            return
        # Admission (PROTOCOL.md §5 "Bounds"): room for every output this message makes, in every
        # destination queue at once, reserved now — before the commit, so that a burst cannot
        # pass the check many times over. A request's first output takes the slot it reserved
        # when it was accepted; any other part, and unsolicited traffic, needs room.
        split = self._split(payload)
        need = self._counts(destinations, split)
        held = pending.endpoint if pending is not None and pending.slot else None
        held_used = held is not None and need.get(held, 0) > 0
        if held is not None and held_used:
            need[held] -= 1
        if not self.delivery.reserve(need, path="answer" if pending is not None else "unsolicited"):
            detail = "DESTINATION QUEUE FULL, TRY AGAIN"
            if pending is not None:
                self._refuse_answer(link, generation, xid, payload, pending, detail)
            else:
                self._refuse_upstream(link, generation, xid, payload, Reject.E307, detail)
            return
        entry_kw = dict(ori=msg.ori, mke=msg.mke or msg.kind)
        category = started = how = None
        ends = False
        if pending is not None:
            how = self.requests.part(pending)
            route = self.directory.routes.get(pending.mke)
            # A part that says nothing more comes (route answer_ends_on, PROTOCOL.md §4): once recorded.
            ends = route is not None and how != "late" and ends_answer(msg.text, route.answer_ends_on)
            if how == "first":
                # The answer may overtake the upstream's A: the request is no longer in flight.
                owner = self.links.get(pending.upstream)
                sent = owner.sent.get(pending.xid) if owner is not None else None
                if owner is not None and sent is not None and sent.context is pending:
                    del owner.sent[pending.xid]
                    self._in_flight_gauge(owner)
                # Latency is observed once per request: client accept → first part delivered.
                category, started = pending.category, pending.started
            entry_kw.update(user=pending.user, taf=pending.taf, txn=pending.txn, ori=msg.ori or pending.ori,
                            purpose=pending.purpose, requester=pending.requester, recipient=pending.recipient)
        else:
            if match.ambiguous:  # a late part several remembered requests could own: not linked
                self.metrics.answer_ambiguous.inc()
            self.metrics.unsolicited.labels(unsolicited_class).inc()
            entry_kw["txn"] = self.new_txn()
        outputs, entries, at = self.prepare(destinations, payload, link.name, entry_kw, category, started, split=split,
                                            keep_user=pending is not None
                                            and destinations != [(pending.endpoint, pending.mnemonic)])
        del split
        refusal = pending if (pending is not None and pending in self._unrecorded
                              and not (pending.refusal_recorded or pending.refusal_sending)) else None
        if refusal is not None:
            # The answer comes again before its earlier refusal could be journaled: both, in order.
            entries.insert(0, self._refusal_entry(refusal))
            at = [i + 1 for i in at]
            refusal.refusal_sending = True
        fut = self.journal.submit(entries)
        # Until its record is committed, this traffic is neither awaited (a request that has its
        # first part is answered) nor queued: it is in flight for a drain (outstanding()).
        self._recording += 1
        # Its A (or N) goes where the upstream sent it last: a resend on a later connection while
        # this commit is under way takes it over (msc.routing.resends).
        copy = self.resends.committing(link.name, generation, xid, payload)

        def committed(f: asyncio.Future) -> None:
            self._recording -= 1
            if refusal is not None:
                refusal.refusal_sending = False
                refusal.refusal_recorded = not (f.cancelled() or f.exception() is not None)
            if f.cancelled() or f.exception() is not None:
                # Fail closed: not recorded, so not accepted and not delivered. The request it
                # answers is not finished: it waits for the answer to come again, or gets a notice.
                self.delivery.release(need)  # (a held fate slot stays with its request)
                self.landed_undelivered(outputs, at, None if f.cancelled() else f.exception())
                self.metrics.reject(Reject.E501.code)
                link.reply(framing.nak(copy.xid, Reject.E501.code, Reject.E501.reason), copy.connection)
                self.resends.committed(link.name, copy, acknowledged=False, recorded=False)
                if pending is not None:
                    self._answer_unrecorded(pending, link)
                return
            # Journaled, and delivered below; if its connection is gone the A cannot be written and
            # the upstream sends the message again: kept to know that resend (msc.routing.resends).
            acked = link.reply(framing.ack(copy.xid), copy.connection)
            self.resends.committed(link.name, copy, acknowledged=acked, recorded=True)
            if pending is not None:
                if held is not None:
                    if not held_used:  # the answer went elsewhere (a pool's printer)
                        self.delivery.release({held: 1})
                    pending.slot = False
                if how is not None:
                    self._count_part(match, how)  # parts are counted once recorded
                pending.answered = True
                pending.answer_ended = pending.answer_ended or ends
                pending.done = True
                pending.resend_deadline = None
                self._unrecorded.pop(pending, None)
            self.deliver_committed(outputs, at, f.result())

        fut.add_done_callback(committed)

    def _resent(self, link: UpstreamLink, generation: Any, xid: int, payload: bytes) -> bool:
        """Is ``payload`` the resend of a message journaled without its A (PROTOCOL.md §4 "Messages
        msc journaled and could not acknowledge")? Then it is answered as that message: ``A`` once
        its record is committed (now, if it is) — one record, one delivery — and True."""
        found = self.resends.match(link.name, generation, xid, payload)
        if found is None:
            return False
        self.metrics.upstream_resends.labels(link.name).inc()
        log.info("upstream.resend_recognised", upstream=link.name, first_copy=found)
        if found != COMMITTING and not link.reply(framing.ack(xid), generation):
            self.resends.orphan(link.name, payload)  # this connection is gone too: the next resend
        return True

    def _count_part(self, match: Match, how: str) -> None:
        self.metrics.answer_parts.labels(how).inc()
        if match.ambiguous:
            self.metrics.answer_ambiguous.inc()
            log.warning("router.ambiguous_answer", txn=match.pending.txn if match.pending else None, part=how)

    def _answer_destinations(self, pending: Pending) -> list[tuple[str, str]]:
        """Every part of an answer goes to the mnemonic that asked (its session, or its queue) —
        for a pooled mnemonic, while the allocation that asked holds it (:meth:`to_asker`)."""
        return self.to_asker(pending.endpoint, pending.mnemonic, pending.alloc)

    def _unsolicited_destinations(self, msg: UpstreamMessage) -> tuple[list[tuple[str, str]], str]:
        """Resolve the destination of a message that answers no request: (endpoint, mnemonic)
        pairs (:func:`msc.routing.destinations.upstream_destination`) and the class the
        unsolicited table gives its kind (``unknown`` if none)."""
        d = self.directory
        rule = classifier(d).classify(msg.kind)
        staffed = rule is not None and rule.deliver == DELIVER_24X7
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        out = upstream_destination(d, msg.dest, staffed=staffed, now=now, attached=self.delivery.attached)
        return out, rule.name if rule is not None else UNKNOWN

    def _refuse_answer(self, link, generation, xid, payload, pending: Pending, detail: str) -> None:
        """A part of ``pending``'s answer found no room in its destination queue: the upstream is
        told ``N E307`` (transient — it sends the part again, PROTOCOL.md §6) once the refusal is
        journaled under the request's txn and user. Like an answer the journal could not record
        (:meth:`_answer_unrecorded`), the request then waits ``resend_wait_s`` for the part to come
        again — a timeout does not turn it into E303 — and if it does not, the operator is told
        ``MSC.E307 … REFUSED: OUTPUT QUEUE FULL, NOT SENT AGAIN`` (through the request's reserved
        slot if it still has one, else as soon as there is room). The part itself is not kept:
        the upstream holds it, and keeping refused texts in memory is what the bound prevents."""
        self.metrics.reject(Reject.E307.code)
        pending.refusal_code = Reject.E307.code
        pending.done = False
        self._unrecorded[pending] = None
        pending.resend_deadline = float("inf")  # from when the refusal is recorded
        pending.refusal_sending = True
        entry = self._refusal_entry(pending)
        # Its own record always (the request's fate hangs on it), the part's text within the
        # link's refusal budget: whole, else compact (an upstream resends it while the queue is full).
        shown = self.refused_text(link.name, Reject.E307.code, payload, lambda: wire_text(payload), always=True)
        fut = self.journal.submit([msgspec.structs.replace(entry, text=f"{entry.text}: {shown}")])

        def committed(f: asyncio.Future) -> None:
            pending.refusal_sending = False
            exc = None if f.cancelled() else f.exception()
            if f.cancelled() or (exc is not None and not getattr(exc, "landed", False)):
                # Not journaled: the sweep records the refusal (without the text) once it can.
                link.reply(framing.nak(xid, Reject.E501.code, Reject.E501.reason), generation)
                return
            pending.refusal_recorded = True
            if pending in self._unrecorded:
                pending.resend_deadline = time.monotonic() + self._resend_wait(pending)
            link.reply(framing.nak(xid, Reject.E307.code, detail), generation)

        fut.add_done_callback(committed)

    def _refuse_upstream(self, link, generation, xid, payload, reject: Reject, detail: str) -> None:
        """Refuse a message from upstream: ``N`` once its refusal is journaled — whole, compact,
        or (beyond the link's budget) only counted in its minute's SUMMARY record, and then ``N``
        at once (JOURNAL.md "Refused traffic": an upstream resends what got E307 for as long as
        the queue stays full)."""
        self.metrics.reject(reject.code)
        text = self.refused_text(link.name, reject.code, payload, lambda: wire_text(payload))
        if text is None:
            link.reply(framing.nak(xid, reject.code, detail), generation)
            return
        fut = self.journal.submit([Entry(kind=Kind.REJECTED, direction="in", peer=link.name, code=reject.code,
                                         text=text)])

        def committed(f: asyncio.Future) -> None:
            link.reply(framing.nak(xid, reject.code, detail), generation)

        fut.add_done_callback(committed)


__all__ = ["MSC_PEER", "Pending", "Router", "format_output"]
