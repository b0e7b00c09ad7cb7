"""Every operation that needs the storage, while msc's PostgreSQL database is away (issue 16): a
clean refusal with a documented code (PROTOCOL.md §6) and a log line naming the cause — never
``E502 INTERNAL ERROR``, a traceback or a hang — and the same operation working again by itself
once the database is back.

A switch (in this process, one node) keeps its journal, run-time state, queues and ledger in a
real PostgreSQL of its own (tests/pg.py). Three faults: the server **stopped** (every connection
refused: a primary killed or being promoted), every msc session **ended under it**
(``pg_terminate_backend``: a connection lost, the server up), and the server **frozen** (SIGSTOP
of every process: nothing answers, not even a reset — each refusal within its bound). For each
operation the table says what the client sees while the fault lasts; afterwards every operation
must succeed.

A LOGON (terminal, pool, with TOTP) and a PWD need the run-time state: ``E503`` (the pooled
mnemonic is not lent); a message needs the journal: ``E501``; a request on the control socket
(what ``msc … --as`` asks of the switch) is refused ``ok: false`` with the cause; ``/readyz`` is
503 naming the journal's database within a few seconds, and 200 again by itself afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import Callable

import pytest
import structlog

from msc.actions.journaling import control
from msc.config.load import load
from msc.journal.journal import STALL_S
from msc.mnemonics import totp
from msc.ops.availability import between
from msc.server.switch import Switch
from msc.storage.backends import Backends
from tests.conftest import PASSWORD, WEB_CONSOLE, Harness, add_totp_user, free_port, make_config
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(300)

QW = "{h}Q{n}.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101"
OTHER = "another long passphrase seven"


@pytest.fixture(scope="module")
def cluster():
    from tests import pg

    reason = pg.missing_reason()
    if reason:
        pytest.skip(reason)
    with pg.PgCluster.create(name="outage") as c:
        yield c


class Site:
    """The switch on the cluster, its stub, and the clients a test needs."""

    def __init__(self, h: Harness, cluster, switch: Switch, secrets: dict[str, bytes]) -> None:
        self.h, self.cluster, self.switch = h, cluster, switch
        self.totp_users = list(secrets.items())  # each TOTP step is accepted once: a user per success
        self.n = 0

    async def operator(self, header: str = "ICS1", user: str = "TS0001") -> WireClient:
        c = await self.h.client()
        assert (await c.logon(header, user, PASSWORD)).type == "A"
        return c

    async def logon(self, header: str, user: str, otp: str = "-") -> str:
        c = await self.h.client()
        try:
            f = await c.logon(header, user, PASSWORD, otp)
            return "A" if f.type == "A" else f.code
        finally:
            c.close()

    async def message(self, c: WireClient) -> str:
        self.n += 1
        f = await c.send(QW.format(h="ICS1", n=self.n), timeout=60)
        return "A" if f.type == "A" else f.code

    async def control(self, request: dict) -> dict:
        return await asyncio.to_thread(control, self.switch.settings, request, 60.0)

    async def totp_logon(self) -> str:
        uid, secret = self.totp_users[0]
        code = await self.logon("ICS2", uid, totp.code_at(secret, time.time()))
        if code == "A":
            self.totp_users.pop(0)
        return code

    def pool_free(self) -> float:
        return self.switch.metrics.pool_free.labels("ECMDT")._value.get()

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def switch_on(tmp_path, cluster, *, user: str = "postgres", password: str | None = None):
    """The switch on a fresh database of ``cluster``, connecting as ``user``."""
    db = f"outage_{tmp_path.name[-20:].lower().replace('-', '_')}".rstrip("_")
    db = "".join(ch for ch in db if ch.isalnum() or ch == "_")
    cluster.create_database(db)
    if user != "postgres":
        cluster.sql(f"ALTER DATABASE {db} OWNER TO {user}")
    h = Harness(tmp_path)
    stub = await h.start_stub()
    path = make_config(tmp_path, upstream_ports=[stub.port])
    secret_file = tmp_path / "pg.password"
    secret_file.write_text((password or cluster.password) + "\n")
    secret_file.chmod(0o600)
    path.write_text(path.read_text() + f'\n[storage]\nbackend = "postgresql"\n'
                    f'dsn = "postgresql://{user}@127.0.0.1:{cluster.port}/{db}"\npassword_file = "pg.password"\n')
    secrets = {f"MF000{i}": add_totp_user(path, f"MF000{i}") for i in range(1, 7)}
    h.switch = Switch(load(path))
    await h.switch.start()
    await h.wait_upstream()
    try:
        yield Site(h, cluster, h.switch, secrets)
    finally:
        if cluster.pid is None:
            cluster.start()
        with contextlib.suppress(Exception):
            await h.stop()


@pytest.fixture
async def site(tmp_path, cluster):
    async with switch_on(tmp_path, cluster) as s:
        yield s


def terminate_sessions(cluster, db: str) -> None:
    """``pg_terminate_backend`` of every session of msc's database (a connection lost, the server up)."""
    cluster.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
                "AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + 60
    while cluster.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()") != "0":
        assert time.monotonic() < deadline, "the ended sessions did not go"
        time.sleep(0.02)


