"""The pure parts of issue 14's bounds: refusal forms and budgets, the connection table, the
per-address logon attempts, and the logon gate (with a real thread pool)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from msc.config.model import ListenerSection
from msc.mnemonics.throttle import AddressAttempts
from msc.protocol.message import decode_lossy, redact
from msc.server.listener import ListenerRuntime, source_of
from msc.server.logons import Busy, LogonGate
from msc.server.refusals import (
    COMPACT_CHARS,
    MAX_ADDRESSES,
    MAX_SUMMARIES,
    AddressBudget,
    Form,
    RefusalLimits,
    RefusalWindow,
    SharedWindows,
    Tally,
    compact,
    shared_form,
)
from tests.conftest import eventually
from tests.waiting import HANG_S

# -- compact records ---------------------------------------------------------------------------

#: Texts (as the journal would hold them in full) and what the compact record must show.
COMPACT_CASES = [
    ("ICS1.QW.CA0130000.NAM/SMITH, JOHN", "ICS1.QW.CA0130000.NAM/SMITH, JOHN"),  # short: whole
    ("A" * COMPACT_CHARS, "A" * COMPACT_CHARS),  # exactly the limit: whole
    ("A" * 32763, "A" * COMPACT_CHARS + "…[CHARS/32763 SHA256/"),
    ("\\xff" * 32763, "\\xff" * (COMPACT_CHARS // 4) + "…[CHARS/131052 SHA256/"),  # 0xFF bytes, escaped
    ("ICS1.QV.CA0130000.LIC/" + "Q" * 200, "ICS1.QV.CA0130000.LIC/" + "Q" * (COMPACT_CHARS - 22) + "…[CHARS/222 "),
    ("Ｘ" * 100, "Ｘ" * COMPACT_CHARS + "…[CHARS/100 SHA256/"),  # non-ASCII text (decoded upstream forms)
]


@pytest.mark.parametrize("text, shown", COMPACT_CASES)
def test_compact_keeps_the_start_the_length_and_a_digest(text, shown):
    out = compact(text)
    assert out.startswith(shown)
    if len(text) > COMPACT_CHARS:
        assert out.endswith(f"SHA256/{hashlib.sha256(text.encode()).hexdigest()}]")
        assert len(out) < COMPACT_CHARS * 4 + 100  # bounded whatever the input
    else:
        assert out == text


#: Refused payloads with secrets: the compact record, like the full one, has none of them.
SECRET_PAYLOADS = [
    b"ICS1.LOGON.TS0001.-.Sw0rdfish-Secret" + b"X" * 40000,
    b"ICS1.logon TS0001 123456 Sw0rdfish-Secret",
    b"ICS1.PWD.Sw0rdfish-Secret.Another-Sw0rdfish" + b"\xff" * 10000,
    b"\xff" * 3 + b".LOGON.TS0001.-.Sw0rdfish-Secret",
]


@pytest.mark.parametrize("payload", SECRET_PAYLOADS)
def test_compact_and_summaries_never_hold_a_secret(payload):
    assert "Sw0rdfish" not in compact(redact(decode_lossy(payload)))
    t = Tally()
    t.refused("E201", payload, 100.0)
    t.refused("E307", payload, 101.0)
    assert "Sw0rdfish" not in t.render(decode_lossy, redact)


# -- the forms of a connection's refusals --------------------------------------------------------

def forms(window: RefusalWindow, n: int, *, logged_on: bool, chars: int = 100, now: float = 0.0) -> list[Form]:
    return [window.form(now, logged_on=logged_on, chars=lambda: chars) for _ in range(n)]


def test_a_logged_on_session_keeps_its_first_refusals_whole_then_compact_then_counts():
    w = RefusalWindow(RefusalLimits(full=3, full_chars=10_000, records=5))
    w.roll(0.0)
    assert forms(w, 7, logged_on=True) == [Form.FULL] * 3 + [Form.COMPACT] * 2 + [Form.COUNTED] * 2
    assert w.roll(30.0) is None  # same minute
    assert forms(w, 1, logged_on=True, now=30.0) == [Form.COUNTED]
    w.tally.refused("E307", b"x", 30.0)
    ended = w.roll(60.0)  # a new minute: the allowance is back, the old minute is summarized
    assert ended is not None and ended.messages == 1
    assert forms(w, 1, logged_on=True, now=60.0) == [Form.FULL]


def test_full_text_is_bounded_in_characters_too():
    w = RefusalWindow(RefusalLimits(full=100, full_chars=1000, records=100))
    w.roll(0.0)
    assert forms(w, 3, logged_on=True, chars=400) == [Form.FULL, Form.FULL, Form.COMPACT]


def test_before_logon_no_refusal_is_kept_whole():
    w = RefusalWindow(RefusalLimits(full=100, full_chars=10**9, records=2))
    w.roll(0.0)
    assert forms(w, 3, logged_on=False) == [Form.COMPACT, Form.COMPACT, Form.COUNTED]


def test_a_checked_logon_always_gets_a_record():
    w = RefusalWindow(RefusalLimits(full=0, full_chars=0, records=0))
    w.roll(0.0)
    assert w.form(0.0, logged_on=False, chars=lambda: 10, always=True) is Form.COMPACT


# -- budgets that outlive a connection (a user's, an address's, an upstream link's) ---------------

#: (connections in a row for one user, refusals on each): the user's window bounds them all, as
#: one connection's would.
RECONNECTS = [(1, 10), (2, 5), (10, 1), (5, 3), (3, 7)]


@pytest.mark.parametrize("connections, each", RECONNECTS)
def test_reconnecting_does_not_buy_the_users_budget_again(connections, each):
    limits = RefusalLimits(full=3, full_chars=10_000, records=5)
    shared = SharedWindows(limits)
    got = []
    for _ in range(connections):
        conn = RefusalWindow(limits)  # a new connection: a fresh window of its own
        conn.roll(0.0)
        for _ in range(each):
            got.append(shared_form([conn, shared.get("who TS0001", 0.0), shared.get("addr 10.0.0.1", 0.0)], 0.0,
                                   logged_on=True, chars=lambda: 10))
    n = connections * each
    assert got == ([Form.FULL] * 3 + [Form.COMPACT] * 2 + [Form.COUNTED] * n)[:n]


def test_shared_windows_new_minute_and_bounded_table():
    limits = RefusalLimits(full=1, full_chars=10_000, records=1)
    shared = SharedWindows(limits)
    w = shared.get("who A", 0.0)
    assert shared_form([w], 0.0, logged_on=True, chars=lambda: 1) is Form.FULL
    assert shared_form([shared.get("who A", 1.0)], 1.0, logged_on=True, chars=lambda: 1) is Form.COUNTED
    assert shared_form([shared.get("who A", 61.0)], 61.0, logged_on=True, chars=lambda: 1) is Form.FULL
    for i in range(MAX_ADDRESSES + 10):
        shared.get(f"addr {i}", 0.0)
    assert len(shared) == MAX_ADDRESSES


def test_one_window_spent_makes_the_refusal_compact_whichever_it_is():
    limits = RefusalLimits(full=2, full_chars=10_000, records=3)
    a, b = RefusalWindow(limits), RefusalWindow(limits)
    for w in (a, b):
        w.roll(0.0)
    assert shared_form([a], 0.0, logged_on=True, chars=lambda: 1) is Form.FULL
    assert shared_form([a], 0.0, logged_on=True, chars=lambda: 1) is Form.FULL
    assert shared_form([a, b], 0.0, logged_on=True, chars=lambda: 1) is Form.COMPACT  # a's full spent
    assert shared_form([b, a], 0.0, logged_on=True, chars=lambda: 1) is Form.COUNTED  # a's records spent
    assert b.records == 1 and b.full == 0


# -- the per-address budget ----------------------------------------------------------------------

def test_address_budget_per_address_and_in_all():
    b = AddressBudget(per_address=5, total=8, now=0.0)
    assert sum(b.take("10.0.0.1", 0.0) for _ in range(20)) == 5
    assert sum(b.take("10.0.0.2", 0.0) for _ in range(20)) == 3  # the total's remainder
    assert not b.take("10.0.0.3", 0.0)
    # Refilled at the rate of the limit per minute.
    assert sum(b.take("10.0.0.1", 12.0) for _ in range(20)) == 1


def test_address_summaries_are_bounded_in_number():
    b = AddressBudget(per_address=0, total=0, now=0.0)
    for i in range(MAX_SUMMARIES + 50):
        t = b.count(f"10.0.{i // 256}.{i % 256}", 1.0)
        t.event("CONNECT", 1.0, n=i + 1)
        t.refused("E201", b"x" * 10, 1.0)
    assert b.due(30.0) == []  # not yet a minute
    out = b.due(60.0)
    assert len(out) == MAX_SUMMARIES + 1
    others = out[-1]
    assert others.source is None and others.sources == 50
    # The busiest addresses are the ones named.
    assert out[0].tally.events["CONNECT"] == MAX_SUMMARIES + 50
    total = sum(s.tally.messages for s in out)
    assert total == MAX_SUMMARIES + 50  # nothing lost
    assert b.due(120.0) == []  # counted once


def test_address_table_is_bounded_and_forgotten_counts_are_kept_in_others():
    b = AddressBudget(per_address=1, total=10**9, now=0.0)
    b.count("first", 0.0).event("CONNECT", 0.0)
    for i in range(MAX_ADDRESSES + 10):
        b.take(f"a{i}", 1.0)
    assert b.tracked == MAX_ADDRESSES
    out = b.due(60.0)
    assert [s.source for s in out] == [None] and out[0].tally.events["CONNECT"] == 1


# -- the connection table ------------------------------------------------------------------------

class Conn:
    def __init__(self, source: str, acknowledged: bool = False) -> None:
        self.source = source
        self.checking = False
        self.acknowledged = acknowledged
        self.evicted: str | None = None

    @property
    def evictable(self) -> bool:
        return not self.checking

    def evict(self, reason: str) -> None:
        self.evicted = reason


def table(max_connections: int = 4, per_address: int = 2) -> ListenerRuntime:
    return ListenerRuntime(ListenerSection(name="t", bind="127.0.0.1:0", max_connections=max_connections,
                                           max_pending_per_address=per_address))


def test_a_full_listener_gives_the_oldest_pending_slot_to_a_new_connection():
    rt = table()
    a, b, c, d = Conn("1"), Conn("2"), Conn("3"), Conn("4")
    for x in (a, b, c, d):
        assert rt.admit(x)
    rt.established(a)
    e = Conn("5")
    assert rt.admit(e)
    assert b.evicted == "evicted" and a.evicted is None  # an established session is never taken
    assert len(rt.members) == 4


def test_a_logged_off_connection_is_pending_again_and_may_be_taken():
    rt = table(max_connections=2)
    a, b = Conn("1"), Conn("2")
    rt.admit(a), rt.admit(b)
    rt.established(a)
    rt.established(b)
    assert not rt.admit(Conn("3"))  # both logged on
    rt.pending_again(b)  # b logged off
    assert rt.admit(Conn("4")) and b.evicted == "evicted" and a.evicted is None


#: (pending connections as (address, acknowledged the banner), oldest first; which one a new
#: connection from address "new" evicts from a full listener).
EVICTIONS = [
    ([("h", True), ("f", False), ("f", False)], 1),  # never the one that acknowledged
    ([("f", False), ("h", True), ("f", False)], 0),
    ([("h", True), ("a", True), ("a", True)], 1),  # all acknowledged: the busiest address
    ([("h", False), ("a", False), ("b", False), ("a", False)], 1),  # none did: the busiest address's oldest
    ([("h", True), ("a", False), ("b", False), ("c", False)], 1),  # a tie: the oldest not acknowledged
    ([("a", True), ("b", True), ("c", True)], 0),  # all alike: the oldest
    ([("h", False), ("h", False), ("x", True), ("x", True), ("x", True)], 0),  # not acknowledged beats busy
]


@pytest.mark.parametrize("pending, victim", EVICTIONS)
def test_eviction_spares_who_acknowledged_the_banner_then_the_less_busy_addresses(pending, victim):
    rt = table(max_connections=len(pending), per_address=100)
    conns = [Conn(src, ack) for src, ack in pending]
    for c in conns:
        assert rt.admit(c)
    assert rt.admit(Conn("new"))
    assert [c.evicted for c in conns] == ["evicted" if i == victim else None for i in range(len(conns))]


def test_an_address_at_its_limit_loses_a_connection_that_did_not_acknowledge_first():
    rt = table(max_connections=100, per_address=3)
    typing, silent1, silent2 = Conn("9", True), Conn("9"), Conn("9")
    for c in (typing, silent1, silent2):
        rt.admit(c)
    assert rt.admit(Conn("9")) and silent1.evicted == "address_limit" and typing.evicted is None


def test_only_established_slots_refuse_a_new_connection():
    rt = table(max_connections=2)
    a, b = Conn("1"), Conn("2")
    rt.admit(a), rt.admit(b)
    rt.established(a)
    b.checking = True  # its LOGON is being checked
    assert not rt.admit(Conn("3"))
    b.checking = False
    assert rt.admit(Conn("3")) and b.evicted == "evicted"


def test_one_address_holds_at_most_its_pending_slots():
    rt = table(max_connections=100, per_address=2)
    x1, x2, x3 = Conn("9"), Conn("9"), Conn("9")
    rt.admit(x1), rt.admit(x2)
    rt.established(x1)  # established ones do not count
    assert rt.admit(x3) and x2.evicted is None
    x4 = Conn("9")
    assert rt.admit(x4) and x2.evicted == "address_limit"
    assert len(rt.by_source["9"]) == 2


@pytest.mark.parametrize("ip, source", [
    ("10.1.2.3", "10.1.2.3"),
    ("::ffff:10.1.2.3", "10.1.2.3"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    (None, "?"),
    ("not an address", "not an address"),
])
def test_sources_are_addresses_and_ipv6_64s(ip, source):
    assert source_of(ip) == source


# -- per-address logon attempts ------------------------------------------------------------------

def test_an_address_gets_limit_failures_per_window_and_successes_are_free():
    a = AddressAttempts(limit=3, window_s=60)
    assert [a.reserve("x", 0.0) for _ in range(4)] == [True, True, True, False]
    assert a.reserve("y", 0.0)  # another address is not affected
    assert a.reserve("x", 61.0)  # the oldest aged out
    b = AddressAttempts(limit=2, window_s=60)
    for _ in range(10):  # a NAT'd room logging on: right passwords never use the allowance
        assert b.reserve("room", 1.0)
        b.succeeded("room", 1.0)


def test_known_addresses_and_clean_ones_come_first():
    a = AddressAttempts(limit=10, window_s=60)
    for _ in range(3):
        a.reserve("guesser", 0.0)
    a.reserve("office", 0.0)
    a.succeeded("office", 0.0)
    assert a.priority("office", 1.0) < a.priority("new", 1.0) < a.priority("guesser", 1.0)


#: (what happened before, as (address, user, outcome) with outcome "ok" / "fail" / "busy" /
#: "pending" (its check not answered yet); the logon to rank (address, user); does it rank with
#: the known addresses?)
ACCOUNT_RANKS = [
    ([("office", "EC0001", "ok")], ("10.9.9.9", "EC0001"), True),  # known account, new address
    ([], ("10.9.9.9", "EC0001"), False),  # never logged on
    ([("office", "EC0001", "ok"), ("10.7.7.7", "EC0001", "fail")], ("10.9.9.9", "EC0001"), False),  # a failure since
    ([("office", "EC0001", "ok"), ("10.7.7.7", "EC0001", "pending")], ("10.9.9.9", "EC0001"), False),  # a guess under way
    ([("office", "EC0001", "ok"), ("10.7.7.7", "EC0001", "busy")], ("10.9.9.9", "EC0001"), True),  # not checked: no mark
    ([("office", "EC0001", "ok"), ("10.7.7.7", "EC0001", "fail"), ("office", "EC0001", "ok")],
     ("10.9.9.9", "EC0001"), True),  # a success clears it
    ([("office", "EC0001", "ok")], ("10.9.9.9", "ZZTOP1"), False),  # another (unknown) account
    ([("office", "EC0001", "ok")], ("office", "ZZTOP1"), True),  # a known address ranks first anyway
]


@pytest.mark.parametrize("before, logon, known", ACCOUNT_RANKS)
def test_a_known_account_with_a_clean_record_ranks_first_from_a_new_address(before, logon, known):
    a = AddressAttempts(limit=10, window_s=60)
    for src, user, outcome in before:
        assert a.reserve(src, 0.0)
        a.attempt_account(user, 0.0)
        if outcome == "ok":
            a.succeeded(src, 0.0, user)
        elif outcome == "busy":
            a.release(src)
            a.release_account(user)
    assert (a.priority(logon[0], 1.0, logon[1])[0] == 0) is known


def test_a_known_accounts_rank_lapses_and_the_account_table_is_bounded():
    a = AddressAttempts(limit=10, window_s=60, max_tracked=3)
    a.succeeded("office", 0.0, "EC0001")
    assert a.account_known("EC0001", 12 * 3600.0 - 1) and not a.account_known("EC0001", 12 * 3600.0 + 1)
    for i in range(5):
        a.succeeded(f"o{i}", 0.0, f"U{i}")
    assert not a.account_known("EC0001", 1.0)  # forgotten (least recently seen first)
    assert a.account_known("U4", 1.0)


def test_attempt_table_is_bounded():
    a = AddressAttempts(limit=5, window_s=60, max_tracked=100)
    for i in range(1000):
        a.reserve(f"s{i}", 0.0)
    assert a.tracked == 100


# -- the logon gate ------------------------------------------------------------------------------

async def test_gate_runs_at_most_checks_at_once_best_first():
    pool = ThreadPoolExecutor(8)
    gate = LogonGate(pool, checks=2, queue=10, wait_s=10)
    release = threading.Event()
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def check(name):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(HANG_S)
        with lock:
            running[0] -= 1
            order.append(name)
        return name

    first = [asyncio.ensure_future(gate.run((0, 1), check, f"busy{i}")) for i in range(2)]
    await asyncio.sleep(0.05)
    late = [asyncio.ensure_future(gate.run((1, 5), check, f"guess{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    good = asyncio.ensure_future(gate.run((0, 0), check, "operator"))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*first, *late, good)
    assert peak[0] == 2
    assert order.index("operator") < min(order.index(f"guess{i}") for i in range(3))
    pool.shutdown()


async def test_gate_refuses_the_worst_when_the_queue_is_full_and_waiters_that_wait_too_long():
    pool = ThreadPoolExecutor(2)
    gate = LogonGate(pool, checks=1, queue=2, wait_s=0.3)
    release = threading.Event()
    blocker = asyncio.ensure_future(gate.run((0, 0), release.wait, HANG_S))
    await asyncio.sleep(0.05)
    w1 = asyncio.ensure_future(gate.run((1, 9), lambda: "w1"))
    w2 = asyncio.ensure_future(gate.run((1, 1), lambda: "w2"))
    await asyncio.sleep(0.01)
    w3 = asyncio.ensure_future(gate.run((0, 1), lambda: "w3"))  # better than w1: w1 is refused
    worse = asyncio.ensure_future(gate.run((1, 99), lambda: "worse"))  # worse than all: refused itself
    with pytest.raises(Busy):
        await w1
    with pytest.raises(Busy):
        await worse
    # Nobody is let through within wait_s: the waiters are refused too.
    for w in (w2, w3):
        with pytest.raises(Busy):
            await w
    release.set()
    await blocker
    assert await gate.run((1, 0), lambda: "after") == "after"  # nothing leaked
    assert gate.running == 0 and gate._waiting == 0
    pool.shutdown()


async def test_one_check_slot_is_kept_for_known_addresses():
    pool = ThreadPoolExecutor(4)
    gate = LogonGate(pool, checks=2, queue=10, wait_s=10)
    release = threading.Event()
    started: list[str] = []

    def check(name):
        started.append(name)
        release.wait(HANG_S)
        return name

    # Guesses from unknown addresses: only one runs at a time, the other slot stays free …
    # (waited for: a check starts in a pool thread, which a loaded machine starts late)
    guesses = [asyncio.ensure_future(gate.run((1, 3), check, f"guess{i}")) for i in range(3)]
    await eventually(lambda: started)
    assert started == ["guess0"] and gate.running == 1
    # … so an operator from a known address starts while the guess still holds its slot.
    op = asyncio.ensure_future(gate.run((0, 0), check, "operator"))
    await eventually(lambda: len(started) > 1)
    assert started == ["guess0", "operator"] and gate.running == 2
    release.set()
    assert await op == "operator"
    await asyncio.gather(*guesses)
    assert gate.running == gate.running_unknown == 0
    # With one slot in all nothing is kept back.
    solo = LogonGate(pool, checks=1, queue=10, wait_s=10)
    assert await solo.run((1, 0), lambda: "x") == "x"
    pool.shutdown()


@pytest.mark.skipif(__import__("sys").platform != "linux", reason="per-thread nice values are Linux's")
def test_checks_for_unknown_addresses_run_at_a_lower_cpu_priority():
    import os

    from msc.server.logons import UNKNOWN_NICE, lower_priority

    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = os.getpriority(os.PRIO_PROCESS, 0)
    with ThreadPoolExecutor(1, initializer=lower_priority) as low, ThreadPoolExecutor(1) as normal:
        assert low.submit(nice_of_this_thread).result() == min(19, base + UNKNOWN_NICE)
        assert normal.submit(nice_of_this_thread).result() == base
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the process (and the loop's thread) unchanged
