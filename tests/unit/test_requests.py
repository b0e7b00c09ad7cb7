"""The request lifecycle (msc.routing.requests), sans-IO with a fake clock: 1–3 answer parts,
late parts, parts after the window, E303 only when no part came, several requests per header."""

from __future__ import annotations

import pytest

from msc.routing.requests import Pending, RequestTable


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def req(header="ICS1A1", txn="t1", window=None, expects_answer=True, mnemonic=None) -> Pending:
    return Pending(txn=txn, header=header, mnemonic=mnemonic or header[:4], endpoint=header[:4], user="TS0001",
                   taf="TAF001", ori="CA0130000", mke="QR", category="cori", upstream="clets",
                   purpose="C", requester="DET SMITH", recipient=None, window_s=window,
                   expects_answer=expects_answer)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def table(clock):
    return RequestTable(late_answer_s=600, late_max=100, clock=clock)


def arrive(table: RequestTable, header: str):
    """What the router does with an upstream message: match, then record the part."""
    m = table.match(header)
    if m.pending is None:
        return None, None, m.ambiguous
    return m.pending, table.part(m.pending), m.ambiguous


# (parts' arrival times after forwarding, timeout, window) → what each part is
@pytest.mark.parametrize(
    ("times", "timeout", "window", "expected"),
    [
        ((1,), 30, None, ["first"]),                                   # one answer
        ((1, 2), 30, 300, ["first", "further"]),                       # FBI, then a state
        ((1, 40, 200), 30, 300, ["first", "further", "further"]),      # FBI, two states, last after timeout
        ((25, 29.9), 30, None, ["first", "further"]),                  # window defaults to timeout_s
        ((1, 31), 30, None, ["first", "late"]),                        # after the window: still linked, late
        ((1, 301, 899), 30, 300, ["first", "late", "late"]),           # late within late_answer_s (600 s)
        ((1, 1000), 30, 300, ["first", None]),                         # after late_answer_s: not linked
        ((1, 2, 3), 30, 10, ["first", "further", "further"]),          # window < timeout: timeout wins
    ],
)
def test_parts_of_one_answer(table, clock, times, timeout, window, expected):
    p = req(window=window)
    table.opened(p, timeout)
    t0 = clock.t
    got = []
    for t in times:
        clock.t = t0 + t
        timed_out, _ = table.expire()
        assert timed_out == []  # a part came first: never E303
        who, how, _amb = arrive(table, "ICS1A1")
        assert who is (p if how else None)
        got.append(how)
    assert got == expected
    assert p.parts == sum(1 for g in got if g)
    assert p.done


@pytest.mark.parametrize("timeout", [0.5, 30, 120])
def test_e303_only_when_no_part_came_within_timeout(table, clock, timeout):
    p = req()
    table.opened(p, timeout)
    clock.t += timeout - 0.01
    assert table.expire() == ([], [])
    clock.t += 0.02
    timed_out, _ = table.expire()
    assert timed_out == [p]
    # The router then closes it (its E303 notice is the fate); a part after that is late.
    p.done = True
    table.close(p)
    who, how, _ = arrive(table, "ICS1A1")
    assert (who, how) == (p, "late")


def test_window_end_closes_and_is_reported(table, clock):
    p = req(window=300)
    table.opened(p, 30)
    arrive(table, "ICS1A1")
    clock.t += 299
    assert table.expire() == ([], [])
    assert table.open_requests() == 1
    clock.t += 2
    assert table.expire() == ([], [p])
    assert table.open_requests() == 0
    assert table.remembered() == 1
    assert p.state == "closed"


def test_refused_request_is_not_remembered(table, clock):
    p = req()
    table.opened(p, 30)
    p.done = True
    table.close(p, remember=False)
    assert arrive(table, "ICS1A1") == (None, None, False)
    assert p.state == "finished"


def test_requests_with_distinct_refs_never_mix(table, clock):
    a, b = req("ICS1A1", "ta"), req("ICS1A2", "tb")
    table.opened(a, 30)
    table.opened(b, 30)
    order = ["ICS1A2", "ICS1A1", "ICS1A2", "ICS1A1", "ICS1A1"]
    seen = [arrive(table, h) for h in order]
    assert [(w.txn, h, amb) for w, h, amb in seen] == [
        ("tb", "first", False), ("ta", "first", False), ("tb", "further", False),
        ("ta", "further", False), ("ta", "further", False)]


def test_same_header_first_parts_fifo_then_oldest_and_ambiguous(table, clock):
    a, b = req("ICS1", "ta"), req("ICS1", "tb")
    table.opened(a, 30)
    clock.t += 1
    table.opened(b, 30)
    got = [arrive(table, "ICS1") for _ in range(3)]
    assert [(w.txn, h, amb) for w, h, amb in got] == [
        ("ta", "first", True), ("tb", "first", True), ("ta", "further", True)]


def test_late_part_with_two_closed_requests_of_one_header_is_not_linked(table, clock):
    a, b = req("ICS1", "ta"), req("ICS1", "tb")
    for p in (a, b):
        table.opened(p, 30)
        arrive(table, "ICS1")
    clock.t += 31
    _, closed = table.expire()
    assert set(closed) == {a, b}
    assert arrive(table, "ICS1") == (None, None, True)


