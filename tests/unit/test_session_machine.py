"""The session's state machine (msc.server.machine), driven with bytes and a fake clock alone:
no socket, no event loop. The transition table, what each state accepts, framing failures,
the rate limit, heartbeats and deadlines, frames held while a logon is decided, the journal
backlog that pauses reading."""

from __future__ import annotations

import itertools

import pytest

from msc.protocol import framing
from msc.protocol.codes import ProtocolError
from msc.server.machine import (
    ACCEPTS,
    MAX_HELD,
    MAX_INFLIGHT,
    TRANSITIONS,
    Abort,
    BannerAcknowledged,
    Close,
    Event,
    FramingFailed,
    IllegalTransition,
    Limits,
    Logoff,
    Message,
    OutputAcked,
    OutputRefused,
    PauseReading,
    RateLimited,
    ResumeReading,
    Role,
    Send,
    SessionMachine,
    State,
)

LIMITS = Limits(max_frame=4096, rate_limit=50.0, heartbeat_s=30.0, read_timeout_s=10.0)
T0 = 1000.0


def machine(limits: Limits = LIMITS) -> SessionMachine:
    return SessionMachine(limits, T0)


def acked(m: SessionMachine) -> SessionMachine:
    assert m.receive(framing.ack(0), T0) == [BannerAcknowledged()]
    return m


def msg(xid: int, text: str) -> bytes:
    return framing.message(xid, text.encode("ascii"))


# -- the table ----------------------------------------------------------------------------

#: Every path through the table a connection can take, with the state and role it ends in.
PATHS = [
    ([Event.BANNER_ACK], State.READY, Role.NONE),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL, Event.LOGON_OK], State.OPERATOR, Role.TERMINAL),
    ([Event.BANNER_ACK, Event.CLAIM_POOL, Event.LOGON_OK], State.OPERATOR, Role.POOL),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL, Event.LOGON_OK, Event.LOGOFF], State.READY, Role.TERMINAL),
    ([Event.BANNER_ACK, Event.CLAIM_POOL, Event.LOGON_OK, Event.LOGOFF, Event.CLAIM_POOL, Event.LOGON_OK],
     State.OPERATOR, Role.POOL),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL, Event.LOGON_OK, Event.CLAIM_TERMINAL, Event.LOGON_OK],
     State.OPERATOR, Role.TERMINAL),
    ([Event.BANNER_ACK, Event.BIND_HOST], State.HOST, Role.HOST),
    ([Event.BANNER_ACK, Event.BIND_HOST, Event.LOGOFF], State.READY, Role.NONE),
    ([Event.BANNER_ACK, Event.BIND_PRINTER, Event.LOGOFF, Event.BIND_HOST], State.HOST, Role.HOST),
    ([Event.DRAIN], State.DRAINING, Role.NONE),
    ([Event.BANNER_ACK, Event.BIND_PRINTER, Event.DRAIN, Event.LOST], State.CLOSED, Role.PRINTER),
    ([Event.LOST, Event.LOST, Event.DRAIN], State.CLOSED, Role.NONE),
]


@pytest.mark.parametrize(("events", "state", "role"), PATHS)
def test_paths_through_the_table(events, state, role):
    m = machine()
    for e in events:
        assert m.can(e)
        m.handle(e)
    assert (m.state, m.role) == (state, role)


#: Transitions the table does not have: a bug in the caller, never silently applied.
ILLEGAL = [
    ([], Event.LOGON_OK),  # not before the banner is acknowledged
    ([], Event.BIND_HOST),
    ([Event.BANNER_ACK], Event.LOGON_OK),  # nobody claimed a terminal or pool
    ([Event.BANNER_ACK], Event.BANNER_ACK),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL], Event.CLAIM_POOL),  # a terminal does not become a pool
    ([Event.BANNER_ACK, Event.CLAIM_POOL], Event.CLAIM_TERMINAL),
    ([Event.BANNER_ACK, Event.BIND_HOST], Event.BIND_PRINTER),
    ([Event.BANNER_ACK, Event.BIND_HOST], Event.LOGON_OK),
    ([Event.BANNER_ACK], Event.LOGOFF),
    ([Event.DRAIN], Event.BANNER_ACK),
    ([Event.LOST], Event.LOGOFF),
]


