"""A client connection as a sans-IO state machine (h11's ``_state.py`` is the model).

:class:`SessionMachine` is fed the bytes a client sent and the time, and answers with the
*actions* its adapter (:class:`msc.server.session.Session`, an asyncio protocol) performs: frames
to send, messages for the session's rules, acknowledgements and refusals of outputs, reading to
pause or resume, a logoff or a close. It never touches a socket, a clock or the event loop, so a
test drives a whole connection with byte strings and a number for "now"
(``tests/unit/test_session_machine.py``).

The connection's life is one table, :data:`TRANSITIONS`: ``(state, event) → (state, role)``.
``state`` is where the connection is (PROTOCOL.md §2–§3); ``role`` is what it is — a terminal
that claimed its static mnemonic, a pool, a bound host or printer (PPP §1.6.2 A/B) — and changes
only through the same table::

    BANNER   --banner acknowledged (A xid 0)-->      READY
    READY    --claim terminal / claim pool-->        READY     (role TERMINAL / POOL)
    READY    --logon ok-->                           OPERATOR  (role TERMINAL or POOL)
    OPERATOR --logon ok (a new user)-->              OPERATOR
    OPERATOR --logoff / idle / session maximum-->    READY     (the claim stays)
    READY    --bind host / bind printer-->           HOST / PRINTER
    HOST, PRINTER --logoff-->                        READY     (role NONE)
    any but CLOSED --drain-->                        DRAINING  (answers owed still go out)
    any      --lost-->                               CLOSED

A transition that is not in the table raises :class:`IllegalTransition` — a bug in the caller,
never the client's fault: what a client may send in each state is :data:`ACCEPTS`, and a
message outside it is refused with E201/E204/E210 by :meth:`SessionMachine.admit` before any
transition is attempted.

Besides the state the machine keeps what is connection-level and pure: the frame decoder
(E101), the per-connection token bucket (E307), the heartbeat probe, the deadlines (an
incomplete frame held too long, a dead peer, idle and maximum logon age), the frames held while
a logon is decided, and the count of messages awaiting their journal commit that pauses reading.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from msc.protocol import framing
from msc.protocol.codes import FramingError, ProtocolError, Reject
from msc.protocol.message import SPECIAL_KEYS, parse_nak

# The actions the machine returns (server/actions.py), named here too: the adapter and the tests
# say ``machine.Send`` and so on.
from msc.server.actions import (
    Abort,
    Action,
    BannerAcknowledged,
    Close,
    FramingFailed,
    Logoff,
    Message,
    OutputAcked,
    OutputRefused,
    PauseReading,
    RateLimited,
    ResumeReading,
    Send,
)

SYS_XID = 0  # msc's own SYS outputs (the banner) are not delivery-tracked: xid 0
MAX_INFLIGHT = 256  # messages awaiting their journal commit before we stop reading
MAX_HELD = 64  # frames held while a logon is verified


class State(enum.Enum):
    BANNER = "banner"  # banner sent, not yet acknowledged
    READY = "ready"  # acknowledged; nobody logged on, nothing bound (perhaps a claim: role)
    OPERATOR = "operator"  # terminal or pool session with a logged-on user
    HOST = "host"  # bound host station; OIF/TAF on every message
    PRINTER = "printer"  # bound printer; receives only
    DRAINING = "draining"  # closing: what is owed is written, nothing more is read
    CLOSED = "closed"


class Role(enum.Enum):
    """What the connection is. ``NONE`` until a LOGON claims a terminal or pool or a BIND (or a
    host's first message) binds a station."""

    NONE = None
    TERMINAL = "terminal"
    POOL = "pool"
    HOST = "host"
    PRINTER = "printer"


class Event(enum.Enum):
    BANNER_ACK = "banner acknowledged"
    CLAIM_TERMINAL = "claim terminal"  # PPP §1.6.2 A: the first header claims the static mnemonic
    CLAIM_POOL = "claim pool"  # PPP §1.6.2 B: a LOGON at a pool's header
    LOGON_OK = "logon ok"
    BIND_HOST = "bind host"
    BIND_PRINTER = "bind printer"
    LOGOFF = "logoff"  # LOGOFF typed, idle, session maximum, user disabled
    DRAIN = "drain"  # close requested (shutdown, framing error, replaced, station disabled)
    LOST = "lost"  # the transport is gone


_KEEP = object()  # the role stays as it is

#: The one transition table: (state, event) → (next state, next role or _KEEP). ``None`` as the
#: key's state stands for "any state not CLOSED" and is looked up after the exact key.
TRANSITIONS: dict[tuple[State | None, Event], tuple[State, object]] = {
    (State.BANNER, Event.BANNER_ACK): (State.READY, _KEEP),
    (State.READY, Event.CLAIM_TERMINAL): (State.READY, Role.TERMINAL),
    (State.READY, Event.CLAIM_POOL): (State.READY, Role.POOL),
    (State.OPERATOR, Event.CLAIM_POOL): (State.OPERATOR, Role.POOL),  # a new logon at the same pool
    (State.OPERATOR, Event.CLAIM_TERMINAL): (State.OPERATOR, Role.TERMINAL),  # a new logon, same station
    (State.READY, Event.LOGON_OK): (State.OPERATOR, _KEEP),
    (State.OPERATOR, Event.LOGON_OK): (State.OPERATOR, _KEEP),
    (State.READY, Event.BIND_HOST): (State.HOST, Role.HOST),
    (State.READY, Event.BIND_PRINTER): (State.PRINTER, Role.PRINTER),
    (State.OPERATOR, Event.LOGOFF): (State.READY, _KEEP),
    (State.HOST, Event.LOGOFF): (State.READY, Role.NONE),
    (State.PRINTER, Event.LOGOFF): (State.READY, Role.NONE),
    (None, Event.DRAIN): (State.DRAINING, _KEEP),
    (None, Event.LOST): (State.CLOSED, _KEEP),
    (State.CLOSED, Event.LOST): (State.CLOSED, _KEEP),
    (State.CLOSED, Event.DRAIN): (State.CLOSED, _KEEP),
}

#: Which roles each claim or logon may start from (a terminal cannot become a pool session).
CLAIMS_FROM: dict[Event, frozenset[Role]] = {
    Event.CLAIM_TERMINAL: frozenset((Role.NONE, Role.TERMINAL)),
    Event.CLAIM_POOL: frozenset((Role.NONE, Role.POOL)),
    Event.LOGON_OK: frozenset((Role.TERMINAL, Role.POOL)),
}

#: Which special keys each state accepts (PROTOCOL.md §2–§3); routed keys need OPERATOR or HOST.
ACCEPTS: dict[State, frozenset[str]] = {
    State.BANNER: frozenset(),
    State.READY: frozenset(("LOGON", "BIND")),
    State.OPERATOR: frozenset(("LOGON", "LOGOFF", "PWD", "AM")),
    State.HOST: frozenset(("BIND", "LOGOFF", "AM")),  # a host's operators log on at the host
    State.PRINTER: frozenset(("BIND", "LOGOFF")),
    State.DRAINING: frozenset(),
    State.CLOSED: frozenset(),
}
TRAFFIC_STATES = frozenset((State.OPERATOR, State.HOST))
#: States in which the connection is established (logged on or bound).
BOUND_STATES = frozenset((State.OPERATOR, State.HOST, State.PRINTER))


class IllegalTransition(RuntimeError):
    """A transition the table does not have: a bug in the session, not the client's doing."""


class ConnectionLimits(Protocol):
    """What the machine reads of its limits: a :class:`Limits`, or a listener's configuration
    section (``[[listener]]``, which has these and more)."""

    @property
    def max_frame(self) -> int: ...

    @property
    def rate_limit(self) -> float: ...

    @property
    def heartbeat_s(self) -> float: ...

    @property
    def read_timeout_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """A listener's per-connection limits (CONFIG.md ``[[listener]]``), in bytes and seconds."""

    max_frame: int = framing.DEFAULT_MAX_FRAME
    rate_limit: float = 200.0  # messages per second, token bucket of as many tokens
    heartbeat_s: float = 30.0
    read_timeout_s: float = 10.0

    @classmethod
    def of(cls, listener: ConnectionLimits) -> Limits:
        return cls(max_frame=listener.max_frame, rate_limit=listener.rate_limit, heartbeat_s=listener.heartbeat_s,
                   read_timeout_s=listener.read_timeout_s)


class SessionMachine:
    """One client connection's protocol, without I/O. All times are monotonic seconds.

    ``limits``: a :class:`Limits` or anything with its attributes (a listener's configuration
    section); it may be replaced while the connection lives (a reload), except ``max_frame``,
    which the frame decoder keeps from the start."""

    def __init__(self, limits: ConnectionLimits, now: float) -> None:
        self.limits = limits
        self.state = State.BANNER
        self.role = Role.NONE
        self.framer = framing.Framer(max_frame=limits.max_frame)
        self.connected_at = now
        self.logon_at = 0.0
        self.last_rx = self.last_tx = self.last_activity = now
        self.partial_since: float | None = None
        self.inflight = 0  # messages awaiting their journal commit
        self.received = 0  # frames decoded so far (all types)
        self.read_paused = False
        self._frames: deque[framing.Frame] = deque()  # received, not yet handed out
        self._actions: deque[Action] = deque()  # caused by a frame, not yet handed out
        self._failure: FramingError | None = None
        self._holding = False
        self._hb_probe: int | None = None
        self._hb_xid = 0
        self._tokens = float(limits.rate_limit)
        self._token_time = now

    # -- the table ------------------------------------------------------------------------

    def handle(self, event: Event) -> State:
        """Apply ``event`` through :data:`TRANSITIONS`; returns the new state."""
        key = (self.state, event)
        nxt = TRANSITIONS.get(key)
        if nxt is None and self.state is not State.CLOSED:
            nxt = TRANSITIONS.get((None, event))
        allowed = CLAIMS_FROM.get(event)
        if nxt is None or (allowed is not None and self.role not in allowed):
            raise IllegalTransition(f"{event.value} in state {self.state.value} as {self.role.value}")
        self.state, role = nxt
        if role is not _KEEP:
            self.role = role  # type: ignore[assignment]
        return self.state

    def can(self, event: Event) -> bool:
        """Would :meth:`handle` accept ``event`` now?"""
        if self.state is not State.CLOSED and (self.state, event) not in TRANSITIONS \
                and (None, event) not in TRANSITIONS:
            return False
        if self.state is State.CLOSED and (self.state, event) not in TRANSITIONS:
            return False
        allowed = CLAIMS_FROM.get(event)
        return allowed is None or self.role in allowed

    @property
    def closing(self) -> bool:
        return self.state in (State.DRAINING, State.CLOSED)

    def admit(self, mke: str) -> None:
        """May a message with key ``mke`` be handled in this state? Raises the client's
        :class:`ProtocolError` if not (E201 not logged on, E204 a printer only receives, E210 a
        key this kind of connection does not send)."""
        state = self.state
        if state is State.BANNER:
            raise ProtocolError(Reject.E201, "BANNER NOT ACKNOWLEDGED")
        if mke in SPECIAL_KEYS:
            if mke not in ACCEPTS[state]:
                if state is State.PRINTER:
                    raise ProtocolError(Reject.E204, "A PRINTER ONLY RECEIVES")
                raise ProtocolError(Reject.E201 if state is State.READY else Reject.E210)
        elif state not in TRAFFIC_STATES:
            if state is State.PRINTER:
                raise ProtocolError(Reject.E204, "A PRINTER ONLY RECEIVES")
            raise ProtocolError(Reject.E201)

    # -- bytes in (h11's receive_data / next_event) ----------------------------------------

    def connected(self, banner: bytes) -> list[Action]:
        """The connection is accepted: the banner goes out (CJIS AC-8, PROTOCOL.md §2)."""
        return [Send(framing.message(SYS_XID, banner))]

    def receive_data(self, data: bytes, now: float) -> list[Action]:
        """Bytes from the client. Their frames wait in the machine; :meth:`next_action` hands
        out what each causes, one frame at a time, so that a frame that starts a logon holds the
        frames behind it. Returns actions due at once (pause reading while too much is held)."""
        if self.state is State.DRAINING or self.state is State.CLOSED:  # closing (inline: every read)
            return []
        self.last_rx = now
        try:
            frames = self.framer.feed(data)
            self.received += len(frames)
            self._frames.extend(frames)
        except FramingError as exc:
            self._failure = exc
        else:
            if self.framer.failed is not None:
                self._failure = self.framer.failed  # after the good frames before it
        self.partial_since = (self.partial_since or now) if self.framer.buffered else None
        if self._holding and len(self._frames) > MAX_HELD:
            return self._pause()
        return []

    def next_action(self, now: float) -> Action | None:
        """The next thing to do for what the client sent; ``None`` when there is nothing (more
        data is needed, or frames are held while a logon is decided)."""
        while True:
            if self._actions:
                return self._actions.popleft()
            if self.state is State.DRAINING or self.state is State.CLOSED:
                self._frames.clear()
                return None
            if self._frames and not self._holding:
                f = self._frames.popleft()
                # The two frames of every transaction, without the general path's lists: an M
                # within the rate, and the A of an output.
                if f.type == framing.MSG and self._rate_ok(now):
                    self.last_activity = now
                    return Message(f.xid, f.payload)
                if f.type == framing.ACK and f.xid != SYS_XID:
                    return OutputAcked(f.xid)
                self._actions.extend(self._frame(f, now, rate_checked=f.type == framing.MSG))
                continue
            if self._failure is not None:
                # Frames held behind a logon are dropped with the connection (as before the
                # machine: the N and the close come at once).
                exc, self._failure = self._failure, None
                self._frames.clear()
                self._actions.extend(self._framing_failed(exc))
                continue
            return None

    def receive(self, data: bytes, now: float) -> list[Action]:
        """:meth:`receive_data` and every :meth:`next_action` it makes possible (for tests and
        callers that do not start logons between frames)."""
        out = self.receive_data(data, now)
        while (a := self.next_action(now)) is not None:
            out.append(a)
        return out

    def _frame(self, f: framing.Frame, now: float, *, rate_checked: bool = False) -> list[Action]:
        """``rate_checked``: an M whose token was already refused (:meth:`next_action`)."""
        t = f.type
        if t == framing.MSG:
            self.last_activity = now
            if rate_checked or not self._rate_ok(now):
                # A flooding client is told to slow down, and is slowed: we stop reading until its
                # bucket has refilled (the kernel's buffers then push back on it).
                return [RateLimited(f.xid, f.payload), *self._pause(resume_after=8.0 / self.limits.rate_limit)]
            return [Message(f.xid, f.payload)]
        if t == framing.ACK:
            if f.xid == SYS_XID:
                if self.state is State.BANNER:
                    self.handle(Event.BANNER_ACK)
                    return [BannerAcknowledged()]
                return []
            return [OutputAcked(f.xid)]
        if t == framing.NAK:
            if f.xid == SYS_XID:
                return []
            code, reason = parse_nak(f.payload)
            return [OutputRefused(f.xid, code, reason)]
        # HEARTBEAT: answer the client's probes; an H with our own probe's xid is its answer.
        if f.xid == self._hb_probe:
            self._hb_probe = None
            return []
        return [Send(framing.heartbeat(f.xid))]

    def _framing_failed(self, exc: FramingError) -> list[Action]:
        out: list[Action] = [FramingFailed(exc.code, exc.detail or ""), Send(framing.nak(0, exc.code, exc.detail))]
        return out + self.close()

    def _rate_ok(self, now: float) -> bool:
        rate = self.limits.rate_limit
        self._tokens = min(rate, self._tokens + (now - self._token_time) * rate)
        self._token_time = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    # -- frames held while a logon is decided ---------------------------------------------

    @property
    def holding(self) -> bool:
        return self._holding

    def hold(self) -> None:
        """Hand out no more frames (a LOGON or PWD is being decided in a worker thread)."""
        self._holding = True

    def release(self) -> list[Action]:
        """The decision is in: :meth:`next_action` hands out the held frames again."""
        self._holding = False
        if self.read_paused and self.inflight < MAX_INFLIGHT // 2:
            return self._resume()
        return []

    # -- journal backlog ------------------------------------------------------------------

    def committing(self) -> list[Action]:
        """A message's records went to the journal: past :data:`MAX_INFLIGHT` stop reading."""
        self.inflight += 1
        return self._pause() if self.inflight >= MAX_INFLIGHT else []

    def committed(self) -> list[Action]:
        """A message's records settled (committed or failed): read again once the backlog is
        half gone. Every path that counts up comes through here, so a connection paused for its
        backlog is always resumed."""
        self.inflight -= 1
        if self.read_paused and self.inflight < MAX_INFLIGHT // 2 and not self._holding:
            return self._resume()
        return []

    def resumed(self) -> None:
        """Reading resumed by a timer (after :class:`PauseReading` with ``resume_after``)."""
        self.read_paused = False

    def _pause(self, resume_after: float | None = None) -> list[Action]:
        if self.read_paused or self.closing:
            return []
        self.read_paused = True
        return [PauseReading(resume_after)]

    def _resume(self) -> list[Action]:
        if not self.read_paused or self.closing:
            return []
        self.read_paused = False
        return [ResumeReading()]

    # -- bytes out, timers, the end -------------------------------------------------------

    def sent(self, now: float) -> None:
        """Something was written to the client at ``now`` (heartbeats are due after silence)."""
        self.last_tx = now

    def logged_on(self, now: float) -> None:
        self.handle(Event.LOGON_OK)
        self.logon_at = now

    def tick(self, now: float, *, idle_logoff_s: float, session_max_s: float) -> list[Action]:
        """About once a second: heartbeats and timeouts (PROTOCOL.md §1, CJIS AC-11/AC-12)."""
        if self.closing:
            return []
        lim = self.limits
        if self.partial_since is not None and now - self.partial_since > lim.read_timeout_s:
            # Slowloris: an incomplete frame held too long (PROTOCOL.md §1).
            return self._framing_failed(FramingError("INCOMPLETE FRAME TIMED OUT"))
        if now - self.last_rx > 3 * lim.heartbeat_s:
            return [Abort()]
        out: list[Action] = []
        if now - self.last_tx >= lim.heartbeat_s:
            self._hb_xid = self._hb_xid % framing.MAX_XID + 1
            self._hb_probe = self._hb_xid
            out.append(Send(framing.heartbeat(self._hb_xid)))
        if self.state is State.OPERATOR:
            if now - self.last_activity > idle_logoff_s:
                out.append(Logoff("IDLE"))
            elif now - self.logon_at > session_max_s:
                out.append(Logoff("SESSION MAXIMUM"))
        return out

    def close(self) -> list[Action]:
        """Close after what is queued (the state becomes DRAINING: nothing more is read)."""
        if self.closing:
            return []
        self.handle(Event.DRAIN)
        return [Close()]

    def lost(self) -> None:
        self.handle(Event.LOST)
