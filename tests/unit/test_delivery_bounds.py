"""Delivery's bounds without sockets (issue 14 item 4; PROTOCOL.md §5 "Bounds"): atomic
admission (reserve / release), the array outbox, texts kept out of memory, OSN wrap-around; and
the memory trimmer's schedule. A fake journal stands in for the writer process."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc import memory
from msc.routing.delivery import READ_BATCH_BYTES, Delivery
from msc.routing.endpoint import PRESENT, Outbox, Output


class FakeJournal:
    """Records entries; ``texts`` answers from what it recorded (output_bytes round trip)."""

    def __init__(self) -> None:
        self.entries: list = []
        self.last_seq = 0
        self.stored: dict[int, str] = {}
        self.reads: list[list[int]] = []

    def submit(self, entries):
        fut = asyncio.get_running_loop().create_future()
        seqs = []
        for e in entries:
            self.last_seq += 1
            self.entries.append(e)
            seqs.append(self.last_seq)
        fut.set_result(seqs)
        return fut

    def put(self, text: str) -> int:
        self.last_seq += 1
        self.stored[self.last_seq] = text
        return self.last_seq

    async def texts(self, seqs):
        self.reads.append(list(seqs))
        return {s: self.stored[s] for s in seqs if s in self.stored}


class Sink:
    def __init__(self, *, take: int = 10**9) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.take = take
        self.user, self.taf = "TS0001", "0A000001"

    def send_output(self, osn: int, payload: bytes) -> bool:
        if len(self.sent) >= self.take:
            return False
        self.sent.append((osn, payload))
        return True


def make(queue_max: int = 5, **kw) -> tuple[Delivery, FakeJournal]:
    j = FakeJournal()
    return Delivery(j, queue_max=queue_max, **kw), j


def output(d: Delivery, j: FakeJournal, endpoint: str, text: str) -> Output:
    o = Output(endpoint, d.next_osn(endpoint), endpoint, text.encode())
    o.seq = j.put(text)
    return o


# -- admission ------------------------------------------------------------------------------

# (queue_max, counts already reserved, request, admitted?)
RESERVE = [
    (5, {}, {"A": 5}, True),
    (5, {}, {"A": 6}, False),
    (5, {"A": 4}, {"A": 1}, True),
    (5, {"A": 4}, {"A": 2}, False),
    (5, {"A": 5}, {"B": 5}, True),  # other endpoints' queues do not count
    (5, {"B": 5}, {"A": 1, "B": 1}, False),  # all or none: B is full, A gets nothing
    (5, {}, {"A": 0, "B": 5}, True),
    (1, {}, {"A": 1, "B": 1, "C": 1}, True),
]


@pytest.mark.parametrize("queue_max,before,want,admitted", RESERVE)
async def test_reserve_is_all_or_none(queue_max, before, want, admitted):
    d, _j = make(queue_max)
    for e, n in before.items():
        assert d.reserve({e: n})
    depths = {e: d.depth(e) for e in {*before, *want}}
    assert d.reserve(want) is admitted
    for e in depths:
        assert d.depth(e) == depths[e] + (want.get(e, 0) if admitted else 0) <= queue_max


async def test_a_refusal_is_counted_by_path():
    from msc.ops.metrics import Metrics

    m = Metrics()
    d, _j = make(1, metrics=m)
    assert d.reserve({"A": 1}, path="unsolicited")
    assert not d.reserve({"A": 1}, path="unsolicited")
    assert not d.reserve({"A": 1}, path="admin")
    assert not d.reserve({"A": 1})  # no path: not counted
    assert m.registry.get_sample_value("msc_delivery_refused_total", {"path": "unsolicited"}) == 1
    assert m.registry.get_sample_value("msc_delivery_refused_total", {"path": "admin"}) == 1
    assert m.registry.get_sample_value("msc_delivery_queue_depth_max") == 1
    assert m.registry.get_sample_value("msc_delivery_queue_limit") == 1


async def test_a_delivered_output_takes_its_reserved_slot_and_a_release_gives_one_back():
    d, j = make(3)
    assert d.reserve({"A": 3})
    d.deliver(output(d, j, "A", "ONE"))
    assert (d.depth("A"), d.reserved("A"), d.pending()) == (3, 2, 1)
    d.release({"A": 2})
    assert (d.depth("A"), d.reserved("A")) == (1, 0)
    d.release({"A": 5, "Z": 1})  # never below zero, unknown endpoints ignored
    assert (d.depth("A"), d.reserved("A")) == (1, 0)
    assert d.reserve({"A": 2}) and not d.reserve({"A": 1})


# -- texts out of memory ----------------------------------------------------------------------

async def test_outputs_for_a_detached_endpoint_keep_no_text_in_memory():
    d, j = make(1000)
    assert d.reserve({"A": 200})
    for i in range(200):
        d.deliver(output(d, j, "A", f"A.AM.X.TXT {i} " + "T" * 30000))
    assert d.pending() == 200 and d.held_bytes() == 0
    sink = Sink()
    d.attach("A", sink)
    for _ in range(200):
        if len(sink.sent) == 200:
            break
        await asyncio.sleep(0)
    assert [osn for osn, _p in sink.sent] == list(range(1, 201))
    assert all(p.startswith(f"A.AM.X.TXT {osn - 1} ".encode()) for osn, p in sink.sent)
    # Read back in batches bounded by READ_BATCH_BYTES, never the whole queue at once.
    assert len(j.reads) > 1 and max(len(r) for r in j.reads) * 30000 <= READ_BATCH_BYTES + 30000
    for osn, _p in sink.sent:
        assert d.acked("A", osn, sink)
    assert d.pending() == 0 and d.held_bytes() == 0


# (output_memory_bytes, outputs, bytes each): an attached session that pushes back keeps at most
# the budgets' worth of bytes in memory.
BUDGETS = [(1 << 20, 100, 50000), (1 << 20, 1000, 100), (2 << 20, 50, 200000)]


@pytest.mark.parametrize("budget,n,size", BUDGETS)
async def test_bytes_held_for_a_slow_session_stay_within_the_budgets(budget, n, size):
    d, j = make(10000, output_memory_bytes=budget)
    sink = Sink(take=1)
    d.attach("A", sink)
    assert d.reserve({"A": n})
    for i in range(n):
        d.deliver(output(d, j, "A", f"{i} " + "X" * size))
        assert d.held_bytes() <= min(budget, READ_BATCH_BYTES) + size
    assert d.pending() == n


# -- the outbox -------------------------------------------------------------------------------

async def test_osns_wrap_around_and_stay_in_order():
    d, j = make(10)
    ep = d._ep("A")
    ep.osn = 2**32 - 3
    assert d.reserve({"A": 6})
    for i in range(6):
        d.deliver(output(d, j, "A", f"W{i}"))
    assert ep.osn == 4 and ep.epoch == 1
    sink = Sink()
    d.attach("A", sink)
    for _ in range(50):
        if len(sink.sent) == 6:
            break
        await asyncio.sleep(0)
    assert [osn for osn, _p in sink.sent] == [2**32 - 2, 2**32 - 1, 1, 2, 3, 4]
    assert [p for _o, p in sink.sent] == [f"W{i}".encode() for i in range(6)]
    for osn, _p in sink.sent:
        assert d.acked("A", osn, sink)
    assert d.pending() == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 40)), max_size=200))
def test_outbox_keeps_present_outputs_in_order_through_adds_removes_and_compaction(ops):
    ob = Outbox()
    present: set[int] = set()
    nxt = 1
    for op, k in ops:
        if op == "add":
            ob.add(nxt, nxt, 10, 0.0, "A", 0, None, PRESENT)
            present.add(nxt)
            nxt += 1
        elif present:
            x = sorted(present)[k % len(present)]
            ob.remove(ob.find(x))
            present.discard(x)
            ob.compact()
        assert len(ob) == len(present)
        assert [ob.xosn[i] for i in ob.positions()] == sorted(present)
        for x in present:
            assert ob.find(x) >= 0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.lists(st.tuples(st.sampled_from(["reserve", "deliver", "release", "ack"]),
                                             st.sampled_from(["A", "B"]), st.integers(1, 4)), max_size=60))
def test_no_sequence_of_admissions_passes_queue_max(queue_max, ops):
    async def run():
        d, j = make(queue_max)
        sink = Sink()
        d.attach("B", sink)
        for op, e, n in ops:
            if op == "reserve":
                d.reserve({e: n})
            elif op == "deliver" and d.reserved(e):
                d.deliver(output(d, j, e, "X"))
            elif op == "release":
                d.release({e: n})
            elif op == "ack" and sink.sent:
                osn, _p = sink.sent.pop(0)
                d.acked("B", osn, sink)
            for ep in ("A", "B"):
                assert d.depth(ep) <= queue_max

    asyncio.run(run())


# -- giving memory back -----------------------------------------------------------------------

class FakeProc:
    def __init__(self, rss: int) -> None:
        self.rss = rss
        self.trims = 0
        self.after = rss

    def resident(self) -> int:
        return self.rss

    def trim(self, _pad) -> int:
        self.trims += 1
        self.rss = self.after
        return 1


@pytest.fixture
def proc(monkeypatch):
    p = FakeProc(100 << 20)
    monkeypatch.setattr(memory, "resident_bytes", p.resident)
    monkeypatch.setattr(memory, "_malloc_trim", p.trim)
    return p


def test_trimmer_trims_once_after_growth_and_backs_off_when_nothing_comes_back(proc):
    now = [0.0]
    t = memory.Trimmer(clock=lambda: now[0])
    t.available = True
    assert t.check() is None  # no growth
    proc.rss += t.threshold() - 1
    assert t.check() is None  # below the threshold
    proc.rss += 2
    proc.after = 100 << 20  # everything comes back
    before, after, _took = t.check()
    assert (before - after, proc.trims) == (t.threshold() + 1, 1)
    # Memory in use (nothing comes back): the next trims wait longer and longer.
    proc.rss = proc.after = 200 << 20
    assert t.check() is not None and proc.trims == 2
    assert t.check() is None  # backing off
    waits = []
    for _ in range(8):
        while t.check() is None:
            now[0] += 1
        waits.append(now[0])
    gaps = [b - a for a, b in zip(waits, waits[1:], strict=False)]
    assert gaps == sorted(gaps) and max(gaps) <= memory.TRIM_BACKOFF_MAX_S + 1


def test_resident_bytes_reads_this_process():
    assert memory.resident_bytes() > 1 << 20


def test_trimmer_trims_at_once_when_the_queues_drained_whatever_the_back_off(proc):
    now = [0.0]
    t = memory.Trimmer(clock=lambda: now[0])
    t.available = True
    proc.rss = proc.after = (100 << 20) + 2 * t.threshold()  # in use: nothing comes back
    assert t.check() is not None
    assert t.check() is None  # backing off
    proc.after = 100 << 20  # the queues drained: now it would come back
    t.soon()
    assert t.due_soon
    before, after, _took = t.check()
    assert after == 100 << 20 and not t.due_soon
    t.soon()
    assert t.check() is None  # nothing to give back: soon() does not force a useless trim


# -- whom a delivery record names ----------------------------------------------------------------

WHO = [
    # id, the user logged on at the receiving session, the output's user (moved to another station
    # for that operator), its txn (the switch's own: coded in the arrays; another run's: in meta),
    # waits in the outbox first, the client's answer, the user the record names
    ("terminal", "TS0001", None, "T1a", False, "A", "TS0001"),
    ("terminal-waited", "TS0001", None, "T1a", True, "A", "TS0001"),
    ("printer-moved", None, "EC0001", "T1b", False, "A", "EC0001"),
    ("printer-moved-waited", None, "EC0001", "T1b", True, "A", "EC0001"),
    ("printer-moved-waited-old-txn", None, "EC0001", "OLDRUN-7", True, "A", "EC0001"),
    ("printer-moved-refused", None, "EC0001", "T1c", True, "N", "EC0001"),
    ("printer-unsolicited", None, None, "T1d", True, "A", None),  # nobody's request: nobody named
    ("operator-at-a-terminal-wins", "TS0002", "EC0001", "T1e", True, "A", "TS0002"),
]


@pytest.mark.parametrize("name,session_user,output_user,txn,waits,answer,named", WHO, ids=[w[0] for w in WHO])
async def test_the_delivery_record_names_the_session_s_user_else_the_output_s(name, session_user, output_user,
                                                                               txn, waits, answer, named):
    d, j = make()
    d.txn_prefix = "T1"
    sink = Sink()
    sink.user = session_user
    o = output(d, j, "P", "P1.MSC.E302 CLETS LINK LOST BEFORE THE ANSWER")
    o.txn, o.user = txn, output_user
    if not waits:
        d.attach("P", sink)
    d.reserve({"P": 1})
    d.deliver(o)
    if waits:
        d.attach("P", sink)
        await asyncio.sleep(0)  # (its text read back from the journal)
        for _ in range(100):
            if sink.sent:
                break
            await asyncio.sleep(0)
    assert [osn for osn, _ in sink.sent] == [o.osn]
    done = d.acked("P", o.osn, sink) if answer == "A" else d.refused("P", o.osn, "E108", "NO", sink)
    assert done
    (record,) = [e for e in j.entries if e.kind in ("DELIVERED", "UNDELIVERED")]
    assert (record.kind, record.user, record.txn) == ("DELIVERED" if answer == "A" else "UNDELIVERED", named, txn)
