"""msc.routing.resends: which messages from an upstream are the resend of one msc journaled and
could not acknowledge (PROTOCOL.md §4). Pure: connections are plain objects, time a variable.
(The real Switch, sockets and journal: tests/integration/test_upstream_resends.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc.routing.resends import COMMITTING, JOURNALED, PRUNE_EVERY_S, Resends


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def table(*, up_at: float | None = 0.0, wait_s: float = 30.0, clock: Clock | None = None, max_orphans: int = 100):
    return Resends(wait_s=lambda _n: wait_s, up_at=lambda _n: up_at, clock=clock or Clock(), max_orphans=max_orphans)


C1, C2, C3 = object(), object(), object()  # three connections of one upstream, in turn
M = b"ICS2.AM.CA0130000.TXT APB"


def lost(r: Resends, payload: bytes = M, conn: object = C1, xid: int = 1, link: str = "clets") -> None:
    """``payload`` journaled on ``conn``, its A not written (the connection was gone)."""
    copy = r.committing(link, conn, xid, payload)
    r.committed(link, copy, acknowledged=False, recorded=True)


#: (name, what happened to the first copy, where the next message with the same bytes comes, what it is)
FIRST_COPY = [
    ("acknowledged", dict(acknowledged=True, recorded=True), C2, None),
    ("journaled, A not written", dict(acknowledged=False, recorded=True), C2, JOURNALED),
    ("journaled, A not written, resent on a third connection", dict(acknowledged=False, recorded=True), C3, JOURNALED),
    ("not journaled (E501), N not written", dict(acknowledged=False, recorded=False), C2, None),
    ("not journaled (E501), N written", dict(acknowledged=True, recorded=False), C2, None),
]


@pytest.mark.parametrize(("name", "outcome", "conn", "expected"), FIRST_COPY, ids=[c[0] for c in FIRST_COPY])
def test_the_next_message_with_the_same_bytes_after_the_first_copys_commit(name, outcome, conn, expected):
    r = table()
    copy = r.committing("clets", C1, 7, M)
    r.committed("clets", copy, **outcome)
    assert r.may_hold("clets", conn) is (expected is not None)
    assert r.match("clets", conn, 1, M) == expected
    assert r.match("clets", conn, 2, M) is None  # one lost copy, one resend


def test_a_resend_during_the_commit_takes_over_its_answer_and_a_later_one_too():
    r = table()
    copy = r.committing("clets", C1, 7, M)
    assert not r.may_hold("clets", C1)  # the connection's own messages: the fast path
    assert r.match("clets", C1, 8, M) is None  # the same bytes on the same connection: a new message
    assert r.may_hold("clets", C2) and r.match("clets", C2, 3, M) == COMMITTING
    assert (copy.connection, copy.xid, copy.resent) == (C2, 3, 1)  # its A goes there now
    assert r.match("clets", C3, 1, M) == COMMITTING  # C2 lost too: the answer moves again
    assert (copy.connection, copy.xid, copy.resent) == (C3, 1, 2)
    r.committed("clets", copy, acknowledged=True, recorded=True)
    assert not r.may_hold("clets", C3) and r.orphans("clets") == 0


def test_a_commit_that_ends_on_a_gone_resend_connection_leaves_an_orphan():
    r = table()
    copy = r.committing("clets", C1, 7, M)
    assert r.match("clets", C2, 3, M) == COMMITTING
    r.committed("clets", copy, acknowledged=False, recorded=True)  # C2 gone before the commit ended
    assert r.match("clets", C3, 1, M) == JOURNALED


def test_other_bytes_other_upstreams_and_other_messages_are_not_resends():
    r = table()
    lost(r)
    assert r.match("clets", C2, 1, M + b" ") is None
    assert r.match("ncic", C2, 1, M) is None  # per upstream (its primary and secondary share it)
    assert r.match("clets", C2, 2, M) == JOURNALED


def test_identical_messages_lost_together_are_each_taken_by_one_resend():
    r = table()
    lost(r, xid=1)
    lost(r, xid=2)
    copy = r.committing("clets", C1, 3, M)  # a third, still committing
    assert [r.match("clets", C2, x, M) for x in (1, 2, 3, 4)] == [COMMITTING, JOURNALED, JOURNALED, None]
    assert copy.connection is C2


def test_orphans_are_kept_until_resend_wait_s_after_the_link_is_up_again():
    clock = Clock()
    up: dict[str, float | None] = {"at": None}  # the link is down
    r = Resends(wait_s=lambda _n: 30.0, up_at=lambda _n: up["at"], clock=clock)
    lost(r, b"A")
    lost(r, b"B")
    clock.t += 3600  # down an hour: kept
    assert r.match("clets", C2, 1, b"A") == JOURNALED
    up["at"] = clock.t  # up again
    clock.t += 29
    lost(r, b"C")  # lost on the new connection: its own wait from now
    clock.t += 1 + PRUNE_EVERY_S
    assert r.match("clets", C2, 2, b"B") is None  # 30 s after the link came up: forgotten
    assert r.orphans("clets") == 1
    clock.t += 27
    assert r.match("clets", C2, 3, b"C") == JOURNALED


def test_orphans_are_bounded_oldest_first():
    r = table(max_orphans=3)
    for i in range(5):
        lost(r, b"M%d" % i, xid=i + 1)
    assert r.orphans("clets") == 3 and r.forgotten == 2
    assert [r.match("clets", C2, 1, b"M%d" % i) for i in range(5)] == [None, None, JOURNALED, JOURNALED, JOURNALED]


@settings(max_examples=200, deadline=None)
@given(lost_=st.lists(st.sampled_from([b"A", b"B", b"C"]), max_size=12),
       committing=st.lists(st.sampled_from([b"A", b"B", b"C"]), max_size=6),
       resent=st.lists(st.sampled_from([b"A", b"B", b"C", b"D"]), max_size=24))
def test_each_message_without_its_a_is_taken_by_at_most_one_resend_and_every_one_is_taken(lost_, committing, resent):
    """Whatever the mix: a payload's resends taken = min(its copies without A, its resends)."""
    r = table()
    for i, p in enumerate(lost_):
        lost(r, p, xid=i + 1)
    for i, p in enumerate(committing):
        r.committing("clets", C1, 100 + i, p)
    taken: dict[bytes, int] = {}
    for i, p in enumerate(resent):
        if r.match("clets", C2, i + 1, p) is not None:
            taken[p] = taken.get(p, 0) + 1
    for p in (b"A", b"B", b"C", b"D"):
        without_a = lost_.count(p) + committing.count(p)
        assert taken.get(p, 0) == min(without_a, resent.count(p))