async def operations(site: Site, held: WireClient) -> dict[str, str]:
    """Each operation once, as its client sees it: "A", a reject code, or the control socket's
    ``ok``/its error's first word."""
    seen: dict[str, str] = {}
    seen["terminal LOGON"] = await site.logon("ICS2", "TS0002")
    before = site.pool_free()
    seen["pool LOGON"] = await site.logon("ECMDT", "EC0001")
    if seen["pool LOGON"] != "A":
        assert site.pool_free() == before, "a refused pool LOGON must not keep the mnemonic"
    seen["TOTP LOGON"] = await site.totp_logon()
    f = await held.send(f"ICS1.PWD.{PASSWORD}.{OTHER}", timeout=60)
    seen["PWD"] = "A" if f.type == "A" else f.code
    if f.type == "A":  # and back, for the next round
        assert (await held.send(f"ICS1.PWD.{OTHER}.{PASSWORD}", timeout=60)).type == "A"
    seen["message"] = await site.message(held)
    for name, req in (("control unlock", {"op": "unlock", "id": "TS0002"}),
                      ("control station", {"op": "station", "mnemonic": "ICS9", "disabled": False}),
                      ("control record", {"op": "record", "entries": [{"kind": "ADMIN", "text": "OUTAGE TEST"}]})):
        reply = await site.control(req)
        seen[name] = "ok" if reply.get("ok") else reply.get("error", "?").split(":")[0]
    return seen


#: What a client sees of each operation while the database is stopped.
STOPPED = {
    "terminal LOGON": "E503", "pool LOGON": "E503", "TOTP LOGON": "E503", "PWD": "E503",
    "message": "E501",
    "control unlock": "storage unavailable", "control station": "storage unavailable", "control record": "journal",
}
ALL_WORK = {k: "ok" if k.startswith("control") else "A" for k in STOPPED}


async def test_with_the_database_stopped_every_operation_is_refused_cleanly_and_works_again_after(site):
    held = await site.operator("ICS1", "TS0001")
    assert (await site.control({"op": "ping"}))["ok"]
    with structlog.testing.capture_logs() as logs:
        site.cluster.stop("fast")
        try:
            # /readyz follows the database within seconds, with no traffic at all.
            await site.until(lambda: not site.switch.readiness()[0], "/readyz 503 for the stopped database")
            ready, reasons = site.switch.readiness()
            assert "journal" in reasons and "journal database" in str(reasons["journal"]), reasons
            seen = await asyncio.wait_for(operations(site, held), 240)
        finally:
            site.cluster.start()
    assert seen == STOPPED, seen
    # Four logons and a PWD refused E503: said once for the outage, not per message (msc.outage).
    events = [e for e in logs if e.get("event") == "session.storage_unavailable"]
    assert [(e["mke"], e["log_level"]) for e in events] == [("LOGON", "warning")], events
    assert "run-time state on PostgreSQL (127.0.0.1:" in events[0]["error"], events
    # Every refusal above tried its record (the message, the refusals' REJECTED, the control's
    # record): each counted, said once.
    failed = [e for e in logs if e.get("event") == "journal.commit_failed"]
    assert [e["log_level"] for e in failed] == ["warning"], failed
    assert failed[0]["storage"].startswith("PostgreSQL (127.0.0.1:"), failed  # where, never a password
    assert site.switch.metrics.journal_errors._value.get() >= 3
    # The control socket's two requests that need the run-time state (unlock, station): refused
    # each, said once for the outage (a script retrying was a warning per request).
    control_said = [e for e in logs if e.get("event") == "control.storage_unavailable"]
    assert [(e.get("op"), e["log_level"]) for e in control_said] == [("unlock", "warning")], control_said
    assert not [e for e in logs if e.get("event") == "session.internal_error"]
    assert site.switch.metrics.registry.get_sample_value("msc_rejects_total", {"code": "E502"}) in (None, 0.0)

    # Back by itself: /readyz 200 with no message sent, then every operation succeeds.
    await site.until(lambda: site.switch.readiness()[0], "/readyz 200 again once the database is back")
    with structlog.testing.capture_logs() as logs:
        held = await site.operator("ICS1", "TS0001") if held.closed.done() else held
        assert await asyncio.wait_for(operations(site, held), 240) == ALL_WORK
    assert [e["was"] for e in logs if e.get("event") == "session.storage_available"] == [events[0]["error"]]
    assert [(e["was"], e["refused"]) for e in logs if e.get("event") == "control.storage_available"] == [
        (control_said[0]["error"], 2)]