def test_open_request_takes_precedence_over_a_closed_one(table, clock):
    a = req("ICS1", "ta")
    table.opened(a, 30)
    arrive(table, "ICS1")
    clock.t += 31
    table.expire()
    b = req("ICS1", "tb")
    table.opened(b, 30)
    who, how, _ = arrive(table, "ICS1")
    assert (who, how) == (b, "first")


def test_remembered_requests_are_bounded_in_count_and_time(clock):
    table = RequestTable(late_answer_s=60, late_max=5, clock=clock)
    ps = [req(f"ICS1R{i}", f"t{i}") for i in range(8)]
    for p in ps:
        table.opened(p, 1)
    clock.t += 2
    timed_out, _ = table.expire()
    for p in timed_out:
        p.done = True
        table.close(p)
    assert table.remembered() == 5  # the three oldest forgotten
    assert arrive(table, "ICS1R0") == (None, None, False)
    assert arrive(table, "ICS1R7")[1] == "late"
    clock.t += 61
    assert arrive(table, "ICS1R6") == (None, None, False)
    assert table.remembered() == 0


def test_admin_message_is_never_matched_and_finishes_on_ack(table, clock):
    am = req("ICS1", "tam", expects_answer=False)
    table.opened(am, 30)
    assert len(table.outstanding()) == 1
    assert table.match("ICS1").pending is None
    am.acked(None, None)  # the upstream's A is the whole answer
    assert len(table.outstanding()) == 0
    clock.t += 31
    assert table.expire() == ([], [])
    assert am.state == "finished"


def test_outstanding_counts_requests_without_a_fate(table, clock):
    a, b = req("ICS1A1", "ta"), req("ICS1A2", "tb")
    table.opened(a, 30)
    table.opened(b, 30)
    assert len(table.outstanding()) == 2
    arrive(table, "ICS1A1")
    assert len(table.outstanding()) == 1
    clock.t += 31
    timed_out, _ = table.expire()
    assert timed_out == [b]


def test_unrecorded_first_part_puts_the_request_back_first_in_line(table, clock):
    """The journal failed to record a first part (upstream told N E501): the part sent again
    must find this request, not a later one with the same header."""
    a, b = req("ICS1", "ta"), req("ICS1", "tb")
    table.opened(a, 30)
    table.opened(b, 30)
    who, how, _ = arrive(table, "ICS1")
    assert (who, how) == (a, "first")
    table.unrecorded(a)  # not recorded: a.answered stays False
    assert (a.state, a.parts) == ("waiting", 0)
    who, how, _ = arrive(table, "ICS1")  # sent again
    assert (who, how) == (a, "first")
    who, how, _ = arrive(table, "ICS1")
    assert (who, how) == (b, "first")


@pytest.mark.parametrize("closed_first", [False, True])
def test_unrecorded_first_part_of_a_closed_request_reopens_it(table, clock, closed_first):
    a = req("ICS1A1", "ta")
    table.opened(a, 30)
    if closed_first:  # E303 was sent; the late answer then failed to record
        clock.t += 31
        timed_out, _ = table.expire()
        assert timed_out == [a]
        a.done = True
        table.close(a)
    who, how, _ = arrive(table, "ICS1A1")
    assert who is a
    table.unrecorded(a)
    assert a.state == "waiting" and table.remembered() == 0
    assert arrive(table, "ICS1A1")[:2] == (a, "first")


def test_unrecorded_further_part_leaves_the_request_answered(table, clock):
    a = req("ICS1A1", "ta", window=300)
    table.opened(a, 30)
    arrive(table, "ICS1A1")
    a.answered = True  # the first part was recorded
    arrive(table, "ICS1A1")
    table.unrecorded(a)
    assert (a.state, a.parts) == ("answered", 1)
    assert arrive(table, "ICS1A1")[:2] == (a, "further")


def test_waiting_on_an_upstream(table, clock):
    a, b = req("ICS1A1", "ta"), req("ICS1A2", "tb")
    b.upstream = "nlets"
    am = req("ICS1", "tam", expects_answer=False)
    for p in (a, b, am):
        table.opened(p, 30)
    assert set(table.waiting_on("clets")) == {a, am}
    arrive(table, "ICS1A1")
    assert table.waiting_on("clets") == [am]


class _Router:
    """Stands for the router a request refers to (a tracked object, as the real one is)."""


@pytest.mark.parametrize("fields", [{}, {"window": 60.0}, {"expects_answer": False}])
def test_a_remembered_request_is_one_object_for_the_garbage_collector(fields):
    """Thousands of requests stay in memory (open ones, and the last LATE_MAX closed): each must
    cost a full collection one object, not two (PERFORMANCE.md "Where the tail came from": a
    request with a dictionary of its own that holds the router doubled what every generation-2
    collection walked)."""
    import gc

    router = _Router()
    for i in range(200):
        p = req(header=f"ICS1A{i}", txn=f"t{i}", **fields)
        p.router = router
        p.state, p.done, p.closed_at = "closed", True, 1000.0 + i
        assert not hasattr(p, "__dict__")
        # What a collection walks for this request beyond the request itself: the tracked objects
        # it refers to, other than its class and the shared router. (Counted from the request, not
        # from gc.get_objects(): the whole process's count moves with whatever else runs.)
        own = [r for r in gc.get_referents(p) if gc.is_tracked(r) and r is not router and r is not type(p)]
        assert own == [], own
