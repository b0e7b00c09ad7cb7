"""Delivery of outputs to mnemonics: output sequence numbers, acknowledgement, store-and-forward.

PROTOCOL.md §5. Every output goes to a delivery *endpoint* — a terminal or printer station, a
host station (shared by its workstation mnemonics), or a pooled mnemonic — and gets that
endpoint's next output sequence number (OSN), used as the frame's xid. An output stays in the
endpoint's outbox until the client answers ``A`` with that xid (``DELIVERED``), it is refused
(``N``), or it expires (``UNDELIVERED``). While no session is attached, outputs wait
(``QUEUED``) and are sent in OSN order when one attaches.

The record that *creates* an output (the ``RECEIVED`` record of a response or notice, with its
``osn``) is committed before the output is offered to a session: durable before visible.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from msc.journal.records import Entry, Kind

log = structlog.get_logger("msc.delivery")


class Sink(Protocol):
    """What a session offers the delivery layer."""

    user: str | None
    taf: str | None

    def send_output(self, osn: int, payload: bytes) -> bool:
        """Write one output frame; False if the session cannot take it now (backpressure)."""


@dataclass(eq=False)
class Output:
    endpoint: str
    osn: int
    mnemonic: str
    payload: bytes
    txn: str | None = None
    created: float = field(default_factory=time.time)
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


class Delivery:
    """All endpoints' outboxes. Runs on the event loop; never blocks."""

    def __init__(self, journal, *, queue_max: int = 10000, expiry_s: float = 72 * 3600,
                 metrics: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.queue_max = queue_max
        self.expiry_s = expiry_s
        self.metrics = metrics
        self.clock = clock
        self.endpoints: dict[str, EndpointState] = {}
        self._count = 0  # outputs in all outboxes

    def _ep(self, name: str) -> EndpointState:
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = EndpointState(name)
        return ep

    # -- creating outputs -----------------------------------------------------------------

    def next_osn(self, endpoint: str) -> int:
        ep = self._ep(endpoint)
        ep.osn = ep.osn + 1 if ep.osn < 0xFFFFFFFF else 1
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
        self._gauge()
        if ep.sink is not None:
            self._send(ep, output)
        else:
            self._record_queued(output, "NOT CONNECTED")

    def _send(self, ep: EndpointState, output: Output) -> None:
        if ep.sink.send_output(output.osn, output.payload):
            output.sent = True

    def _record_queued(self, output: Output, why: str) -> None:
        if output.queued_recorded:
            return
        output.queued_recorded = True
        self.journal.submit([Entry(kind=Kind.QUEUED, direction="out", peer=output.endpoint, mnemonic=output.mnemonic,
                                   txn=output.txn, osn=output.osn, text=f"OSN {output.osn} {why}")])

    # -- sessions -------------------------------------------------------------------------

    def attach(self, endpoint: str, sink: Sink) -> int:
        """A session can now receive the endpoint's outputs; send what waits, in OSN order."""
        ep = self._ep(endpoint)
        ep.sink = sink
        for output in list(ep.outbox.values()):
            output.sent = False
        self.resume(endpoint)
        return len(ep.outbox)

    def resume(self, endpoint: str) -> None:
        """Send outputs not yet written (after attach, or when the session's writes drained)."""
        ep = self.endpoints.get(endpoint)
        if ep is None or ep.sink is None:
            return
        for output in list(ep.outbox.values()):
            if not output.sent:
                self._send(ep, output)
                if not output.sent:
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
        self.journal.submit([Entry(kind=Kind.DELIVERED, direction="out", peer=endpoint, mnemonic=output.mnemonic,
                                   user=sink.user, taf=sink.taf, txn=output.txn, osn=osn, purpose=purpose,
                                   requester=requester, recipient=recipient, text=f"OSN {osn}")])
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
        self.journal.submit([Entry(kind=Kind.UNDELIVERED, direction="out", peer=endpoint, mnemonic=output.mnemonic,
                                   user=sink.user, taf=sink.taf, txn=output.txn, osn=osn, code=code,
                                   text=f"OSN {osn} REFUSED BY CLIENT: {reason}")])
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
        self.journal.submit([Entry(kind=Kind.UNDELIVERED, direction="out", peer=endpoint, mnemonic=o.mnemonic,
                                   txn=o.txn, osn=o.osn, code=None, text=f"OSN {o.osn} {reason}") for o in outputs])
        return outputs

    def pending(self) -> int:
        return self._count

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.delivery_queued.set(self._count)