@pytest.mark.parametrize(("events", "bad"), ILLEGAL)
def test_transitions_outside_the_table_raise(events, bad):
    m = machine()
    for e in events:
        m.handle(e)
    before = (m.state, m.role)
    assert not m.can(bad)
    with pytest.raises(IllegalTransition):
        m.handle(bad)
    assert (m.state, m.role) == before


def test_every_state_is_in_the_accepts_table_and_every_target_state_exists():
    assert set(ACCEPTS) == set(State)
    assert {nxt for nxt, _ in TRANSITIONS.values()} <= set(State)


#: (events to get there, message key, reject code or None if admitted)
ADMIT = [
    ([], "LOGON", "E201"),
    ([], "QW", "E201"),
    ([Event.BANNER_ACK], "LOGON", None),
    ([Event.BANNER_ACK], "BIND", None),
    ([Event.BANNER_ACK], "QW", "E201"),
    ([Event.BANNER_ACK], "LOGOFF", "E201"),
    ([Event.BANNER_ACK], "PWD", "E201"),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL, Event.LOGON_OK], "QW", None),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL, Event.LOGON_OK], "AM", None),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL, Event.LOGON_OK], "PWD", None),
    ([Event.BANNER_ACK, Event.CLAIM_TERMINAL, Event.LOGON_OK], "BIND", "E210"),
    ([Event.BANNER_ACK, Event.BIND_HOST], "QW", None),
    ([Event.BANNER_ACK, Event.BIND_HOST], "PWD", "E210"),
    ([Event.BANNER_ACK, Event.BIND_HOST], "LOGON", "E210"),
    ([Event.BANNER_ACK, Event.BIND_PRINTER], "QW", "E204"),
    ([Event.BANNER_ACK, Event.BIND_PRINTER], "AM", "E204"),
    ([Event.BANNER_ACK, Event.BIND_PRINTER], "BIND", None),
    ([Event.DRAIN], "QW", "E201"),
]


@pytest.mark.parametrize(("events", "mke", "code"), ADMIT)
def test_what_each_state_admits(events, mke, code):
    m = machine()
    for e in events:
        m.handle(e)
    if code is None:
        m.admit(mke)
    else:
        with pytest.raises(ProtocolError) as exc:
            m.admit(mke)
        assert exc.value.code == code


# -- bytes in -----------------------------------------------------------------------------

def test_connection_starts_with_the_banner_and_its_ack_moves_to_ready():
    m = machine()
    [send] = m.connected(b"SYS.BANNER.AUTHORIZED USE ONLY")
    assert send == Send(framing.message(0, b"SYS.BANNER.AUTHORIZED USE ONLY"))
    assert m.state is State.BANNER
    assert m.receive(framing.ack(0), T0) == [BannerAcknowledged()]
    assert m.state is State.READY
    assert m.receive(framing.ack(0), T0) == []  # a second one is nothing


def test_frames_split_anywhere_give_the_same_actions():
    stream = framing.ack(0) + msg(1, "LOGON") + framing.ack(7) + framing.nak(8, "E203", "LOCKED") + framing.heartbeat(9)
    whole = machine().receive(stream, T0)
    assert whole == [BannerAcknowledged(), Message(1, b"LOGON"), OutputAcked(7), OutputRefused(8, "E203", "LOCKED"),
                     Send(framing.heartbeat(9))]
    for cut in range(1, len(stream)):
        m = machine()
        assert m.receive(stream[:cut], T0) + m.receive(stream[cut:], T0) == whole


