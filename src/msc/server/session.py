"""One client connection: a terminal, a host (CAD/RMS/LAN), a pooled client or a printer.

The session owns the connection's state machine (below), turns frames into decisions, and talks
to the journal, the router and delivery. Its rules, in the order a message meets them:

1. framing (E101, the connection is closed) and the per-connection rate limit (E307);
2. parsing (E102–E108);
3. the state machine: banner acknowledged before anything (E201, CJIS AC-8), logged on / bound
   before traffic (E201);
4. the connection's own mnemonics only (E210), OIF/TAF as the session requires (E104/E105);
5. the route table (E301) and the authorization matrix (E204–E209, ``msc.mnemonics.authz``);
6. upstream capacity (E302, E307);
7. ``RECEIVED`` and ``FORWARDED`` committed to the journal (E501 if not) — then ``A`` to the
   client and the request to the upstream, never before.

Every rejected message is journaled (``REJECTED``, secrets redacted) before its ``N`` — in full,
compactly, or counted in a summary (:mod:`msc.server.refusals`, JOURNAL.md "Refused traffic").

A connection is *pending* until it logs on or binds (:mod:`msc.server.listener`): it must do so
within its listener's ``logon_timeout_s``, it is closed at its ``max_refused``-th refused message,
its slot may be taken by a newer connection, and its records count against its address's journal
budget.

State machine (transitions not listed are refused with E201 or E210)::

    BANNER  --A xid 0-->                 READY
    READY   --LOGON ok (terminal/pool)-->  OPERATOR
    READY   --first message / BIND (host)-> HOST
    READY   --BIND (printer)-->            PRINTER
    OPERATOR --LOGOFF / idle / max age-->  READY
    any     --close, framing error, disable--> CLOSED
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from msc.journal.records import Entry, Kind
from msc.mnemonics import authz
from msc.mnemonics.directory import Pool, Station, User
from msc.protocol import framing
from msc.protocol.codes import FramingError, ProtocolError, Reject
from msc.protocol.framing import Framer
from msc.protocol.message import (
    AM,
    SPECIAL_KEYS,
    AdminText,
    Bind,
    Input,
    Logoff,
    Logon,
    PasswordChange,
    Transaction,
    banner,
    decode_lossy,
    format_pairs,
    parse_input,
    parse_nak,
    redact,
)
from msc.routing.router import Pending
from msc.server.listener import Handshake, source_of
from msc.server.refusals import Form, RefusalWindow, Tally, compact, iso

if TYPE_CHECKING:
    from msc.server.listener import ListenerRuntime
    from msc.server.switch import Switch

log = structlog.get_logger("msc.session")

SYS_XID = 0  # msc's own SYS outputs (the banner) are not delivery-tracked: xid 0
MAX_INFLIGHT = 256  # messages awaiting their journal commit before we stop reading
MAX_HELD = 64  # frames held while a logon is verified
WRITE_HIGH_WATER = 256 * 1024
LINGER_S = 2.0  # a connection closed for its refused traffic waits this long for its peer to close


class State(enum.Enum):
    BANNER = "banner"  # banner sent, not yet acknowledged
    READY = "ready"  # acknowledged; nothing bound yet (or operator logged off)
    OPERATOR = "operator"  # terminal or pool session with a logged-on user
    HOST = "host"  # bound host station; OIF/TAF on every message
    PRINTER = "printer"  # bound printer; receives only
    CLOSED = "closed"


#: Which special keys each state accepts (PROTOCOL.md §2–§3); routed keys need OPERATOR or HOST.
ACCEPTS: dict[State, frozenset[str]] = {
    State.BANNER: frozenset(),
    State.READY: frozenset(("LOGON", "BIND")),
    State.OPERATOR: frozenset(("LOGON", "LOGOFF", "PWD", "AM")),
    State.HOST: frozenset(("BIND", "LOGOFF", "AM")),  # a host's operators log on at the host
    State.PRINTER: frozenset(("BIND", "LOGOFF")),
    State.CLOSED: frozenset(),
}
TRAFFIC_STATES = frozenset((State.OPERATOR, State.HOST))
#: States whose refusals keep their full text, within the session's allowance (JOURNAL.md).
LOGGED_ON_STATES = frozenset((State.OPERATOR, State.HOST, State.PRINTER))
#: The code of summary records (refusals counted, not recorded one by one).
SUMMARY = "SUMMARY"


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


class Session(asyncio.Protocol):
    """asyncio protocol for one client connection (uvloop transports underneath)."""

    def __init__(self, switch: Switch, listener: ListenerRuntime, *, handshake: Handshake | None = None,
                 proxied: tuple[str | None, str | None] | None = None) -> None:
        """``handshake``: the TLS handshake this connection came through (its slot passes to
        this session). ``proxied``: the (address, certificate CN) of the client a trusted relay
        named in its PROXY header (:mod:`msc.server.proxied`), used instead of the connection's own."""
        self.handshake = handshake
        self.proxied = proxied
        self.switch = switch
        self.listener = listener
        self.metrics = switch.metrics
        self.framer = Framer(max_frame=listener.cfg.max_frame)
        self.transport: asyncio.Transport | None = None
        self.state = State.BANNER
        self.peer_ip: str | None = None
        self.peer_cn: str | None = None
        self.taf: str | None = None
        self.user: str | None = None  # logged-on user (terminal/pool) — Sink protocol
        self.user_rec: User | None = None
        self.mnemonic: str | None = None  # claimed static mnemonic or allocated pooled one
        self.endpoint: str | None = None  # delivery endpoint while attached
        self.station: Station | None = None
        self.pool: Pool | None = None
        self.alloc = None  # the ACP's loan of a pooled mnemonic (msc.mnemonics.acp.Allocation)
        self.kind: str | None = None  # terminal | host | pool | printer (metrics)
        self.connected_at = time.monotonic()
        self.logon_at = 0.0
        self.last_rx = self.last_tx = self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.inflight = 0
        self._held: list[framing.Frame] | None = None
        self._hb_probe: int | None = None
        self._hb_xid = 0
        self._write_paused = False
        self._read_paused = False
        self._wbuf: list[bytes] = []
        self._tokens = float(listener.cfg.rate_limit)
        self._token_time = time.monotonic()
        self.log = log
        self.source = "?"  # the address it is counted under (listener.source_of)
        self.pending = True  # not yet logged on or bound (msc.server.listener)
        self.checking = False  # a LOGON of this connection is being checked
        self.refusals = RefusalWindow(switch.refusal_limits)
        self.refused_total = Tally()  # a pending connection's refusals, for its DISCONNECT record
        self.close_reason: str | None = None
        self.doomed = False  # closing for its refused traffic: read nothing more
        self._eof_sent = False  # lingering close: nothing more can be written
        self.connect_recorded = False
        self.connected_wall = switch.clock()
        self._deadline: asyncio.TimerHandle | None = None

    # -- connection events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
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
            transport.write(framing.nak(0, Reject.E307.code, "TOO MANY CONNECTIONS"))
            transport.close()
            self.state = State.CLOSED
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.switch.sessions.add(self)
        self.connect_recorded = self._event("CONNECT")
        self._deadline = asyncio.get_running_loop().call_later(self.listener.cfg.logon_timeout_s, self._logon_deadline)
        self._write(framing.message(SYS_XID, banner(self.switch.settings.config.switch.banner)))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self.state is State.CLOSED and self not in self.switch.sessions:
            self.listener.release(self)
            return
        self._summarize_refusals(force=True)  # under the user it was, before the unbind forgets it
        self._unbind("DISCONNECT")
        self.state = State.CLOSED
        self.switch.sessions.discard(self)
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

    # -- the connection table (msc.server.listener) ------------------------------------------

    @property
    def evictable(self) -> bool:
        """May a newer connection take this one's slot? Not once it logged on, nor while its
        LOGON is being checked."""
        return self.pending and not self.checking

    def evict(self, reason: str) -> None:
        """The listener gave this pending connection's slot to a newer one."""
        if self._eof_sent:  # already closing (lingering after its refused traffic): now
            self.abort()
            return
        self.close_reason = ("TOO MANY CONNECTIONS FROM THIS ADDRESS NOT LOGGED ON" if reason == "address_limit"
                             else "SLOT TAKEN BY A NEWER CONNECTION, LISTENER FULL")
        self.metrics.reject(Reject.E307.code)
        self._write(framing.nak(0, Reject.E307.code, "TOO MANY CONNECTIONS"))
        self.close()

    def _logon_deadline(self) -> None:
        self._deadline = None
        if not self.pending or self.state is State.CLOSED:
            return
        if self.checking:  # its LOGON is being checked: the answer decides (within logon_wait_s)
            self._deadline = asyncio.get_running_loop().call_later(1.0, self._logon_deadline)
            return
        timeout = self.listener.cfg.logon_timeout_s
        self.close_reason = "LOGON TIMEOUT"
        self.metrics.connections_closed.labels("logon_timeout").inc()
        self.metrics.reject(Reject.E201.code)
        self._write(framing.nak(0, Reject.E201.code, f"NO LOGON WITHIN {timeout:g} S"))
        self.close()

    def _established(self) -> None:
        """Logged on or bound: the connection is no longer pending (for good)."""
        if not self.pending:
            return
        self.pending = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.listener.established(self)
        if not self.connect_recorded:
            # Its CONNECT was only counted (its address's budget was spent): a session that logs
            # on has its own record of when and from where it connected.
            self.connect_recorded = True
            self._journal_session(f"CONNECT AT {iso(self.connected_wall)}")

    def _event(self, what: str, *, text: str | None = None) -> bool:
        """A SESSION record of this connection: always once it logged on; while pending, within
        its address's budget (else counted in the address's summary). True if recorded."""
        if not self.pending:
            self._journal_session(text or what)
            return True
        return self.switch.unauthenticated(self.source, what, lambda: self._session_entry(text or what))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.endpoint is not None:
            self.switch.delivery.resume(self.endpoint)

    def data_received(self, data: bytes) -> None:
        if self.doomed:
            return  # closing for its refused traffic: what it still sends is read and dropped
        now = time.monotonic()
        self.last_rx = now
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self._framing_error(exc)
            return
        self.partial_since = (self.partial_since or now) if self.framer.buffered else None
        if frames:
            self.metrics.frame("client", "received", len(frames))
        for f in frames:
            if self.state is State.CLOSED or self.doomed:
                return
            if self._held is not None:
                if len(self._held) >= MAX_HELD:
                    self._pause_reading()
                self._held.append(f)
                continue
            self._frame(f)
        if self.framer.failed is not None:
            self._framing_error(self.framer.failed)

    # -- frames ---------------------------------------------------------------------------

    def _frame(self, f: framing.Frame) -> None:
        t = f.type
        if t == framing.MSG:
            self.last_activity = time.monotonic()
            self._message(f.xid, f.payload)
        elif t == framing.ACK:
            if f.xid == SYS_XID:
                if self.state is State.BANNER:
                    self.state = State.READY
                    self._event("BANNER ACKNOWLEDGED")
            elif self.endpoint is not None:
                self.switch.delivery.acked(self.endpoint, f.xid, self)
        elif t == framing.NAK:
            if f.xid != SYS_XID and self.endpoint is not None:
                code, reason = parse_nak(f.payload)
                self.switch.delivery.refused(self.endpoint, f.xid, code, reason, self)
        elif t == framing.HEARTBEAT:
            # Answer the client's probes; an H with our own probe's xid is its answer.
            if f.xid == self._hb_probe:
                self._hb_probe = None
            else:
                self._write(framing.heartbeat(f.xid))

    def _framing_error(self, exc: FramingError) -> None:
        self.metrics.reject(exc.code)
        self.log.info("session.framing_error", code=exc.code)
        self._write(framing.nak(0, exc.code, exc.detail))
        self.close()  # flushes the N first

    def _rate_ok(self) -> bool:
        rate = self.listener.cfg.rate_limit
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._token_time) * rate)
        self._token_time = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _message(self, xid: int, payload: bytes) -> None:
        if not self._rate_ok():
            # A flooding client is told to slow down, and is slowed: we stop reading until its
            # bucket has refilled (the kernel's buffers then push back on it).
            self._reject(xid, Reject.E307, None, payload=payload)
            self._pause_reading(resume_after=1.0 / self.listener.cfg.rate_limit * 8)
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
        except Exception:  # a bug: answer E502 with a correlation id, keep serving
            corr = self.switch.router.new_txn()
            self.log.exception("session.internal_error", correlation=corr)
            self._reject(xid, Reject.E502, f"INTERNAL ERROR {corr}", inp.journal_text(), inp, always=True)

    def _dispatch(self, xid: int, inp: Input) -> None:
        state = self.state
        if state is State.BANNER:
            raise ProtocolError(Reject.E201, "BANNER NOT ACKNOWLEDGED")
        mke = inp.mke
        if state is State.READY and self.kind is None and mke not in ("LOGON", "BIND"):
            # The first message of a host binds the connection (PROTOCOL.md §2).
            st = self.switch.directory.station_of(inp.mnemonic)
            if st is not None and st.kind == "host":
                self._bind_station(st, inp)
                state = self.state
        body = inp.body
        if mke in SPECIAL_KEYS:
            if mke not in ACCEPTS[state]:
                if state is State.PRINTER:
                    raise ProtocolError(Reject.E204, "A PRINTER ONLY RECEIVES")
                raise ProtocolError(Reject.E201 if state is State.READY else Reject.E210)
            if isinstance(body, Logon):
                if self.kind in ("host", "printer"):
                    raise ProtocolError(Reject.E210)
                self._begin_logon(xid, inp, body)
                return
            if isinstance(body, Bind):
                self._bind(xid, inp)
                return
            self._check_mnemonic(inp)
            if isinstance(body, Logoff):
                self._logoff(xid, inp)
                return
        elif state not in TRAFFIC_STATES:
            if state is State.PRINTER:
                raise ProtocolError(Reject.E204, "A PRINTER ONLY RECEIVES")
            raise ProtocolError(Reject.E201)
        else:
            self._check_mnemonic(inp)
        user, oif, taf = self._operator_of(inp)
        if isinstance(body, PasswordChange):
            self.switch.change_password(self, xid, inp, body, user)
            return
        if isinstance(body, AdminText):
            self.switch.admin_message(self, xid, inp, body, user, oif, taf)
            return
        assert isinstance(body, Transaction)
        route = self.switch.directory.routes.get(mke)
        if route is None:
            raise ProtocolError(Reject.E301, f"UNKNOWN MESSAGE KEY {mke}")
        self._authorize(user, route, body)
        # The request's fate (its first answer part, or its notice) gets a slot in the asker's
        # queue now, or the request is refused: the operator's own outputs are not being taken,
        # no new work until they are (PROTOCOL.md §5 "Bounds").
        endpoint = self._endpoint_for(inp.mnemonic)
        if not self.switch.delivery.reserve({endpoint: 1}, path="request"):
            raise ProtocolError(Reject.E307, "OUTPUT QUEUE FULL, ACKNOWLEDGE OUTPUTS FIRST")
        link, refused = self.switch.router.capacity(route)
        if refused is not None:
            self.switch.delivery.release({endpoint: 1})
            raise ProtocolError(refused)
        self._accept_transaction(xid, inp, body, user, oif, taf, route, link.name)

    # -- checks ---------------------------------------------------------------------------

    def _check_mnemonic(self, inp: Input) -> None:
        if self.kind == "host":
            if inp.mnemonic not in self.station.mnemonics:
                raise ProtocolError(Reject.E210)
        elif inp.mnemonic != self.mnemonic:
            raise ProtocolError(Reject.E210)

    def _operator_of(self, inp: Input) -> tuple[User, str, str]:
        """Who is sending, and the OIF/TAF msc sends upstream (PPP §1.6.7, §1.6.8)."""
        if self.kind == "host":
            if inp.oif is None:
                raise ProtocolError(Reject.E104, "OIF REQUIRED FROM A HOST")
            if inp.taf is None:
                raise ProtocolError(Reject.E105, "TAF REQUIRED FROM A HOST")
            user = self.switch.auth.oif_account(inp.oif)  # active and not locked (AuthService)
            denied = None if user is None else authz.check_operator(user, self.station.serves, self.switch.today())
            if user is None or denied is not None:
                # One answer whatever the reason (unknown, inactive, locked, role, agency,
                # certification): a host must not learn which user IDs exist or what they are
                # (SECURITY.md "Authentication"). A reason about the account is journaled.
                if denied is not None:
                    self._journal_session(f"OIF REFUSED {authz.refusal_reason(denied)}", code=denied.code,
                                          user=inp.oif)
                raise ProtocolError(Reject.E104, "OIF IS NOT AN ACTIVE USER OF A SERVED AGENCY")
            return user, inp.oif, inp.taf
        user = self.user_rec
        assert user is not None
        # The ACP inserts OIF and TAF itself; if the client sends them they must agree.
        if inp.oif is not None and inp.oif != user.id:
            raise ProtocolError(Reject.E104, "OIF DOES NOT MATCH THE LOGGED-ON USER")
        if inp.taf is not None and inp.taf != self.taf:
            raise ProtocolError(Reject.E105, "TAF DOES NOT MATCH THIS TERMINAL")
        return user, user.id, self.taf

    def _serving(self) -> tuple[frozenset[str], frozenset[str]]:
        src = self.pool if self.kind == "pool" else self.station
        return src.authorizations, src.serves

    def _authorize(self, user: User, route, body) -> None:
        auths, serves = self._serving()
        denied = authz.decide(user=user, authorizations=auths, serves=serves, route=route, body=body,
                              prohibited_purposes=self.switch.directory.prohibited_purposes,
                              today=self.switch.today(), edit=self.switch.directory.edits.get(route.mke))
        if denied is not None:
            if denied.reject is Reject.E208:
                self.metrics.self_inquiry.inc()
                self._journal_session("SECURITY SELF-INQUIRY REFUSED", code=Reject.E208.code, user=user.id)
            raise ProtocolError(denied.reject, denied.detail)

    # -- accepted traffic -----------------------------------------------------------------

    def _accept_transaction(self, xid: int, inp: Input, body: Transaction, user: User, oif: str, taf: str,
                            route, upstream: str) -> None:
        router = self.switch.router
        txn = router.new_txn()
        now = self.switch.clock()
        self.switch.users.used[oif] = now  # last use (CJIS AC-2, PPP §1.6.2 inactive mnemonics)
        self.switch.users.stations_used[inp.mnemonic] = now
        purpose = body.get("PUR") if route.category == authz.CORI else None
        requester = body.get("ATN") if route.category == authz.CORI else None
        recipient = body.get("REL") if route.category == authz.CORI else None
        forwarded = inp.normalized(oif, taf)
        common = dict(mnemonic=inp.mnemonic, user=oif, taf=taf, ori=body.ori, mke=inp.mke, txn=txn,
                      purpose=purpose, requester=requester, recipient=recipient)
        entries = (
            Entry(kind=Kind.RECEIVED, direction="in", peer=self._peer_name(), text=inp.journal_text(), **common),
            Entry(kind=Kind.FORWARDED, direction="out", peer=upstream, text=forwarded, same_fields_as_previous=True,
                  **common),
        )
        pending = Pending(txn=txn, header=inp.header, mnemonic=inp.mnemonic, endpoint=self._endpoint_for(inp.mnemonic),
                          alloc=self.alloc.id if self.alloc is not None else None,
                          user=oif, taf=taf, ori=body.ori, mke=inp.mke, category=route.category, upstream=upstream,
                          purpose=purpose, requester=requester, recipient=recipient, window_s=route.answer_window_s,
                          timeout_s=route.timeout_s, expects_answer=not route.one_way, slot=True)
        self._commit_then(entries, xid, b"", lambda: router.dispatch(pending, forwarded.encode("ascii")),
                          category=route.category, on_fail=lambda _exc: router.slot_free(pending))

    def _commit_then(self, entries, xid: int, ack_payload: bytes, after: Callable | None,
                     *, category: str | None = None, pass_seqs: bool = False, on_fail: Callable | None = None) -> None:
        """Journal, then (only if committed) acknowledge the client and run ``after``; if the
        commit fails, the client is told E501 and ``on_fail`` runs with the exception."""
        self.inflight += 1
        if self.inflight >= MAX_INFLIGHT:
            self._pause_reading()
        fut = self.switch.journal.submit(entries)

        def done(f: asyncio.Future) -> None:
            self._committed_one()
            if f.cancelled() or f.exception() is not None:
                # Fail closed (ARCHITECTURE.md): nothing forwarded, the client told E501.
                self.metrics.reject(Reject.E501.code)
                if category:
                    self.metrics.messages.labels(category, "rejected").inc()
                self._write(framing.nak(xid, Reject.E501.code, Reject.E501.reason))
                if on_fail is not None:
                    on_fail(None if f.cancelled() else f.exception())
                return
            if category:
                self.metrics.messages.labels(category, "accepted").inc()
            self._write(framing.ack(xid, ack_payload))
            if after is not None:
                after(f.result()) if pass_seqs else after()

        fut.add_done_callback(done)

    def _committed_one(self) -> None:
        """A message's journal record settled: count it down, and read again once the backlog
        is half gone. Every path that counts up (accept and reject alike) comes through here,
        so a connection paused for its backlog is always resumed."""
        self.inflight -= 1
        if self._read_paused and self.inflight < MAX_INFLIGHT // 2:
            self._resume_reading()

    def _peer_name(self) -> str | None:
        if self.kind == "pool":
            return self.pool.name
        return self.station.mnemonic if self.station else None

    def _endpoint_for(self, mnemonic: str) -> str:
        if self.kind == "host":
            return self.station.mnemonic
        return self.mnemonic  # terminal, pool, printer: the mnemonic is the endpoint

    # -- rejections -----------------------------------------------------------------------

    def _reject(self, xid: int, reject: Reject, detail: str | None, text: str | None = None, inp: Input | None = None,
                *, payload: bytes | None = None, always: bool = False) -> None:
        """Refuse a message: its ``N`` goes to the client once its record is committed — a
        ``REJECTED`` record in full or compact, or no record of its own but a count in a summary
        (JOURNAL.md "Refused traffic", :mod:`msc.server.refusals`). ``text``: the full journal
        text if known (else made from ``payload``: decoded, secrets redacted); ``always``: it
        gets a record of its own whatever the budgets (a checked LOGON, an internal error)."""
        self.metrics.reject(reject.code)
        category = None
        if inp is not None:
            route = self.switch.directory.routes.get(inp.mke)
            category = route.category if route else ("admin" if inp.mke == AM else None)
        if category:
            self.metrics.messages.labels(category, "rejected").inc()
        nak = framing.nak(xid, reject.code, detail or reject.reason)
        now = self.switch.clock()
        raw = payload if payload is not None else (text or "").encode("ascii", "backslashreplace")
        full: list[str] = [text] if text is not None else []

        def full_text() -> str:
            if not full:
                full.append(redact(decode_lossy(raw)))
            return full[0]

        pending = self.pending
        if pending:
            self.refused_total.refused(reject.code, raw, now)
        ended = self.refusals.roll(now)
        if ended:
            self._summary_record(ended)
        form = self.refusals.form(now, logged_on=self.state in LOGGED_ON_STATES, chars=lambda: len(full_text()),
                                  always=always)
        if form is Form.COMPACT and pending and not always and not self.switch.unauthenticated_take(self.source, now):
            form = Form.COUNTED
        self.metrics.refusals.labels(form.value).inc()
        lc = self.listener.cfg
        close = (self.refused_total.messages >= lc.max_refused if pending
                 else self.refusals.refused >= lc.max_refused_per_minute)
        if close:
            # Closed once this refusal is answered: nothing more of it is read or recorded.
            self.doomed = True
            self._pause_reading()
        if form is Form.COUNTED:
            (self.switch.unauth_budget.count(self.source, now) if pending else self.refusals.tally).refused(
                reject.code, raw, now)
            self._write(nak)
            if close:
                self._close_refused()
            return
        user = self.user
        if inp is not None:
            # A refused LOGON is recorded under the user ID it tried (logon failures by user).
            user = inp.body.user if isinstance(inp.body, Logon) else (inp.oif or self.user)
        entry = Entry(kind=Kind.REJECTED, direction="in", peer=self._peer_name(),
                      mnemonic=inp.mnemonic if inp else self.mnemonic,
                      user=user, taf=(inp.taf if inp and inp.taf else self.taf),
                      ori=inp.ori if inp else None, mke=inp.mke if inp else None, code=reject.code,
                      text=full_text() if form is Form.FULL else compact(full_text()))
        self.inflight += 1
        if self.inflight >= MAX_INFLIGHT:
            self._pause_reading()
        fut = self.switch.journal.submit([entry])

        def done(f: asyncio.Future) -> None:
            self._committed_one()
            if not f.cancelled() and f.exception() is not None:
                self.metrics.reject(Reject.E501.code)
            self._write(nak)
            if close:
                self._close_refused()

        fut.add_done_callback(done)
        self.log.info("session.reject", code=reject.code, mnemonic=inp.mnemonic if inp else self.mnemonic,
                      form=form.value)

    def _close_refused(self) -> None:
        """A peer that keeps sending refused traffic is closed (``max_refused``,
        ``max_refused_per_minute``)."""
        if self.close_reason is not None or self.transport is None or self.transport.is_closing():
            return
        self.close_reason = "TOO MANY REFUSED MESSAGES"
        self.metrics.connections_closed.labels("refused_messages").inc()
        self.metrics.reject(Reject.E307.code)
        self.log.info("session.closed", reason="refused_messages")
        self.doomed = True
        self._write(framing.nak(0, Reject.E307.code, "TOO MANY REFUSED MESSAGES, CONNECTION CLOSED"))
        self._flush()
        t = self.transport
        if t.can_write_eof():
            # A lingering close: closing a socket with the peer's unread data in it sends a reset,
            # and the reset can destroy the N frames before the peer reads them. So: FIN after
            # them, and the close LINGER_S later (reading stays paused: what the peer still
            # sends costs nothing but kernel buffer).
            self._pause_reading()
            t.write_eof()
            self._eof_sent = True
            asyncio.get_running_loop().call_later(LINGER_S, t.abort)
        else:
            self.close()

    def _summary_record(self, tally: Tally) -> None:
        """A ``REJECTED`` record with code ``SUMMARY``: what this session had refused in a minute
        beyond its records (JOURNAL.md "Refused traffic")."""
        self.switch.journal.submit([Entry(
            kind=Kind.REJECTED, direction="in", peer=self._peer_name(), mnemonic=self.mnemonic, user=self.user,
            taf=self.taf, code=SUMMARY, text=f"SUMMARY {tally.render(decode_lossy, redact)}")])

    def _summarize_refusals(self, *, force: bool = False) -> None:
        tally = self.refusals.take() if force else self.refusals.roll(self.switch.clock())
        if tally:
            self._summary_record(tally)

    # -- logon ----------------------------------------------------------------------------

    def _begin_logon(self, xid: int, inp: Input, body: Logon) -> None:
        directory = self.switch.directory
        pool = directory.pools.get(inp.header)
        if pool is not None:
            if self.kind not in (None, "pool") or (self.pool is not None and self.pool is not pool):
                raise ProtocolError(Reject.E210)
            if not pool.admits(self.peer_ip, self.peer_cn):
                raise ProtocolError(Reject.E210, "THIS ADDRESS MAY NOT USE THIS POOL")
        else:
            st = directory.stations.get(inp.mnemonic)
            if st is None or st.kind != "terminal" or not st.admits(self.peer_ip, self.peer_cn):
                raise ProtocolError(Reject.E210)
            if self.mnemonic is not None and self.mnemonic != st.mnemonic:
                raise ProtocolError(Reject.E210)
            if st.disabled:
                raise ProtocolError(Reject.E204, "STATION DISABLED")
            # PPP §1.6.2 A: the first header claims the static mnemonic for this connection.
            self.station, self.mnemonic, self.kind = st, st.mnemonic, "terminal"
        self._held = []  # hold further frames until the logon is decided
        self.checking = True  # its slot is not taken meanwhile (msc.server.listener)
        asyncio.get_running_loop().create_task(self._logon(xid, inp, body, pool))

    async def _logon(self, xid: int, inp: Input, body: Logon, pool: Pool | None) -> None:
        try:
            await self.switch.logon(self, xid, inp, body, pool)
        except Exception:
            corr = self.switch.router.new_txn()
            self.log.exception("session.internal_error", correlation=corr)
            self._reject(xid, Reject.E502, f"INTERNAL ERROR {corr}", inp.journal_text(), inp, always=True)
        finally:
            self.checking = False
            self._release_held()

    def logged_on(self, user: User, mnemonic: str, pool: Pool | None) -> None:
        """Called by the switch once a logon is committed."""
        if self.user is not None:
            self._unbind("RELOGON")
        self.user_rec, self.user = user, user.id
        self.mnemonic = mnemonic
        self.kind = "pool" if pool else "terminal"
        self.pool = pool
        self.state = State.OPERATOR
        self.logon_at = time.monotonic()
        self.log = self.log.bind(mnemonic=mnemonic, user=user.id)
        self._established()
        self.switch.session_bound(self)

    def _release_held(self) -> None:
        held, self._held = self._held, None
        for i, f in enumerate(held or ()):
            if self.state is State.CLOSED or self.doomed:
                return
            if self._held is not None:
                # A held frame began another LOGON (or PWD): the rest waits for that one, as
                # frames that arrive meanwhile do — never two checks of one connection at once.
                self._held.extend(held[i:])
                return
            self._frame(f)
        if self._read_paused and self.inflight < MAX_INFLIGHT // 2:
            self._resume_reading()

    def hold(self) -> None:
        self._held = []

    def _logoff(self, xid: int, inp: Input) -> None:
        entry = self._session_entry("LOGOFF")
        self._unbind("LOGOFF")
        if self.kind == "pool":
            self.mnemonic = None  # the mnemonic went back to its pool
        elif self.kind in ("host", "printer"):
            self.station = self.mnemonic = self.kind = None
        self.state = State.READY
        self._commit_then([entry], xid, b"", None)

    # -- binding hosts and printers -------------------------------------------------------

    def _bind(self, xid: int, inp: Input) -> None:
        st = self.switch.directory.station_of(inp.mnemonic)
        if self.state is State.BANNER:
            raise ProtocolError(Reject.E201)
        if self.kind in ("host", "printer"):
            self._check_mnemonic(inp)
            self._write(framing.ack(xid))
            return
        if st is None or st.kind not in ("host", "printer") or self.state is not State.READY:
            raise ProtocolError(Reject.E210)
        self._bind_station(st, inp)
        self._commit_then([self._session_entry("BIND")], xid, format_pairs(MNE=st.mnemonic), None)

    def _bind_station(self, st: Station, inp: Input) -> None:
        if not st.admits(self.peer_ip, self.peer_cn):
            raise ProtocolError(Reject.E210)
        if st.disabled:
            raise ProtocolError(Reject.E204, "STATION DISABLED")
        self.station, self.mnemonic, self.kind = st, st.mnemonic, st.kind
        self.state = State.HOST if st.kind == "host" else State.PRINTER
        self.log = self.log.bind(mnemonic=st.mnemonic)
        self._established()
        self.switch.session_bound(self)
        self._journal_session("BIND")

    def _unbind(self, why: str) -> None:
        if self.endpoint is not None or self.user is not None or self.kind in ("host", "printer"):
            self.switch.session_unbound(self, why)
        self.user = None
        self.user_rec = None

    # -- output (the delivery Sink) --------------------------------------------------------

    @property
    def max_output(self) -> int:
        """The longest output payload this session's client takes (its listener's max_frame)."""
        return self.listener.cfg.max_frame - 5  # type and xid (PROTOCOL.md §1)

    def send_output(self, osn: int, payload: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        if self._write_paused:
            return False
        self._write(framing.message(osn, payload))
        return True

    def send_sys(self, text: str) -> None:
        self._write(framing.message(SYS_XID, f"SYS.{text}".encode("ascii", "replace")))

    def _write(self, data: bytes) -> None:
        """Queue a frame; everything queued in one event-loop iteration leaves in one write()
        (one syscall instead of one per frame — the relay's main cost, PERFORMANCE.md)."""
        t = self.transport
        if t is not None and not t.is_closing():
            self._wbuf.append(data)
            if len(self._wbuf) == 1:
                asyncio.get_running_loop().call_soon(self._flush)
            self.metrics.frame("client", "sent")

    def _flush(self) -> None:
        buf, self._wbuf = self._wbuf, []
        t = self.transport
        if buf and t is not None and not t.is_closing() and not self._eof_sent:
            t.write(buf[0] if len(buf) == 1 else b"".join(buf))
            self.last_tx = time.monotonic()

    # -- flow control ---------------------------------------------------------------------

    def _pause_reading(self, resume_after: float | None = None) -> None:
        if self.transport is not None and not self._read_paused and not self.transport.is_closing():
            self._read_paused = True
            self.transport.pause_reading()
            if resume_after is not None:
                asyncio.get_running_loop().call_later(resume_after, self._resume_reading)

    def _resume_reading(self) -> None:
        if self.doomed:
            return  # closing for its refused traffic: it stays paused until closed
        if self.transport is not None and self._read_paused and not self.transport.is_closing():
            self._read_paused = False
            self.transport.resume_reading()

    def close(self, why: str | None = None) -> None:
        if why:
            self.send_sys(f"LOGOFF.{why}")
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- journal helpers ------------------------------------------------------------------

    def _session_entry(self, what: str, *, code: str | None = None, user: str | None = None) -> Entry:
        return Entry(kind=Kind.SESSION, direction="-", peer=self._peer_name() or self.listener.cfg.name,
                     mnemonic=self.mnemonic, user=user or self.user, taf=self.taf, code=code, text=what)

    def _journal_session(self, what: str, *, code: str | None = None, user: str | None = None) -> asyncio.Future:
        return self.switch.journal.submit([self._session_entry(what, code=code, user=user)])

    def timers(self, now: float, cfg) -> None:
        """Called about once a second by the listener's sweeper: heartbeats and timeouts."""
        lc = self.listener.cfg
        self._summarize_refusals()
        if self.partial_since is not None and now - self.partial_since > lc.read_timeout_s:
            # Slowloris: an incomplete frame held too long (PROTOCOL.md §1).
            self._framing_error(FramingError("INCOMPLETE FRAME TIMED OUT"))
            return
        if now - self.last_rx > 3 * lc.heartbeat_s:
            self.log.info("session.dead")
            self.abort()
            return
        if now - self.last_tx >= lc.heartbeat_s:
            self._hb_xid = self._hb_xid % framing.MAX_XID + 1
            self._hb_probe = self._hb_xid
            self._write(framing.heartbeat(self._hb_xid))
        if self.state is State.OPERATOR:
            sw = cfg.switch
            if now - self.last_activity > sw.idle_logoff_s:
                self.switch.force_logoff(self, "IDLE")
            elif now - self.logon_at > sw.session_max_s:
                self.switch.force_logoff(self, "SESSION MAXIMUM")