async def test_with_msc_sessions_ended_under_it_every_operation_works_again_by_itself(site):
    """pg_terminate_backend of every session msc has open (the journal writer's, the run-time
    state's, the queues', the ledger's): the server stays up. A call already on a dead connection
    may be refused (E501/E503: never an internal error); the next one reconnects — so at most the
    first of each, and every operation after that succeeds."""
    held = await site.operator("ICS1", "TS0001")
    db = site.switch.settings.config.storage.dsn.rsplit("/", 1)[1]
    with structlog.testing.capture_logs() as logs:
        for _round in range(2):
            terminate_sessions(site.cluster, db)
            first = await asyncio.wait_for(operations(site, held), 240)
            for op, code in first.items():
                assert code in (ALL_WORK[op], STOPPED[op]), (op, code)
            again = await asyncio.wait_for(operations(site, held), 240)
            assert again == ALL_WORK, (first, again)
    assert not [e for e in logs if e.get("event") == "session.internal_error"]
    await site.until(lambda: site.switch.readiness()[0], "/readyz 200")



async def test_with_the_database_frozen_nothing_hangs_and_it_all_works_again_after(site):
    """A frozen database (SIGSTOP of the postmaster and every backend: a paused VM, a cut network)
    answers nothing, not even a reset. Each waiting operation still ends in its clean refusal
    within its bounds (a LOGON's run-time state call, a commit's watchdog), asked at once side by
    side; then, the database continued, both work again and /readyz is 200 by itself."""
    from tests.e2e.test_ha_nodes import freeze

    held = await site.operator("ICS1", "TS0001")
    other = await site.h.client()

    async def logon() -> str:
        f = await other.send(f"ICS2.LOGON.TS0002.-.{PASSWORD}", timeout=120)
        other.close()
        return "A" if f.type == "A" else f.code

    frozen_at = time.time()
    frozen = freeze(site.cluster)
    try:
        code, message = await asyncio.wait_for(asyncio.gather(logon(), site.message(held)), 120)
        await site.until(lambda: not site.switch.readiness()[0], "/readyz 503 for the frozen database")
        stalled_by = time.time() - STALL_S  # (journal.down_since was set: its call began STALL_S before)
        assert site.switch.journal.down_since() is not None
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    thawed = time.time()
    assert (code, message) == ("E503", "E501")
    await site.until(lambda: site.switch.readiness()[0], "/readyz 200 again once the database answers")
    assert await site.logon("ICS2", "TS0002") == "A"
    assert await site.message(held) == "A"
    # The message's commit the watchdog gave up on ran when the server was continued (its
    # statement had reached it): those records are the switch's own, landed late — never called
    # another process's (probe hB: a FOREIGN record naming the switch's own RECEIVED record).
    j = site.switch.journal
    await j.flush()
    texts = await j.texts(list(range(1, j.last_seq + 1)))
    assert not [t for t in texts.values() if "WRITTEN BY ANOTHER PROCESS" in t], texts
    # The availability ledger (its runs table in the same database): the freeze is an unscheduled
    # outage from the first journal call that stalled — the probe or the message's commit — not
    # from a heartbeat written during the freeze that landed after the thaw (newcomer7: 2.4 s late).
    ledger = Backends(site.switch.settings).ledger()
    try:
        await site.until(lambda: len(ledger.runs()) >= 2, "the run split at the outage", timeout=120)
        rs = ledger.runs()
    finally:
        ledger.close()
    (o,) = between(rs, rs[0].started, time.time(), current=max(rs, key=lambda r: r.started).id).outages
    print(f"\nfrozen {thawed - frozen_at:.1f} s: outage {o.start - frozen_at:+.3f} s after the freeze, "
          f"{o.seconds:.1f} s long, ended {o.end - thawed:+.3f} s after the thaw")
    assert frozen_at - 0.01 <= o.start <= stalled_by + 0.01 and o.end >= thawed - 0.01 and not o.scheduled