def test_nak_and_ack_of_xid_0_are_not_outputs():
    m = acked(machine())
    assert m.receive(framing.nak(0, "E101", "X") + framing.ack(0), T0) == []


#: Byte strings that break framing (PROTOCOL.md §1): each is E101, an N and a close.
BAD_FRAMES = [
    b"\x00\x00\x00\x00M\x00\x00\x00\x01",  # length 0
    b"\x00\x00\x00\x04M\x00\x00\x00\x01",  # length below 5
    b"\x00\x00\x10\x01M\x00\x00\x00\x01",  # above max_frame (4096)
    b"\xff\xff\xff\xffM\x00\x00\x00\x01",
    b"\x00\x00\x00\x05X\x00\x00\x00\x01",  # unknown type
    b"\x00\x00\x00\x05m\x00\x00\x00\x01",  # type letters are upper case
]


@pytest.mark.parametrize("bad", BAD_FRAMES)
def test_framing_errors_answer_n_and_close_after_the_good_frames(bad):
    m = acked(machine())
    actions = m.receive(msg(1, "QW.A") + bad + msg(2, "never read"), T0)
    assert actions[0] == Message(1, b"QW.A")
    assert isinstance(actions[1], FramingFailed) and actions[1].code == "E101"
    [nak] = framing.Framer().feed(actions[2].data)
    assert (nak.type, nak.xid, nak.payload[:5]) == (framing.NAK, 0, b"E101 ")
    assert actions[3:] == [Close()]
    assert m.state is State.DRAINING
    assert m.receive(msg(3, "more"), T0 + 1) == []  # nothing more is read


def test_the_rate_limit_refuses_and_pauses_then_the_bucket_refills():
    m = acked(machine())
    burst = b"".join(msg(i, "QW") for i in range(1, 52))
    actions = m.receive(burst, T0)
    messages = [a for a in actions if isinstance(a, Message)]
    assert len(messages) == 50  # the bucket holds rate_limit tokens
    assert RateLimited(51, b"QW") in actions
    assert PauseReading(resume_after=8 / 50) in actions
    m.resumed()
    assert m.receive(msg(60, "QW"), T0 + 1.0) == [Message(60, b"QW")]


# -- held frames --------------------------------------------------------------------------

def test_frames_behind_a_logon_wait_for_its_decision():
    m = acked(machine())
    m.receive_data(msg(1, "LOGON") + msg(2, "QW.A") + framing.heartbeat(5), T0)
    assert m.next_action(T0) == Message(1, b"LOGON")
    m.hold()  # what the session does for a LOGON
    assert m.next_action(T0) is None
    m.receive_data(msg(3, "QW.B"), T0)
    assert m.next_action(T0) is None
    assert m.release() == []
    rest = list(iter(lambda: m.next_action(T0 + 1), None))
    assert rest == [Message(2, b"QW.A"), Send(framing.heartbeat(5)), Message(3, b"QW.B")]


def test_too_many_held_frames_pause_reading_until_the_release():
    m = acked(machine())
    m.hold()
    paused = []
    for i in range(MAX_HELD + 5):
        paused += m.receive_data(msg(i + 1, "QW"), T0)
    assert paused == [PauseReading()]
    assert m.release() == [ResumeReading()]


def test_a_framing_error_while_holding_closes_at_once():
    m = acked(machine())
    m.hold()
    m.receive_data(msg(1, "QW") + BAD_FRAMES[0], T0)
    actions = list(iter(lambda: m.next_action(T0), None))
    assert isinstance(actions[0], FramingFailed) and actions[-1] == Close()


# -- the journal backlog ------------------------------------------------------------------

