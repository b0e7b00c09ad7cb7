"""Issue 14 against the real Switch on loopback: deadlines, the connection table (TLS handshakes
included), what refused traffic costs the journal, and the logon gate.

The e2e counterparts with the real ``msc serve`` and the issue's numbers: tests/e2e/test_bounds.py.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from msc.journal.search import Query, search
from msc.server.session import taf_for
from tests.conftest import PASSWORD, eventually
from tests.tlsutil import PKI
from tests.waiting import HANG_S
from tests.wire import WireClient, frame

pytestmark = pytest.mark.timeout(120)


def metric(sw, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(sw.metrics.exposition()[0].decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def records(sw, **q) -> list:
    await sw.journal.flush()
    return list(search(sw.settings.journal_dir, sw.journal.keyring, Query(**q)))


async def eventually_records(sw, predicate, timeout: float = HANG_S, **q) -> list:
    """The records matching ``q`` once ``predicate(records)`` holds (or the last ones read)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rs = await records(sw, **q)
        if predicate(rs) or loop.time() > deadline:
            return rs
        await asyncio.sleep(0.05)


async def disconnects(sw, n: int = 1, **q) -> list[str]:
    """The texts of the DISCONNECT records, once there are ``n``. msc writes one when its side of
    the connection is gone — after the peer closed too, or a lingering close's LINGER_S later —
    which may be after the client saw the close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while True:
        bye = [r.text for r in await records(sw, kind="SESSION", **q) if r.text.startswith("DISCONNECT")]
        if len(bye) >= n or loop.time() > deadline:
            return bye
        await asyncio.sleep(0.05)


async def connect_from(port: int, source: str, **kw) -> WireClient:
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), **kw)
    return WireClient(r, w)


async def closed_with(c: WireClient, timeout: float = HANG_S) -> list[str]:
    """Wait until msc closes the connection; the texts of its xid-0 N frames."""
    await c.wait_closed(timeout)
    return [f.text for f in c.received if f.type == "N" and f.xid == 0]


# -- deadlines ------------------------------------------------------------------------------------

async def test_a_connection_that_does_not_log_on_in_time_is_closed_and_says_why(harness):
    sw = await harness.start_switch(listener_extra="logon_timeout_s = 0.5")
    silent = await WireClient.connect(harness.port)  # never even acknowledges the banner
    acked = await harness.client()  # acknowledges, answers heartbeats, never logs on
    op = await harness.operator("ICS1", "TS0001")  # logged on in time: no deadline any more
    assert await closed_with(silent) == ["E201 NO LOGON WITHIN 0.5 S"]
    assert await closed_with(acked) == ["E201 NO LOGON WITHIN 0.5 S"]
    await asyncio.sleep(0.6)
    assert not op.closed.done()
    assert metric(sw, "msc_connections_closed_total", reason="logon_timeout") == 2
    assert (await op.send("ICS1.LOGOFF")).type == "A"
    # After a LOGOFF the connection is pending again: the logon deadline runs anew (probe14 case
    # 5; before, a logged-off connection held its slot with no deadline).
    assert await closed_with(op) == ["E201 NO LOGON WITHIN 0.5 S"]
    assert metric(sw, "msc_connections_closed_total", reason="logon_timeout") == 3
    bye = await disconnects(sw, n=3)
    assert sum("NOT LOGGED ON" in t and t.endswith("CLOSED: LOGON TIMEOUT") for t in bye) == 3


async def test_a_host_binds_in_time_by_its_first_message(harness):
    await harness.start_stub()
    await harness.start_switch(listener_extra="logon_timeout_s = 0.5")
    await harness.wait_upstream()
    host = await harness.client()
    assert (await host.send("ECC1A.*EC0001.#0A000001.QV.CA0130100.LIC/ABC123")).type == "A"
    await asyncio.sleep(0.7)
    assert not host.closed.done()


# -- the connection table -------------------------------------------------------------------------

async def test_a_full_listener_takes_the_oldest_pending_slot_never_an_established_one(harness):
    sw = await harness.start_switch(max_connections=4, listener_extra="max_pending_per_address = 100")
    op = await harness.operator("ICS1", "TS0001")
    idle = [await harness.client() for _ in range(3)]
    newer = await harness.client()  # the listener is full: the oldest pending gives way
    assert await closed_with(idle[0]) == ["E307 TOO MANY CONNECTIONS"]
    assert not op.closed.done() and not newer.closed.done()
    assert (await newer.logon("ICS2", "TS0002", PASSWORD)).type == "A"
    # Now two established and two pending: two more take the two pending slots …
    more = [await harness.client() for _ in range(2)]
    for c in idle[1:]:
        assert await closed_with(c) == ["E307 TOO MANY CONNECTIONS"]
    for c in more:
        assert (await c.logon("ECMDT", "EC0001" if c is more[0] else "EC0002", PASSWORD)).type == "A"
    # … and with every slot established, a new connection is refused at once.
    refused = await WireClient.connect(harness.port)
    assert await closed_with(refused) == ["E307 TOO MANY CONNECTIONS"]
    assert metric(sw, "msc_connections_closed_total", reason="evicted") == 3
    assert metric(sw, "msc_connections_closed_total", reason="refused") == 1
    assert metric(sw, "msc_listener_connections", listener="terminals", state="established") == 4


async def test_one_address_holds_at_most_its_pending_slots(harness):
    sw = await harness.start_switch(listener_extra="max_pending_per_address = 3")
    mine = [await connect_from(harness.port, "127.0.0.5") for _ in range(3)]
    others = [await connect_from(harness.port, "127.0.0.6") for _ in range(3)]
    newer = await connect_from(harness.port, "127.0.0.5")
    assert await closed_with(mine[0]) == ["E307 TOO MANY CONNECTIONS"]
    await asyncio.sleep(0.1)
    assert not any(c.closed.done() for c in (*mine[1:], *others, newer))
    assert metric(sw, "msc_connections_closed_total", reason="address_limit") == 1
    assert metric(sw, "msc_listener_connections", listener="terminals", state="pending") == 6


@pytest.fixture
def pki(tmp_path):
    p = PKI(tmp_path / "pki")
    p.issue("server", "localhost", server=True)
    return p


def client_ctx(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    ctx.check_hostname = False
    return ctx


async def test_tls_handshakes_hold_slots_and_have_their_own_deadline(harness, pki):
    sw = await harness.start_switch(
        max_connections=3,
        listener_extra=(f'tls = {{ cert = "{pki.dir}/server.crt", key = "{pki.dir}/server.key" }}\n'
                        "tls_handshake_timeout_s = 0.5\nmax_pending_per_address = 100"))
    stalled = [await asyncio.open_connection("127.0.0.1", harness.port) for _ in range(3)]
    await eventually(lambda: metric(sw, "msc_listener_connections", listener="terminals", state="tls_handshake") == 3)
    # A real TLS terminal still gets in: it takes the oldest handshake's slot.
    t = await WireClient.connect(harness.port, ssl=client_ctx(pki))
    await t.banner()
    assert (await t.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    assert metric(sw, "msc_connections_closed_total", reason="evicted") == 1
    # The others are closed at their deadline (EOF: no TLS, so no N frame).
    for r, _w in stalled:
        assert await asyncio.wait_for(r.read(100), HANG_S) == b""
    await eventually(lambda: metric(sw, "msc_listener_connections", listener="terminals", state="tls_handshake") == 0)
    assert metric(sw, "msc_connections_closed_total", reason="tls_handshake_timeout") == 2
    # Garbage instead of a ClientHello: failed at once, recorded (within its address's budget).
    r, w = await asyncio.open_connection("127.0.0.1", harness.port)
    w.write(b"ICS1.LOGON.TS0001.-.not tls at all\r\n" * 4)
    assert await asyncio.wait_for(r.read(100), HANG_S) == b""
    await eventually(lambda: metric(sw, "msc_connections_closed_total", reason="tls_handshake_failed") == 1)
    texts = [x.text for x in await records(sw, kind="SESSION")]
    assert sum(x == "TLS HANDSHAKE TIMEOUT FROM 127.0.0.1" for x in texts) == 2
    assert "TLS HANDSHAKE ABANDONED FROM 127.0.0.1: SLOT TAKEN BY A NEWER CONNECTION" in texts
    assert any(x.startswith("TLS HANDSHAKE FAILED FROM 127.0.0.1: ") for x in texts)
    assert not t.closed.done()


# -- what refused traffic costs the journal ---------------------------------------------------------

#: Refused payloads of every kind a peer not logged on might flood (each on its own connection).
FLOODS = [
    ("32 KiB of A", b"A" * 32763),
    ("32 KiB of 0xFF", b"\xff" * 32763),
    ("a query before logon", b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101"),
    ("a LOGON for a station not its own", b"ICS9.LOGON.TS0001.-.guess"),
    ("control bytes", bytes(range(32)) * 100),
    ("a mangled logon with a secret", b"ICS1 logon TS0001 - Sw0rdfish-Secret " + b"Z" * 5000),
]


@pytest.mark.parametrize("name, payload", FLOODS, ids=[n for n, _ in FLOODS])
async def test_a_connection_not_logged_on_is_closed_at_its_tenth_refusal_with_compact_records(harness, name, payload):
    sw = await harness.start_switch()
    c = await harness.client()
    for i in range(1, 13):
        c.send_raw(frame("M", i, payload))
    naks = await closed_with(c)
    c.close()
    assert naks == ["E307 TOO MANY REFUSED MESSAGES, CONNECTION CLOSED"]
    answered = [f for f in c.received if f.type == "N" and f.xid]
    assert [f.xid for f in answered] == list(range(1, 11))  # ten answered, then closed
    assert metric(sw, "msc_connections_closed_total", reason="refused_messages") == 1
    rejected = await records(sw, kind="REJECTED")
    assert len(rejected) == 10
    for r in rejected:
        assert len(r.text) <= 80 + len("…[CHARS/131052 SHA256/]") + 64
        assert "Sw0rdfish" not in r.text
        assert r.taf == taf_for("127.0.0.1")
    bye = await disconnects(sw)
    assert len(bye) == 1 and "REFUSED 10 MESSAGES" in bye[0] and bye[0].endswith("CLOSED: TOO MANY REFUSED MESSAGES")


async def test_a_reconnecting_flood_is_counted_in_its_address_summary(harness):
    sw = await harness.start_switch(listener_extra="max_refused = 3")
    flood = b"\xff" * 32763
    t0 = asyncio.get_running_loop().time()
    for _ in range(25):
        c = await connect_from(harness.port, "127.0.0.9")
        for i in range(1, 4):
            c.send_raw(frame("M", i, flood))
        await closed_with(c)
    mine = [r for r in await records(sw) if r.taf == taf_for("127.0.0.9")]
    # 25 connections x (CONNECT + 3 refusals + DISCONNECT) = 125 events; the address may write 30
    # at once and 30 a minute more.
    elapsed = asyncio.get_running_loop().time() - t0
    assert len(mine) <= 30 + int(elapsed / 2) + 1
    assert metric(sw, "msc_unauthenticated_events_total", form="counted") > 0
    await harness.stop()  # the address's summary is written at the stop (else once a minute)
    sw = harness.switch
    summaries = [r for r in search(sw.settings.journal_dir, sw.journal.keyring, Query(code="SUMMARY"))]
    assert len(summaries) == 1
    s = summaries[0]
    assert s.kind == "SESSION" and s.taf == taf_for("127.0.0.9")
    assert s.text.startswith("UNAUTHENTICATED SUMMARY FROM 127.0.0.9: ")
    # Nothing is lost: the records and the summary together account for all 75 refusals.
    recorded = sum(1 for r in mine if r.kind == "REJECTED")
    counted = int(s.text.split("REFUSED ")[1].split(" MESSAGES")[0])
    assert recorded + counted == 75
    assert "E101" not in s.text and "E102/" in s.text  # 0xFF bytes: E102 (the byte policy)


async def test_a_logged_on_flood_keeps_its_first_refusals_whole_then_compact_then_a_summary(harness):
    sw = await harness.start_switch(rate_limit=100000, switch_extra="", listener_extra="max_refused_per_minute = 100000")
    c = await harness.operator("ICS1", "TS0001")
    n = 800
    futs = []
    for i in range(n):
        futs.append(asyncio.ensure_future(c.send(f"ICS1Z{i}.ZZ.CA0130000.NAM/FLOOD {i}", timeout=30)))
    answers = await asyncio.gather(*futs)
    assert {a.code for a in answers} == {"E301"}
    rejected = [r for r in await records(sw, kind="REJECTED", user="TS0001")]
    assert len(rejected) == 600  # refused_records_per_minute
    full = [r for r in rejected if "…[CHARS/" not in r.text]
    assert len(full) == 600  # short texts: the compact form is the whole text too
    assert rejected[0].text == "ICS1Z0.ZZ.CA0130000.NAM/FLOOD 0"
    c.close()
    await c.wait_closed()
    summary = await eventually(lambda: [r for r in search(sw.settings.journal_dir, sw.journal.keyring,
                                                          Query(code="SUMMARY"))])
    assert len(summary) == 1 and summary[0].kind == "REJECTED" and summary[0].user == "TS0001"
    assert "REFUSED 200 MESSAGES" in summary[0].text and "E301/200" in summary[0].text
    assert 'FIRST "ICS1Z600.ZZ.CA0130000.NAM/FLOOD 600" LAST "ICS1Z799.ZZ.CA0130000.NAM/FLOOD 799"' in summary[0].text
    assert metric(sw, "msc_refusals_total", form="full") == 120
    assert metric(sw, "msc_refusals_total", form="compact") == 480
    assert metric(sw, "msc_refusals_total", form="counted") == 200


async def test_a_logged_on_session_that_keeps_sending_refused_traffic_is_closed(harness):
    sw = await harness.start_switch(listener_extra="max_refused_per_minute = 50")
    c = await harness.operator("ICS1", "TS0001")
    for i in range(60):
        c.send_raw(frame("M", 100 + i, f"ICS1Z{i}.ZZ.CA0130000".encode()))
    assert (await closed_with(c))[-1] == "E307 TOO MANY REFUSED MESSAGES, CONNECTION CLOSED"
    c.close()
    assert metric(sw, "msc_connections_closed_total", reason="refused_messages") == 1
    bye = await disconnects(sw, mnemonic="ICS1")
    assert bye == ["DISCONNECT; CLOSED: TOO MANY REFUSED MESSAGES"]


async def test_a_logon_after_the_budget_is_spent_still_gets_its_connect_and_every_attempt_recorded(harness):
    sw = await harness.start_switch(switch_extra="", extra="",
                                    listener_extra="max_pending_per_address = 100")
    # Spend 127.0.0.1's budget of records for connections not logged on.
    idle = [await harness.client() for _ in range(20)]
    for c in idle:
        c.close()
    await eventually(lambda: metric(sw, "msc_unauthenticated_events_total", form="counted") > 0)
    c = await harness.client()
    # Checked LOGONs get their records whatever the budget (AC-7).
    assert (await c.logon("ICS1", "TS0001", "wrong")).code == "E202"
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    session = [r.text for r in await records(sw, kind="SESSION", mnemonic="ICS1")]
    assert "LOGON FAILED BAD PASSWORD" in [r.text for r in await records(sw, kind="SESSION", user="TS0001")]
    assert any(t.startswith("CONNECT AT ") for t in session)
    assert [r.code for r in await records(sw, kind="REJECTED", user="TS0001")] == ["E202"]


# -- the logon gate ---------------------------------------------------------------------------------

async def test_an_address_past_its_failures_is_refused_unchecked_and_others_are_not(harness):
    sw = await harness.start_switch(switch_extra="logon_failures_per_address = 3")
    codes = []
    for i in range(5):
        c = await connect_from(harness.port, "127.0.0.7")
        await c.banner()
        codes.append((await c.logon("ECMDT", "EC0001", f"guess {i}")).code)
        c.close()
    assert codes == ["E202", "E202", "E202", "E307", "E307"]
    assert metric(sw, "msc_logon_throttled_total", reason="address") == 2
    assert metric(sw, "msc_logon_failures_total", path="pool") == 3  # ECMDT is a pool; the unchecked ones are no attempt
    other = await connect_from(harness.port, "127.0.0.8")
    await other.banner()
    assert (await other.logon("ECMDT", "EC0002", PASSWORD)).type == "A"
    unchecked = [r for r in await records(sw, kind="REJECTED") if r.code == "E307"]
    assert [r.text for r in unchecked] == ["ECMDT.LOGON.EC0001.*.*"] * 2
    # A successful logon is not a failure: a NAT'd room logs on as often as it needs.
    for _ in range(6):
        c = await harness.client()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        c.close()


async def test_a_logon_refused_for_its_address_is_answered_after_the_delay(harness):
    sw = await harness.start_switch(switch_extra="logon_failures_per_address = 1\nlogon_throttle_delay_s = 0.4")
    c = await connect_from(harness.port, "127.0.0.7")
    await c.banner()
    assert (await c.logon("ECMDT", "EC0001", "guess 0")).code == "E202"
    # Past its rate: three LOGONs at once are answered one per delay (the others wait unread), so
    # a guesser gets one answer per connection and delay instead of as many as it can send. (A
    # lower bound on the time: the delay itself, which a slower machine only lengthens.)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    answers = await asyncio.gather(*(c.logon("ECMDT", "EC0001", f"guess {i}") for i in range(1, 4)))
    assert [a.text for a in answers] == ["E307 TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS, TRY LATER"] * 3
    assert loop.time() - t0 >= 3 * 0.4
    assert metric(sw, "msc_logon_throttled_total", reason="address") == 3
    assert metric(sw, "msc_logon_failures_total", path="pool") == 1
    c.close()


async def test_a_connection_waiting_for_a_throttled_answer_keeps_its_logon_deadline(harness):
    # While its refusal waits, the connection is not being checked: its deadline runs and its
    # slot may go to a newer connection; the refusal is still recorded when the delay is over.
    sw = await harness.start_switch(switch_extra="logon_failures_per_address = 1\nlogon_throttle_delay_s = 4",
                                    listener_extra="logon_timeout_s = 2")
    first = await connect_from(harness.port, "127.0.0.7")
    await first.banner()
    assert (await first.logon("ECMDT", "EC0001", "guess 0")).code == "E202"
    first.close()
    c = await connect_from(harness.port, "127.0.0.7")
    await c.banner()
    c.send_raw(frame("M", 1, b"ECMDT.LOGON.EC0001.-.guess 1"))
    assert await closed_with(c) == ["E201 NO LOGON WITHIN 2 S"]
    assert not [f for f in c.received if f.type == "N" and f.xid == 1]  # closed before its answer
    assert metric(sw, "msc_logon_throttled_total", reason="address") == 1
    unchecked = await eventually_records(sw, lambda rs: any(r.code == "E307" for r in rs), kind="REJECTED")
    assert [r.text for r in unchecked if r.code == "E307"] == ["ECMDT.LOGON.EC0001.*.*"]


#: User IDs an attacker might guess: none may leave a row of its own in state.db.
UNKNOWN_IDS = ["NOSUCH", "ZZ9999", "ts0001", "123456", "A", "ABCDEFGHIJ", "TS000", "*UNKNOWN*", "DS0002", "X-1"]


async def test_unknown_user_ids_leave_no_state(harness):
    sw = await harness.start_switch(switch_extra="logon_failures_per_address = 1000")
    for uid in UNKNOWN_IDS:
        c = await harness.client()
        await c.logon("ICS1", uid, "some guess")
        c.close()
    rows = set(sw.state.users())
    assert rows <= {"*UNKNOWN*"} | {u.id for u in sw.directory.users.values()}, rows


async def test_logon_checks_run_at_most_max_logon_checks_at_once(harness):
    # A cost at which checks overlap; 30 guessers from 30 addresses through the pool.
    sw = await harness.start_switch(password_cost=12,
                                    switch_extra="max_logon_checks = 2\nlogon_queue = 8\nlogon_wait_s = 30")
    peak = [0.0]
    stop = asyncio.Event()

    async def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], metric(sw, "msc_logon_checks", state="running"))
            await asyncio.sleep(0.005)

    async def connect(i: int) -> WireClient:
        c = await connect_from(harness.port, f"127.0.4.{i + 1}")
        await c.banner()
        return c

    # Every guesser connected first, then their LOGONs all at once (twice): 30 arrive together
    # for 2 check slots and 8 places in the queue, however slow the machine is.
    clients = await asyncio.gather(*(connect(i) for i in range(30)))
    w = asyncio.ensure_future(watch())
    codes = []
    for k in range(2):
        answers = await asyncio.gather(*(c.logon("ECMDT", "EC0001", f"guess {i} {k}") for i, c in enumerate(clients)))
        codes += [a.code for a in answers]
    stop.set()
    await w
    for c in clients:
        c.close()
    assert set(codes) <= {"E202", "E307"} and "E307" in codes  # the queue of 8 overflowed
    assert 1 <= peak[0] <= 2
    assert metric(sw, "msc_logon_throttled_total", reason="queue") == codes.count("E307")
    assert metric(sw, "msc_logon_checks", state="running") == 0
    assert metric(sw, "msc_logon_checks", state="waiting") == 0


async def test_a_connection_closing_for_its_refusals_gives_its_slot_to_a_newer_one_cleanly(harness):
    """It lingers (FIN sent, reading paused) for LINGER_S so that its last N frames arrive; taken
    for a newer connection meanwhile it is aborted, and the newer one is served (it once got an
    exception in its connection_made: a write after write_eof)."""
    sw = await harness.start_switch(listener_extra="max_pending_per_address = 2\nmax_refused = 2")
    doomed = await harness.client()
    for i in (1, 2, 3):
        doomed.send_raw(frame("M", i, b"ICS1.QW.CA0130000.NAM/X"))  # E201 x 2: closing
    await eventually(lambda: metric(sw, "msc_connections_closed_total", reason="refused_messages") == 1)
    other = await harness.client()
    newer = await harness.client()  # a third pending one from 127.0.0.1: takes the doomed one's slot
    assert (await newer.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    assert not other.closed.done()
    await doomed.wait_closed()
    assert [f.text for f in doomed.received if f.type == "N"][-1] == "E307 TOO MANY REFUSED MESSAGES, CONNECTION CLOSED"