# -- what the log says: one outage, one warning, however often it is scraped or looked at -------

def scrape(port: int) -> tuple[int, str]:
    """``GET /metrics`` as Prometheus does, from a thread (the switch's loop answers it)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        return r.status, r.read().decode()


class Calls:
    """Counts the calls of an instance's method (the periodic looks whose ticks a test waits for)."""

    def __init__(self, obj: object, name: str) -> None:
        self.n = 0
        inner = getattr(obj, name)

        async def counted(*a, **k):
            self.n += 1
            return await inner(*a, **k)

        setattr(obj, name, counted)


async def test_an_outage_is_said_once_however_often_it_is_scraped_and_again_after_it_came_back(site):
    """newcomer9 F3: ``metrics.logon_counts_unreadable`` at level error with a traceback at every
    /metrics scrape while the database was away; the user directory's look (every 2 s) and the
    queues' snapshot (every 0.5 s) likewise said their failure at every tick. Each is now a warning
    with its reason, once per outage, an info line when it works again, and said again at the next
    outage; every scrape is answered, without the two logon counters while they cannot be read."""
    sw = site.switch
    port = sw.ops.port
    held = await site.operator("ICS1", "TS0001")
    assert await site.message(held) == "A"  # records in the journal: a checkpoint is due at some tick
    looks, flushes = Calls(sw, "sync_users"), Calls(sw.delivery, "flush")
    complaints: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: complaints.append(ctx))
    counted = 'msc_logon_failures_total{path="terminal"}'

    async def outage() -> None:
        site.cluster.stop("fast")
        try:
            await site.until(lambda: not sw.readiness()[0], "/readyz 503 for the stopped database")
            first_look, first_flush = looks.n, flushes.n
            for _ in range(3):  # scraped at Prometheus's pace or faster: each answered
                status, body = await asyncio.to_thread(scrape, port)
                assert status == 200 and counted not in body
            # several ticks of each periodic look meet the stopped database
            await site.until(lambda: looks.n >= first_look + 3 and flushes.n >= first_flush + 3,
                             "three looks at the user directory and three snapshots during the outage")
        finally:
            site.cluster.start()
        await site.until(lambda: sw.readiness()[0], "/readyz 200 again once the database is back")
        back_look, back_flush = looks.n, flushes.n
        await site.until(lambda: looks.n > back_look + 1 and flushes.n > back_flush + 1, "a look and a flush after")
        status, body = await asyncio.to_thread(scrape, port)
        assert status == 200 and counted in body

    with structlog.testing.capture_logs() as logs:
        await outage()
        await outage()  # a second outage is said again
    said = collections.Counter(e["event"] for e in logs)
    for event, recovered in [("metrics.logon_counts_unreadable", "metrics.logon_counts_readable"),
                             ("users.not_synced", "users.synced"),
                             ("delivery.flush_failed", "delivery.flush_recovered")]:
        assert said[event] == 2 and said[recovered] == 2, (event, said[event], recovered, said[recovered])
        for e in logs:
            if e["event"] == event:
                assert e["log_level"] == "warning" and "PostgreSQL (127.0.0.1:" in (e.get("error") or e["reason"]), e
    assert said["journal.checkpoint_failed"] <= 2
    assert not [e for e in logs if "exc_info" in e or e.get("log_level") == "critical"], \
        [e for e in logs if "exc_info" in e]
    assert complaints == [], [c.get("message") for c in complaints]