def test_backlog_pauses_reading_and_resumes_at_half():
    m = acked(machine())
    out = []
    for _ in range(MAX_INFLIGHT):
        out += m.committing()
    assert out == [PauseReading()]
    out = []
    for _ in range(MAX_INFLIGHT // 2):
        out += m.committed()
    assert out == []
    assert m.committed() == [ResumeReading()]
    assert m.inflight == MAX_INFLIGHT // 2 - 1


# -- timers -------------------------------------------------------------------------------

def operator(now: float = T0) -> SessionMachine:
    m = acked(machine())
    m.handle(Event.CLAIM_TERMINAL)
    m.logged_on(now)
    return m


def test_heartbeat_after_silence_and_its_answer_is_not_echoed():
    m = acked(machine())
    assert m.tick(T0 + 29, idle_logoff_s=900, session_max_s=86400) == []
    m.receive(framing.heartbeat(77), T0 + 29)  # the client's probe is answered…
    [probe] = m.tick(T0 + 30, idle_logoff_s=900, session_max_s=86400)
    assert probe == Send(framing.heartbeat(1))
    m.sent(T0 + 30)
    assert m.receive(framing.heartbeat(1), T0 + 31) == []  # …ours is not


def test_dead_peer_is_aborted():
    m = acked(machine())
    assert m.tick(T0 + 3 * 30 + 0.5, idle_logoff_s=900, session_max_s=86400) == [Abort()]


def test_slowloris_partial_frame_times_out():
    m = acked(machine())
    m.receive(msg(1, "QW.PART")[:7], T0)
    m.receive(b"", T0 + 5)
    assert m.tick(T0 + 9, idle_logoff_s=900, session_max_s=86400) == []
    actions = m.tick(T0 + 10.5, idle_logoff_s=900, session_max_s=86400)
    assert isinstance(actions[0], FramingFailed) and "INCOMPLETE" in actions[0].detail
    assert actions[-1] == Close()


@pytest.mark.parametrize(("idle", "age", "why"), [(901, 901, "IDLE"), (500, 86401, "SESSION MAXIMUM"),
                                                  (100, 200, None)])
def test_idle_and_maximum_logon_age(idle, age, why):
    m = operator()
    m.receive(msg(1, "QW"), T0 + age - idle)  # last activity
    m.receive(framing.heartbeat(9), T0 + age)  # alive, but a heartbeat is no activity
    m.sent(T0 + age)
    actions = [a for a in m.tick(T0 + age, idle_logoff_s=900, session_max_s=86400) if not isinstance(a, Send)]
    assert actions == ([Logoff(why)] if why else [])


def test_no_idle_logoff_outside_operator():
    m = acked(machine())
    m.handle(Event.BIND_HOST)
    m.sent(T0 + 5000)
    m.receive(framing.heartbeat(3), T0 + 5000)
    assert [a for a in m.tick(T0 + 5000, idle_logoff_s=900, session_max_s=1000) if isinstance(a, Logoff)] == []


def test_a_fake_clock_drives_a_whole_connection():
    """A terminal's life with nothing but bytes and numbers: banner, logon, traffic, idle."""
    clock = itertools.count(T0, 0.5)
    m = machine()
    m.connected(b"SYS.BANNER.X")
    assert m.receive(framing.ack(0), next(clock)) == [BannerAcknowledged()]
    m.receive_data(msg(1, "SAC1.LOGON.TS0001.PW"), next(clock))
    assert m.next_action(next(clock)) == Message(1, b"SAC1.LOGON.TS0001.PW")
    m.admit("LOGON")
    m.hold()
    m.handle(Event.CLAIM_TERMINAL)
    m.logged_on(next(clock))
    m.release()
    assert m.receive(msg(2, "SAC1.QW.X"), next(clock)) == [Message(2, b"SAC1.QW.X")]
    m.admit("QW")
    now = next(clock)
    m.sent(now + 950)
    m.receive(framing.heartbeat(1), now + 950)
    assert Logoff("IDLE") in m.tick(now + 950, idle_logoff_s=900, session_max_s=86400)
    m.handle(Event.LOGOFF)
    assert (m.state, m.role) == (State.READY, Role.TERMINAL)
    assert m.close() == [Close()]
    m.lost()
    assert m.state is State.CLOSED
