"""An upstream link answers every message on the connection it came on (PROTOCOL.md §4).

:class:`msc.routing.upstream.UpstreamLink` against a bare upstream on loopback (no Switch, no
stub: the upstream's timing is the test's). An upstream may send the moment it accepts msc's
connection — a switching centre flushing its backlog after an outage — before msc's dial has
returned and before the handshake's ``H`` is answered. Answers given at once (a refusal past the
link's journal budget is answered without a commit) were dropped then: the link answered only on
the connection its dialling task had already recorded, and the upstream waited for ever (the
``test_refusal_budgets`` burst that got no answers).
"""

from __future__ import annotations

import asyncio

import pytest

from msc.config.model import UpstreamSection
from msc.protocol import framing
from msc.protocol.framing import Framer
from msc.routing.upstream import UpstreamLink
from tests.conftest import eventually
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)

TEXT = b"ICS2.AM.CA0130000.TXT BACKLOG"


class Upstream(asyncio.Protocol):
    """One accepted connection of the bare upstream: sends ``send_on_accept`` (frames, each its
    own write) in ``connection_made``; answers msc's ``H`` unless ``hold_h`` (then only once every
    M it sent has its answer); records the A and N it receives."""

    def __init__(self, send_on_accept: list[bytes], hold_h: bool, conns: list[Upstream]) -> None:
        self.send_on_accept = send_on_accept
        self.hold_h = hold_h
        self.framer = Framer(max_frame=1 << 20)
        self.answers: list[tuple[str, int]] = []
        self.held_h: list[int] = []
        self.transport: asyncio.Transport | None = None
        conns.append(self)

    def connection_made(self, transport) -> None:
        self.transport = transport
        for data in self.send_on_accept:
            transport.write(data)

    def data_received(self, data: bytes) -> None:
        for f in self.framer.feed(data):
            if f.type == framing.HEARTBEAT:
                if self.hold_h and len(self.answers) < len(self.send_on_accept):
                    self.held_h.append(f.xid)
                else:
                    self.transport.write(framing.heartbeat(f.xid))
            elif f.type in (framing.ACK, framing.NAK):
                self.answers.append((chr(f.type), f.xid))
                if self.hold_h and len(self.answers) == len(self.send_on_accept):
                    for xid in self.held_h:
                        self.transport.write(framing.heartbeat(xid))
                    self.held_h.clear()


async def _upstream(send_on_accept: list[bytes], hold_h: bool = False):
    conns: list[Upstream] = []
    srv = await asyncio.get_running_loop().create_server(lambda: Upstream(send_on_accept, hold_h, conns),
                                                         "127.0.0.1", 0)
    return srv, conns


def _link(port: int, answer) -> UpstreamLink:
    cfg = UpstreamSection(name="clets", endpoints=(f"127.0.0.1:{port}",), ack_timeout_s=HANG_S)
    return UpstreamLink(cfg, on_message=answer, on_lost=lambda _link, _lost: None)


def _at_once(link, generation, xid, _payload) -> None:
    link.reply(framing.nak(xid, "E307", "DESTINATION QUEUE FULL, TRY AGAIN"), generation)


def _next_iteration(link, generation, xid, _payload) -> None:
    asyncio.get_running_loop().call_soon(link.reply, framing.ack(xid), generation)


def _mixed(link, generation, xid, payload) -> None:
    (_at_once if xid % 2 else _next_iteration)(link, generation, xid, payload)


#: What the upstream sends the moment it accepts: (name, the writes, whether it holds the
#: handshake's H answer until its messages are answered).
ON_ACCEPT = [
    ("one message", [framing.message(1, TEXT)], False),
    ("five messages in one write", [b"".join(framing.message(x, TEXT) for x in range(1, 6))], False),
    ("forty-five messages, each its own write", [framing.message(x, TEXT) for x in range(1, 46)], False),
    ("messages before the handshake is answered", [framing.message(x, TEXT) for x in (7, 8, 9)], True),
    ("one message split over three writes", [(m := framing.message(3, TEXT))[:2], m[2:9], m[9:]], False),
]
#: How the switch answers each (at once, as a counted refusal; an iteration later; both).
ANSWERS = [("at once", _at_once), ("an iteration later", _next_iteration), ("mixed", _mixed)]


@pytest.mark.parametrize("answer", [a[1] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
@pytest.mark.parametrize("name, writes, hold_h", ON_ACCEPT, ids=[c[0] for c in ON_ACCEPT])
async def test_messages_an_upstream_sends_on_accept_are_each_answered_once(name, writes, hold_h, answer):
    sent = [f.xid for f in Framer(max_frame=1 << 20).feed(b"".join(writes))]
    srv, conns = await _upstream(writes, hold_h)
    link = _link(srv.sockets[0].getsockname()[1], answer)
    link.start()
    try:
        assert await link.wait_up(HANG_S)  # with hold_h: only once every message was answered
        await eventually(lambda: len(conns[0].answers) >= len(sent))
        assert sorted(xid for _t, xid in conns[0].answers) == sorted(sent)
        assert len(conns) == 1  # the connection was never failed for it
    finally:
        await link.stop()
        srv.close()


async def test_an_answer_for_a_connection_that_is_gone_is_not_sent_on_the_next():
    """Its xid means nothing on another connection: the upstream sends the message again."""
    seen: list[tuple[object, int]] = []
    srv, conns = await _upstream([framing.message(5, TEXT)])
    link = _link(srv.sockets[0].getsockname()[1], lambda _l, generation, xid, _p: seen.append((generation, xid)))
    link.start()
    try:
        await eventually(lambda: len(seen) == 1)
        old, xid = seen[0]
        conns[0].transport.close()  # the upstream drops the connection before msc answers
        await eventually(lambda: len(seen) == 2)  # redialled: the message comes again
        assert link.reply(framing.ack(xid), old) is False
        assert link.reply(framing.ack(seen[1][1]), seen[1][0]) is True
        await eventually(lambda: conns[1].answers == [("A", 5)])
        assert conns[0].answers == []
    finally:
        await link.stop()
        srv.close()