async def test_the_web_consoles_logons_while_the_database_is_stopped_are_said_once(site, tmp_path):
    """The web console (``msc web``: a process of its own, opening the run-time state for each
    logon) beside the switch on the same database: its investigator's logons while the database is
    stopped are answered 503 as before, ``web.storage_unavailable`` said once for all of them (it
    was a warning per attempt), and ``web.storage_available`` with how many were refused once a
    logon is decided again."""
    from msc.web.app import WebConsole
    from msc.web.sessions import WebSession

    (tmp_path / "tls").mkdir(exist_ok=True)
    for f in ("web.crt", "web.key"):
        (tmp_path / "tls" / f).write_text("x")
    web_toml = tmp_path / "web.toml"  # the switch's configuration and a [web] table: msc web's
    web_toml.write_text((tmp_path / "msc.toml").read_text() + WEB_CONSOLE.format(web_listener=0, web_port=free_port()))  # (never bound)
    console = WebConsole(load(web_toml))

    async def logon() -> int:
        s = WebSession(sid="x", created=time.monotonic(), banner="b")
        resp = await console._console_logon(None, s, "investigator", "TS0001", "not the password", "")  # type: ignore[arg-type]
        return resp.status_code

    with structlog.testing.capture_logs() as logs:
        site.cluster.stop("fast")
        try:
            stopped = [await logon() for _ in range(3)]
        finally:
            site.cluster.start()
        await site.until(lambda: site.switch.readiness()[0], "/readyz 200 again once the database is back")
        decided = await logon()
    assert stopped == [503] * 3 and decided == 403  # refused for a wrong password once it can be decided
    said = [e for e in logs if e.get("event", "").startswith("web.storage_")]
    assert [(e["event"], e["log_level"]) for e in said] == [
        ("web.storage_unavailable", "warning"), ("web.storage_available", "info")], said
    assert "PostgreSQL (127.0.0.1:" in said[0]["error"], said
    assert said[1]["refused"] == 3 and said[1]["was"] == said[0]["error"]
    assert not [e for e in logs if "exc_info" in e]


async def test_the_web_consoles_routes_while_the_database_is_stopped_are_503_and_said_once(site, tmp_path):
    """A real ``msc web`` beside the switch on the same database, an administrator and an
    investigator logged on; the database stopped. Every route they use (the stations and users
    lists, an unlock, a station enabled — refused by the switch's control socket —, the reports,
    a search, a verification, the export form) and a new logon: 503 with ``Retry-After`` and the
    console's words, never a 500 with "Exception in ASGI application" per request (before: every
    one of them but the logon). The log says each source once — ``web.storage_unavailable``
    (the administrator's routes and logons), ``web.journal_unavailable`` (the investigator's) —
    and once when it works again, with how many were refused; the sessions go on afterwards."""
    from msc.web.certs import self_signed
    from tests.integration.test_web_storage_outage import (
        WEB as WEB_TABLE,
    )
    from tests.integration.test_web_storage_outage import (
        Browser,
        assert_no_traceback,
        assert_unavailable,
        events,
        start_web,
    )

    self_signed(tmp_path / "tls" / "web.crt", tmp_path / "tls" / "web.key")
    port = free_port()
    web_toml = tmp_path / "web.toml"  # the switch's configuration and a [web] table: msc web's
    web_toml.write_text((tmp_path / "msc.toml").read_text() + WEB_TABLE.format(web_listener=free_port(), web_port=port))
    log = tmp_path / "web.err"
    web = start_web(web_toml, log)
    admin, investigator, late = (Browser(f"https://127.0.0.1:{port}") for _ in range(3))
    try:
        assert (await admin.logon("admin", "AD0001")).status_code == 200
        assert (await investigator.logon("investigator", "IN0001")).status_code == 200
        site.cluster.stop("fast")
        try:
            seen = {
                "stations": await admin.get("/api/admin/stations"),
                "users": await admin.get("/api/admin/users"),
                "unlock": await admin.post("/api/admin/user/status", {"id": "TS0002", "action": "unlock"}),
                "station": await admin.post("/api/admin/station", {"mnemonic": "ICS9", "action": "enable"}),
                "availability": await admin.get("/api/admin/report/availability"),
                "report users": await admin.get("/api/admin/report/users", accept="text/html"),
                "search": await investigator.post("/api/journal/search", {"case": "OUTAGE-1"}),
                "verify": await investigator.post("/api/journal/verify", {}),
                "export": await investigator.export("OUTAGE-1"),
                "logon": await late.logon("admin", "AD0001"),
            }
        finally:
            site.cluster.start()
        await site.until(lambda: site.switch.readiness()[0], "/readyz 200 again once the database is back")
        for name, r in seen.items():
            if name == "logon":
                assert (r.status_code, r.json()) == (503, {"error": "STORAGE UNAVAILABLE, TRY AGAIN"}), r.text
            else:
                assert_unavailable(r, changing=name in ("unlock", "station"))
        assert seen["export"].headers["content-type"].startswith("text/html")  # the form's navigation
        assert not list((tmp_path / "data" / "web-exports").glob("*")), "a partial bundle was left"
        # Back by itself; the sessions are the same.
        stations = await admin.get("/api/admin/stations")
        search = await investigator.post("/api/journal/search", {"case": "OUTAGE-1"})
        assert (stations.status_code, search.status_code) == (200, 200), (stations.text, search.text)
    finally:
        for b in (admin, investigator, late):
            await b.close()
        web.stop()
    said = [e for e in events(log) if e["event"].startswith(("web.storage_", "web.journal_"))]
    assert [(e["event"], e["level"]) for e in said] == [
        ("web.storage_unavailable", "warning"), ("web.journal_unavailable", "warning"),
        ("web.storage_available", "info"), ("web.journal_available", "info")], said
    by = {e["event"]: e for e in said}
    assert by["web.storage_unavailable"]["path"] == "/api/admin/stations"
    assert "PostgreSQL (127.0.0.1:" in by["web.storage_unavailable"]["error"], by
    assert by["web.journal_unavailable"]["path"] == "/api/journal/search"
    assert by["web.storage_available"]["refused"] == 7 and by["web.journal_available"]["refused"] == 3, said
    assert_no_traceback(log)


