"""One client connection: a terminal, a host (CAD/RMS/LAN), a pooled client or a printer.

:class:`Session` is the asyncio adapter of a connection: it feeds the bytes it reads to its
:class:`~msc.server.machine.SessionMachine` (the state table, framing, rate, heartbeats,
deadlines) and performs the actions the machine returns; each message the machine hands out is
judged here against the services the switch gave it (:class:`~msc.server.services.Services`). Its
rules, in the order a message meets them:

1. framing (E101, the connection is closed) and the per-connection rate limit (E307) — machine;
2. parsing (E102–E108);
3. the state: banner acknowledged before anything (E201, CJIS AC-8), logged on / bound before
   traffic (E201) — machine (:data:`~msc.server.machine.ACCEPTS`);
4. the connection's own mnemonics only (E210), OIF/TAF as the session requires (E104/E105);
5. admission (:mod:`msc.routing.admission`): the route (E301), the authorization matrix
   (E204–E209), the sender's output queue and the upstream's capacity (E302, E307);
6. ``RECEIVED`` and ``FORWARDED`` committed to the journal (E501 if not) — then ``A`` to the
   client and the request to the upstream, never before (:meth:`Session.commit_then`).

Every rejected message is journaled (``REJECTED``, secrets redacted) before its ``N`` — in full,
compactly, or counted in a summary (:mod:`msc.server.refusals`, JOURNAL.md "Refused traffic").

A connection is *pending* until it logs on or binds (:mod:`msc.server.listener`): it must do so
within its listener's ``logon_timeout_s``, it is closed at its ``max_refused``-th refused message,
its slot may be taken by a newer connection, and its records count against its address's journal
budget.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from typing import cast

import structlog

from msc.aio import spawn
from msc.journal.records import Entry, JournalFenced
from msc.mnemonics.accounts import Refused
from msc.protocol import framing
from msc.protocol.codes import ProtocolError, Reject
from msc.protocol.message import (
    AdminText,
    Bind,
    Input,
    Logoff,
    Logon,
    PasswordChange,
    banner,
    decode_lossy,
    parse_input,
    peek_key,
)
from msc.protocol.redact import redact
from msc.routing.admission import Sender
from msc.routing.shedding import SHED_TEXT
from msc.server import actions as act
from msc.server.listener import source_of
from msc.server.machine import TRAFFIC_STATES, Role, State
from msc.server.operator import Operator
from msc.server.refusals import iso
from msc.storage.errors import StorageUnavailable

#: ``E501``'s text when the commit was refused because this node of a pair no longer holds the
#: lease (:class:`JournalFenced`: paused or cut off past it; PROTOCOL.md §6 E501) rather than
#: because the journal failed — nothing was journaled or forwarded, and the node is about to end
#: the session (``SYS LOGOFF.SHUTDOWN``): send it again after logging on to the active node.
FENCED_TEXT = "NODE NO LONGER ACTIVE, NOTHING WAS FORWARDED"

log = structlog.get_logger("msc.session")

WRITE_HIGH_WATER = 256 * 1024


def taf_for(peer_ip: str | None) -> str:
    """The TAF msc inserts: IPv4 as 8 hex digits, IPv6 as its last 16 (PROTOCOL.md §2)."""
    if not peer_ip:
        return "000000"
    try:
        ip = ipaddress.ip_address(peer_ip)
    except ValueError:
        return "000000"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        else:
            return f"{int(ip) & 0xFFFFFFFFFFFFFFFF:016X}"
    return f"{int(ip):08X}"


class Session(Operator):
    """asyncio protocol for one client connection (uvloop transports underneath): the top of
    :class:`~msc.server.connection.Connection` ← ``Refusing`` ← ``Operator`` ← ``Session``."""

    # -- connection events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (TCP, or TLS over it): asyncio types the callback's argument wider.
        self.transport = self.out.transport = t = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else None
        cert = transport.get_extra_info("peercert")
        if cert:
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        self.peer_cn = value
        if self.proxied is not None:
            self.peer_ip, self.peer_cn = self.proxied
        self.taf = taf_for(self.peer_ip)
        self.source = source_of(self.peer_ip)
        self.log = log.bind(peer=self.peer_ip, listener=self.listener.cfg.name)
        if self.handshake is not None:
            self.listener.release(self.handshake)  # its slot is this session's now
        if not self.listener.admit(self):
            # Every slot is held by an established session: refuse at once, before any work.
            self.metrics.reject(Reject.E307.code)
            t.write(framing.nak(0, Reject.E307.code, "TOO MANY CONNECTIONS"))
            t.close()
            self.machine.lost()
            return
        t.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.svc.registry.add(self)
        self.connect_recorded = self._event("CONNECT")
        self._deadline = asyncio.get_running_loop().call_later(self.listener.cfg.logon_timeout_s, self._logon_deadline)
        self._perform(self.machine.connected(banner(self.svc.settings().config.switch.banner)))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self.state is State.CLOSED and self not in self.svc.registry:
            self.listener.release(self)
            return
        self.summarize_refusals(force=True)  # under the user it was, before the unbind forgets it
        self._unbind("DISCONNECT")
        self.machine.lost()
        self.svc.registry.discard(self)
        self.listener.release(self)
        if self.pending:
            # One record tells what a connection that never logged on did (JOURNAL.md).
            text = f"DISCONNECT NOT LOGGED ON, CONNECTED {iso(self.connected_wall)}"
            if self.refused_total:
                text += f"; {self.refused_total.render(decode_lossy, redact, texts=False)}"
            if self.close_reason:
                text += f"; CLOSED: {self.close_reason}"
            self._event("DISCONNECT", text=text)
        else:
            self._journal_session("DISCONNECT" + (f"; CLOSED: {self.close_reason}" if self.close_reason else ""))

    def pause_writing(self) -> None:
        self.out.write_paused = True

    def resume_writing(self) -> None:
        self.out.write_paused = False
        if self.endpoint is not None:
            self.svc.delivery.resume(self.endpoint)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        mach = self.machine
        mach.limits = self.listener.cfg  # a reload's new limits apply to the next frame
        perform = self._perform_one
        before = mach.received
        for a in mach.receive_data(data, now):
            perform(a)
        if mach.received != before:
            self.metrics.frame("client", "received", mach.received - before)
        while (nxt := mach.next_action(now)) is not None:
            perform(nxt)

    # -- performing the machine's actions -------------------------------------------------

    def _perform_one(self, a: act.Action) -> None:
        # A class pattern is checked in C (no isinstance call) and narrows each case for the type
        # checker; the most frequent actions first (a request's Message, an output's OutputAcked).
        match a:
            case act.Message():
                self._message(a.xid, a.payload)
            case act.OutputAcked():
                if self.endpoint is not None:
                    self.svc.delivery.acked(self.endpoint, a.osn, self)
            case act.Send():
                self._write(a.data)
            case act.OutputRefused():
                if self.endpoint is not None:
                    self.svc.delivery.refused(self.endpoint, a.osn, a.code, a.reason, self)
            case act.PauseReading():
                if self.out.pause_reading() and a.resume_after is not None:
                    asyncio.get_running_loop().call_later(a.resume_after, self._resume_reading)
            case act.ResumeReading():
                self._resume_reading()
            case act.BannerAcknowledged():
                self._event("BANNER ACKNOWLEDGED")
            case act.RateLimited():
                # A flooding client is told to slow down; the machine's PauseReading follows.
                self._reject(a.xid, Reject.E307, None, payload=a.payload)
            case act.FramingFailed():
                self.metrics.reject(a.code)
                self.log.info("session.framing_error", code=a.code)
            case act.Close():
                self.out.close()
            case act.Abort():
                self.log.info("session.dead")
                self.out.abort()
            case act.Logoff():
                self.logoff(a.why)

    # -- messages -------------------------------------------------------------------------

    def _message(self, xid: int, payload: bytes) -> None:
        if self.state in TRAFFIC_STATES and self.svc.admission.shed(peek_key(payload)):
            # Overloaded: new work is refused before it costs a parse; the switch's condition,
            # not the sender's doing (PROTOCOL.md §5 "Overload", msc.routing.shedding).
            self._reject(xid, Reject.E307, SHED_TEXT, payload=payload, counts=False)
            return
        try:
            inp = parse_input(payload)
        except ProtocolError as exc:
            self._reject(xid, exc.reject, exc.detail, payload=payload)
            return
        try:
            self._dispatch(xid, inp)
        except ProtocolError as exc:
            self._reject(xid, exc.reject, exc.detail, inp.journal_text(), inp, payload=payload)
        except StorageUnavailable as exc:  # its database is away: E503, not a bug
            self._storage_unavailable(xid, inp, str(exc))
        except Exception:  # a bug: answer E502 with a correlation id, keep serving
            self._internal_error(xid, inp)

    def _dispatch(self, xid: int, inp: Input) -> None:
        mach = self.machine
        mke = inp.mke
        if mach.state is State.READY and mach.role is Role.NONE and mke not in ("LOGON", "BIND"):
            # The first message of a host binds the connection (PROTOCOL.md §2).
            st = self.svc.directory().station_of(inp.mnemonic)
            if st is not None and st.kind == "host":
                self._bind_station(st)
        mach.admit(mke)  # E201 / E204 / E210 by the state table
        body = inp.body
        if isinstance(body, Logon):
            if mach.role in (Role.HOST, Role.PRINTER):
                raise ProtocolError(Reject.E210)
            self._begin_logon(xid, inp, body)
            return
        if isinstance(body, Bind):
            self._bind(xid, inp)
            return
        self._check_mnemonic(inp)
        if isinstance(body, Logoff):
            self._logoff(xid)
            return
        sender = self._sender(inp)
        if isinstance(body, PasswordChange):
            if mach.role is Role.HOST:
                raise ProtocolError(Reject.E204, "A HOST CHANGES ITS OPERATORS' PASSWORDS ITSELF")
            mach.hold()
            spawn(self._change_password(xid, inp, body, sender.user), event="session.internal_error", logger=self.log)
            return
        adm = self.svc.admission
        admitted = adm.admin(inp, body, sender) if isinstance(body, AdminText) else adm.request(inp, body, sender)
        self.commit_then(admitted.entries, xid, after=lambda seqs: adm.go(admitted, seqs),
                         failed=lambda exc: adm.failed(admitted, exc), category=admitted.category)

    # -- checks ---------------------------------------------------------------------------

    def _check_mnemonic(self, inp: Input) -> None:
        if self.machine.role is Role.HOST:
            if self.station is None or inp.mnemonic not in self.station.mnemonics:
                raise ProtocolError(Reject.E210)
        elif inp.mnemonic != self.mnemonic:
            raise ProtocolError(Reject.E210)

    def _sender(self, inp: Input) -> Sender:
        """Who is sending, and the OIF/TAF msc sends upstream (PPP §1.6.7, §1.6.8)."""
        src = self.pool if self.machine.role is Role.POOL else self.station
        assert src is not None  # admitted: the machine's table let only a logged-on or bound connection here
        peer = self._peer_name()
        if self.machine.role is Role.HOST:
            station = self.station
            assert station is not None
            if inp.oif is None:
                raise ProtocolError(Reject.E104, "OIF REQUIRED FROM A HOST")
            if inp.taf is None:
                raise ProtocolError(Reject.E105, "TAF REQUIRED FROM A HOST")
            operator = self.svc.accounts.host_operator(inp.oif, station.serves)
            if isinstance(operator, Refused):
                # One answer whatever the reason (unknown, inactive, locked, role, agency,
                # certification): a host must not learn which user IDs exist or what they are
                # (SECURITY.md "Authentication"). A reason about the account is journaled.
                if operator.failed is not None:
                    self._journal_session(f"OIF REFUSED {operator.failed}",
                                          code=(operator.cause or operator.reject).code, user=inp.oif)
                raise ProtocolError(operator.reject, operator.detail)
            return Sender(operator, inp.oif, inp.taf, src.authorizations, src.serves, station.mnemonic, peer)
        user, mnemonic, taf = self.user_rec, self.mnemonic, self.taf
        assert user is not None and mnemonic is not None and taf is not None
        # The ACP inserts OIF and TAF itself; if the client sends them they must agree.
        if inp.oif is not None and inp.oif != user.id:
            raise ProtocolError(Reject.E104, "OIF DOES NOT MATCH THE LOGGED-ON USER")
        if inp.taf is not None and inp.taf != taf:
            raise ProtocolError(Reject.E105, "TAF DOES NOT MATCH THIS TERMINAL")
        return Sender(user, user.id, taf, src.authorizations, src.serves, mnemonic, peer,
                      self.alloc.id if self.alloc is not None else None)

    # -- the journal, then the client ------------------------------------------------------

    def commit_then(self, entries: list[Entry], xid: int, ack_payload: bytes = b"", *,
                    after: Callable[[list[int]], None] | None = None,
                    failed: Callable[[BaseException | None], None] | None = None,
                    category: str | None = None) -> asyncio.Future[list[int]]:
        """Journal ``entries``; only if they are committed acknowledge the client (``A`` with
        ``ack_payload``) and call ``after(seqs)``; if not, ``N E501`` and ``failed(exc)`` (fail
        closed, ARCHITECTURE.md). The one journal-then-acknowledge step of every accepted
        message: transactions, AM, LOGON, LOGOFF, BIND, PWD."""
        mach = self.machine
        if acts := mach.committing():  # usually nothing to do: no call on the path of every request
            self._perform(acts)
        fut = self.svc.journal.submit(entries)

        def done(f: asyncio.Future[list[int]]) -> None:
            if settled := mach.committed():
                self._perform(settled)
            if f.cancelled() or f.exception() is not None:
                self.metrics.reject(Reject.E501.code)
                if category:
                    self.metrics.messages.labels(category, "rejected").inc()
                # A pair's node past its lease (paused, cut off): the journal is fine, the node is
                # not the active one any more — said so; the client reconnects at the SHUTDOWN.
                fenced = not f.cancelled() and isinstance(f.exception(), JournalFenced)
                self._write(framing.nak(xid, Reject.E501.code, FENCED_TEXT if fenced else Reject.E501.reason))
                if failed is not None:
                    failed(None if f.cancelled() else f.exception())
                return
            if category:
                self.metrics.messages.labels(category, "accepted").inc()
            self._write(framing.ack(xid, ack_payload))
            if after is not None:
                after(f.result())

        fut.add_done_callback(done)
        return fut
