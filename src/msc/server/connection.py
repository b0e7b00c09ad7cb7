"""What every client connection has and does, whatever it turns out to be: its state machine, its
output (the delivery ``Sink``), its journal records and its periodic tick.

:class:`Connection` is the base of the session's classes, one on top of the other, each owning
one concern: ``Connection`` (this module) ← :class:`~msc.server.refusing.Refusing` (refusals and
the closes they cause) ← :class:`~msc.server.operator.Operator` (LOGON, PWD, LOGOFF, BIND) ←
:class:`~msc.server.session.Session` (the asyncio adapter: bytes in, the machine's actions
performed, each message judged, journaled, acknowledged). A class uses only what it or a class
below it defines, so the type checker sees every attribute where it is used; the three methods
the session defines on the path of every request (``commit_then``, ``_perform_one``,
``_check_mnemonic``) are declared here, so that the path reads top-down in session.py
(ARCHITECTURE.md "One request, file by file").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from msc.flow import Outbox
from msc.journal.records import Entry, Kind
from msc.mnemonics.acp import Allocation
from msc.mnemonics.directory import Pool, Station, User
from msc.protocol import framing
from msc.protocol.message import Input
from msc.server import actions as act
from msc.server import machine as m
from msc.server.machine import Event, SessionMachine, State
from msc.server.refusals import RefusalWindow, Tally

if TYPE_CHECKING:
    from msc.config.model import Config
    from msc.server.listener import Handshake, ListenerRuntime
    from msc.server.services import Services

log = structlog.get_logger("msc.session")

SYS_XID = m.SYS_XID


class Connection(asyncio.Protocol):
    """One client connection's state, output and records (see the module docstring)."""

    def __init__(self, services: Services, listener: ListenerRuntime, *, handshake: Handshake | None = None,
                 proxied: tuple[str | None, str | None] | None = None) -> None:
        """``handshake``: the TLS handshake this connection came through (its slot passes to
        this session). ``proxied``: the (address, certificate CN) of the client a trusted relay
        named in its PROXY header (:mod:`msc.server.proxied`), used instead of the connection's own."""
        self.svc = services
        self.proxied = proxied
        self.metrics = services.metrics
        self.listener = listener
        self.handshake = handshake
        self.machine = SessionMachine(listener.cfg, time.monotonic())
        self.out = Outbox()
        self.transport: asyncio.Transport | None = None
        self.peer_ip: str | None = None
        self.peer_cn: str | None = None
        self.taf: str | None = None
        self.source = "?"  # the address it is counted under (listener.source_of)
        self.user_rec: User | None = None  # the logged-on user (terminal/pool)
        self.mnemonic: str | None = None  # claimed static mnemonic or allocated pooled one
        self.endpoint: str | None = None  # delivery endpoint while attached
        self.station: Station | None = None
        self.pool: Pool | None = None
        self.alloc: Allocation | None = None  # the ACP's loan of a pooled mnemonic
        self.log = log
        self.pending = True  # not yet logged on or bound, ever (msc.server.listener)
        self.checking = False  # a LOGON of this connection is being checked
        self.refusals = RefusalWindow(services.budgets.limits)
        self.refused_total = Tally()  # a pending connection's refusals, for its DISCONNECT record
        self.close_reason: str | None = None
        self.connect_recorded = False
        self.connected_wall = services.clock()
        self._deadline: asyncio.TimerHandle | None = None

    # -- what the machine knows, as the rest of msc asks it --------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def kind(self) -> str | None:
        """terminal | host | pool | printer (metrics), or None."""
        kind: str | None = self.machine.role.value
        return kind

    @property
    def user(self) -> str | None:
        """The logged-on user's ID (delivery ``Sink``)."""
        return self.user_rec.id if self.user_rec is not None else None

    @property
    def inflight(self) -> int:
        return self.machine.inflight

    # -- performing the machine's actions -------------------------------------------------

    def _perform(self, actions: list[act.Action]) -> None:
        for a in actions:
            self._perform_one(a)

    def _perform_one(self, a: act.Action) -> None:
        """Perform one action of the machine (:class:`msc.server.session.Session` does)."""
        raise NotImplementedError

    def tick(self, now: float, cfg: Config) -> None:
        """About once a second (the switch's sweeper): heartbeats and timeouts (the machine's)."""
        self.machine.limits = self.listener.cfg
        self.machine.sent(self.out.last_tx)
        sw = cfg.switch
        self._perform(self.machine.tick(now, idle_logoff_s=sw.idle_logoff_s, session_max_s=sw.session_max_s))

    # -- what the session defines (msc.server.session.Session: on the path of every request) -----

    def commit_then(self, entries: list[Entry], xid: int, ack_payload: bytes = b"", *,
                    after: Callable[[list[int]], None] | None = None,
                    failed: Callable[[BaseException | None], None] | None = None,
                    category: str | None = None) -> asyncio.Future[list[int]]:
        """Journal, then acknowledge (:meth:`msc.server.session.Session.commit_then`)."""
        raise NotImplementedError

    def _check_mnemonic(self, inp: Input) -> None:
        """The header's mnemonic is this connection's (:meth:`msc.server.session.Session._check_mnemonic`)."""
        raise NotImplementedError

    def _resume_reading(self) -> None:
        if self.state is State.DRAINING or self.state is State.CLOSED:
            return  # closing: it stays paused until closed
        self.machine.resumed()
        self.out.resume_reading()

    # -- output (the delivery Sink) --------------------------------------------------------

    @property
    def max_output(self) -> int:
        """The longest output payload this session's client takes (its listener's max_frame)."""
        return self.listener.cfg.max_frame - 5  # type and xid (PROTOCOL.md §1)

    def send_output(self, osn: int, payload: bytes) -> bool:
        if not self.out.open or self.out.write_paused:
            return False
        self._write(framing.message(osn, payload))
        return True

    def send_sys(self, text: str) -> None:
        self._write(framing.message(SYS_XID, f"SYS.{text}".encode("ascii", "replace")))

    def _write(self, data: bytes) -> None:
        if self.out.write(data):
            self.metrics.frame("client", "sent")

    def close(self, why: str | None = None) -> None:
        if why:
            self.send_sys(f"LOGOFF.{why}")
        if not self.machine.closing:
            self.machine.handle(Event.DRAIN)
        self.out.close()

    def abort(self) -> None:
        self.out.abort()

    # -- journal helpers ------------------------------------------------------------------

    def _peer_name(self) -> str | None:
        if self.pool is not None and self.machine.role is m.Role.POOL:
            return self.pool.name
        return self.station.mnemonic if self.station else None

    def _session_entry(self, what: str, *, code: str | None = None, user: str | None = None) -> Entry:
        return Entry(kind=Kind.SESSION, direction="-", peer=self._peer_name() or self.listener.cfg.name,
                     mnemonic=self.mnemonic, user=user or self.user, taf=self.taf, code=code, text=what)

    def _journal_session(self, what: str, *, code: str | None = None,
                         user: str | None = None) -> asyncio.Future[list[int]]:
        return self.svc.journal.submit([self._session_entry(what, code=code, user=user)])