async def test_a_journal_its_role_may_no_longer_write_is_not_ready_without_traffic_and_does_not_flap(tmp_path,
                                                                                                    cluster):
    """``REVOKE INSERT ON journal_records`` from msc's role: every commit is refused (``permission
    denied``), but the once-a-second probe was ``SELECT 1``, which still worked — ``/readyz`` said
    200 with no traffic, and with traffic flapped 503/200 (each probe undid the failed commit's
    503), a ``ledger.journal_outage`` warning and an availability outage per flap (probe hB: 31
    in 30 s). The probe now asks what a commit needs (the INSERT privileges, a primary, a
    read-write session): 503 with the reason at once, traffic or not, and one outage."""
    import structlog

    cluster.sql("DROP ROLE IF EXISTS msc_writer")
    cluster.sql(f"CREATE ROLE msc_writer LOGIN PASSWORD '{cluster.password}'")
    async with switch_on(tmp_path, cluster, user="msc_writer") as site:
        db = site.switch.settings.config.storage.dsn.rsplit("/", 1)[1]
        held = await site.operator("ICS1", "TS0001")
        assert await site.message(held) == "A"
        with structlog.testing.capture_logs() as logs:
            cluster.sql("REVOKE INSERT ON journal_records FROM msc_writer", dbname=db)
            await site.until(lambda: not site.switch.readiness()[0], "/readyz 503 with no message sent")
            assert "journal_records" in str(site.switch.readiness()[1]["journal"])  # the probe's or a commit's reason
            journal = site.switch.journal
            asked, inner = [], journal.probe

            async def probe():  # the once-a-second look (msc.server.background), observed
                try:
                    return await inner()
                finally:
                    asked.append(site.switch.readiness()[0])  # what /readyz said after this probe

            journal.probe = probe  # type: ignore[method-assign]
            codes = [await site.message(held) for _ in range(3)]
            await site.until(lambda: len(asked) >= 3, "three probes after the refused messages")
            del journal.probe
            assert not any(asked), asked  # no probe made it 200 again (it flapped: 503, 200, 503 …)
            cluster.sql("GRANT INSERT ON journal_records TO msc_writer", dbname=db)
            await site.until(lambda: site.switch.readiness()[0], "/readyz 200 again once it may write")
            assert await site.message(held) == "A"
        assert codes == ["E501"] * 3, codes
        outages = [e for e in logs if e.get("event") == "ledger.journal_outage"]
        assert len(outages) <= 1, outages
