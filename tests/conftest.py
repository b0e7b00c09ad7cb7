"""Shared fixtures: a generated config, an in-process stub, an in-process Switch on loopback.

Every network test binds 127.0.0.1 with port 0 and is bounded in time (pytest-timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
import pytest

from msc.config.load import load
from msc.config.model import UserEntry, UsersFile
from msc.keyring import KeyRing
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password
from tests.waiting import AFTER_TIMEOUT_S, HANG_S

PASSWORD = "correct horse battery"
#: The scrypt cost of the test configuration and its users' hashes (production default 15).
TEST_COST = 4
TODAY = dt.date.today()

# A test run started in the background by a script (`.ci/run &`, nohup) has SIGINT ignored, and
# every process it starts would inherit that: `msc demo` and `msc serve` would then not see the
# Ctrl-C the stop tests send (seen: both demo tests timed out). A handler in this process is
# reset to the default in each child at exec, as in a shell's foreground job.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis fails an example that runs longer than its deadline (200 ms by default) — a timing
# threshold, which a loaded CI machine trips on a slow moment (and, when the rerun is fast, reports
# as "Unreliable test timings"). No test here asserts a speed: the whole suite runs without one.
# A test's own @settings(...) keeps this unless it names a deadline itself.
hypothesis.settings.register_profile("msc", deadline=None)
hypothesis.settings.load_profile("msc")


# pytest-timeout's signal method fails a hung test with one SIGALRM: the test's traceback, and
# the run goes on. Nothing bounds the rest of that test: pytest-timeout cancels its timer at the
# first failure (pytest_exception_interact, for a debugger), so a teardown that hangs after a
# timeout, or after any failed assertion, hangs for ever. The CI run that stalled 8 min at test
# 4,091 had a worker idle in an event loop with no timer: what pytest-asyncio's loop does when,
# closing, it waits for a default-executor thread that never returns (asyncio.to_thread of a wait
# nobody ends; Python 3.11's shutdown_default_executor has no bound).
#
# So a second bound, AFTER_TIMEOUT_S after the timeout, cancelled only when the test's whole
# protocol is over: it interrupts the main thread (SIGUSR2, whose handler fails the test with the
# other threads' stacks), and the test's teardown ends there; the worker then ends its process
# without waiting for the threads left stuck (os._exit with the session's status, after its
# report), which would hold the interpreter's exit for ever. A main thread that runs no Python
# code (a C event loop) is not interrupted: another AFTER_TIMEOUT_S later the process ends as
# pytest-timeout's thread method ends it, after killing the processes the test started. The
# worker is not crashed on purpose first: pytest-xdist 3.8's loadfile scheduler runs the test a
# worker crashed on again on its replacement (pytest-xdist#1371).
BACKSTOP = pytest.StashKey[list]()
_interrupted: list[str] = []  # tests of this process whose teardown was interrupted


@pytest.hookimpl(hookwrapper=True, optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    yield
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return  # the thread method ends the process itself
    import pytest_timeout

    main = threading.main_thread().ident
    timers = item.stash[BACKSTOP] = []

    def end_process() -> None:
        sys.__stderr__.write(f"\n{item.nodeid}: still running after its interrupt: its processes killed, "
                             "this test process ends\n")
        if (crashed := _crashed_file()) is not None:
            with crashed.open("a") as f:
                f.write(item.nodeid + "\n")
        _kill_descendants(os.getpid())
        pytest_timeout.timeout_timer(item, settings)

    def interrupt() -> None:
        item.stash[STACKS] = (settings.timeout, _other_stacks())
        last = threading.Timer(AFTER_TIMEOUT_S, end_process)
        last.daemon = True
        timers.append(last)
        last.start()
        signal.pthread_kill(main, signal.SIGUSR2)

    first = threading.Timer(settings.timeout + AFTER_TIMEOUT_S, interrupt)
    first.daemon = True
    first.name = f"after-timeout {item.nodeid}"
    timers.append(first)
    first.start()


STACKS = pytest.StashKey[tuple]()


def _other_stacks() -> str:
    import traceback

    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    return "".join(f"--- thread {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
                   for ident, frame in sys._current_frames().items() if ident not in (me, threading.main_thread().ident))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    def still_running(_signum, _frame):
        timeout, stacks = item.stash.get(STACKS, (0, ""))
        _interrupted.append(item.nodeid)
        pytest.fail(f"still running {AFTER_TIMEOUT_S:g} s after its {timeout:g}-s timeout (pytest-timeout stops at "
                    f"a first failure): interrupted here. The other threads:\n{stacks}", pytrace=True)

    previous = signal.signal(signal.SIGUSR2, still_running) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        yield
    finally:
        for timer in item.stash.get(BACKSTOP, []):
            timer.cancel()
        if previous is not None:
            signal.signal(signal.SIGUSR2, previous)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _interrupted:  # threads those tests left stuck would hold the interpreter's exit for ever
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(config.stash.get(EXIT_STATUS, 1)))


EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[EXIT_STATUS] = exitstatus


def _crashed_file() -> Path | None:
    """Where this xdist run's workers list the tests that ended their process (None: no xdist)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return Path(tempfile.gettempdir()) / f"msc-tests-crashed-{run}" if run else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    crashed = _crashed_file()
    if crashed is not None and crashed.exists() and item.nodeid in crashed.read_text().splitlines():
        pytest.fail("this test ended a test worker's process before (pytest-xdist#1371 runs it again on the "
                    "replacement): not run again", pytrace=False)


def _kill_descendants(pid: int) -> None:
    """SIGKILL every process below ``pid`` (Linux /proc; elsewhere nothing)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in task.read_text().split()]
                found += kids
                todo += kids
    for k in found:
        with contextlib.suppress(OSError):
            os.kill(k, signal.SIGKILL)

# id, name, ori, role, dob, certified_until, status
USERS = [
    ("TS0001", "TEST, TERRY", "CA0130000", "full", "1970-01-01", TODAY + dt.timedelta(days=365), "active"),
    ("TS0002", "SECOND, SAM", "CA0130000", "full", "1975-05-05", TODAY + dt.timedelta(days=365), "active"),
    ("LT0001", "LESS, LARRY", "CA0130000", "ltfa", None, TODAY + dt.timedelta(days=365), "active"),
    ("EC0001", "GARCIA, ELENA", "CA0130100", "full", None, TODAY + dt.timedelta(days=365), "active"),
    ("EC0002", "NGUYEN, TOM", "CA0130100", "full", None, TODAY + dt.timedelta(days=365), "active"),
    ("EX0001", "EXPIRED, ED", "CA0130000", "full", None, TODAY - dt.timedelta(days=1), "active"),
    ("DS0001", "DISABLED, DAN", "CA0130000", "full", None, TODAY + dt.timedelta(days=365), "disabled"),
    ("PR0001", "PRACTITIONER, PAT", "CA0130000", "practitioner", None, None, "active"),
    ("AD0001", "ADMIN, ALEX", "CA0130000", "admin", None, None, "active"),
    ("IN0001", "INVESTIGATOR, IVY", "CA0130000", "investigator", None, None, "active"),
]


def free_port() -> int:
    """A loopback port for a server the test starts itself (tests/ports.py: below the kernel's
    ephemeral range and given to no other test process meanwhile)."""
    from tests.ports import free_port

    return free_port()


CONFIG = """
[switch]
name = "TEST-MSC"
data_dir = "data"
users_file = "users.toml"
idle_logoff_s = {idle_logoff_s}
session_max_s = {session_max_s}
shed_wait_s = {shed_wait_s}
{switch_extra}
password_cost = {password_cost}

[[listener]]
name = "terminals"
bind = "127.0.0.1:{port}"
max_connections = {max_connections}
heartbeat_s = {heartbeat_s}
read_timeout_s = {read_timeout_s}
rate_limit = {rate_limit}
max_frame = {max_frame}
{listener_extra}

[metrics]
bind = "127.0.0.1:{metrics_port}"

[journal]
dir = "data/journal"
key_file = "data/keys/master.key"
synchronous = "{synchronous}"
checkpoint_every = {checkpoint_every}
checkpoint_interval_s = 60
{journal_extra}

[[upstream]]
name = "clets"
endpoints = [{endpoints}]
timeout_s = {timeout_s}
heartbeat_s = {up_heartbeat_s}
max_in_flight = {max_in_flight}
{upstream_extra}

[[route]]
mke = ["QW", "QV", "EW", "MW", "XW", "CW", "YQ", "YR"]
upstream = "clets"
category = "cjis"
{route_extra}

[[route]]
mke = ["QH", "QR"]
upstream = "clets"
category = "cori"

[[route]]
mke = ["DQ", "RQ", "KQ"]
upstream = "clets"
category = "dmv"

# Message-key edits (CONFIG.md "Edits"): what a message must carry before it leaves. A person
# by name with DOB or with sex and race, or by a numeric identifier; a vehicle by LIC, VIN or
# NIC; criminal history with PUR/ and ATN/ (PPP §1.7.1 A). Field formats (DOB a real CCYYMMDD
# date, SEX, RAC, LIC/LIS, VIN …) apply to every key. These are msc's built-in edits written
# out; a routed key without an [[edit]] gets the same built-in rule.
[edits]
builtin = true
purpose_codes = ["A", "C", "D", "F", "H", "I", "J", "S", "V", "X"]   # FBI III purpose codes

[[edit]]
mke = ["QW"]                           # wanted person
one_of = [["NAM", "DOB"], ["NAM", "SEX", "RAC"], ["FBI"], ["SID"], ["SOC"], ["OLN"], ["MNU"], ["NIC"]]

[[edit]]
mke = ["QV"]                           # vehicle
one_of = [["LIC"], ["VIN"], ["NIC"]]

[[edit]]
mke = ["EW"]                           # enter wanted person
required = ["NAM", "SEX", "RAC", "OCA"]
one_of = [["DOB"], ["SOC"], ["FBI"], ["OLN"], ["MNU"], ["SID"]]

[[edit]]
mke = ["MW", "XW", "CW"]               # modify, cancel, clear: identify the record
one_of = [["NIC"], ["NAM", "OCA"], ["OCA"]]

[[edit]]
mke = ["YQ", "YR"]                     # hit confirmation request / response
one_of = [["NIC"], ["OCA"], ["NAM"], ["LIC"], ["VIN"]]

[[edit]]
mke = ["QH"]                           # III name search
required = ["PUR", "ATN"]
one_of = [["NAM", "DOB"], ["NAM", "SEX", "RAC"], ["FBI"], ["SID"], ["SOC"], ["OLN"], ["MNU"], ["NIC"]]

[[edit]]
mke = ["QR"]                           # III record request
required = ["PUR", "ATN"]
one_of = [["FBI"], ["SID"], ["CII"]]

[[edit]]
mke = ["DQ"]                           # driver licence
one_of = [["OLN"], ["NAM", "DOB"]]

[[edit]]
mke = ["RQ"]                           # registration
one_of = [["LIC"], ["VIN"]]

[[edit]]
mke = ["KQ"]                           # driver and vehicle
one_of = [["OLN"], ["NAM", "DOB"], ["LIC"], ["VIN"]]

[[agency]]
ori = "CA0130000"
name = "Imperial County Sheriff's Office"
duty_station = "ICS1"

[[agency]]
ori = "CA0130100"
name = "El Centro Police Department"
duty_station = "ECP1"

[[station]]
mnemonic = "ICS1"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
addresses = ["127.0.0.1"]
authorizations = ["cjis", "cori", "dmv", "admin", "entry"]
receives_admin = true
staffed_24x7 = true

[[station]]
mnemonic = "ICS2"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
addresses = ["127.0.0.1"]
authorizations = ["cjis", "dmv", "admin"]
receives_admin = true

[[station]]
mnemonic = "ICS9"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
addresses = ["10.9.9.9"]
authorizations = ["cjis"]

[[station]]
mnemonic = "ECC1"
kind = "host"
ori = "CA0130100"
serves = ["CA0130100"]
addresses = ["127.0.0.1"]
mnemonics = ["ECC1", "ECC2", "ECC3"]
authorizations = ["cjis", "dmv", "admin"]

[[station]]
mnemonic = "ECP1"
kind = "printer"
ori = "CA0130100"
addresses = ["127.0.0.1"]
receives_admin = true
staffed_24x7 = true

[[pool]]
name = "ECMDT"
ori = "CA0130100"
serves = ["CA0130100"]
mnemonics = ["ECM1", "ECM2"]
addresses = ["127.0.0.0/8"]
authorizations = ["cjis", "dmv"]
unsolicited_to = "ECP1"

[[group]]
name = "APB"
members = ["ICS1", "ECP1"]
{extra}
"""

DEFAULTS = dict(
    idle_logoff_s=1800, session_max_s=43200, max_connections=1000, heartbeat_s=30, read_timeout_s=10,
    rate_limit=200, max_frame=32768, synchronous="full", checkpoint_every=10000, timeout_s=30,
    up_heartbeat_s=30, max_in_flight=1000, extra="", listener_extra="", upstream_extra="",
    switch_extra="", route_extra="", journal_extra="",
    password_cost=TEST_COST,
    # Overload shedding (PROTOCOL.md §5 "Overload") turns on by how long the journal takes: off
    # here, so that no test's outcome depends on the machine's speed; tests/integration/
    # test_overload.py turns it on where the test itself holds the journal.
    shed_wait_s=0,
)


def write_users(path: Path, users=USERS, cost: int = TEST_COST) -> None:
    entries = []
    for uid, name, ori, role, dob, cert, status in users:
        entries.append(UserEntry(id=uid, name=name, ori=ori, role=role, password=hash_password(PASSWORD, ln=cost),
                                 dob=dt.date.fromisoformat(dob) if dob else None, certified_until=cert,
                                 status=status))
    userfile.write(path, UsersFile(user=tuple(entries)))


def add_totp_user(config_path: Path, uid: str, name: str = "MFA, MIA", ori: str = "CA0130000",
                  role: str = "full") -> bytes:
    """Add a TOTP-enrolled operator to users.toml; return the raw secret (as the phone app has it)."""
    import msgspec

    from msc.mnemonics import totp

    s = load(config_path)
    secret = totp.new_secret()
    from msc.storage.backends import Backends

    ring = Backends(s).keyring()  # the configured storage's (PostgreSQL: the database's)
    try:
        sealed = totp.seal_secret(ring.users_aead(), uid, secret)
    finally:
        ring.close()
    users = userfile.read(s.users_path)
    entry = UserEntry(id=uid, name=name, ori=ori, role=role, password=hash_password(PASSWORD, ln=TEST_COST), totp=sealed,
                      certified_until=TODAY + dt.timedelta(days=365))
    userfile.write(s.users_path, msgspec.structs.replace(users, user=(*users.user, entry)))
    return secret


def readyz(port: int, timeout: float = 5.0) -> tuple[int, dict]:
    """``GET /readyz`` on ``[metrics]``'s port: its status and JSON body; ``(0, {})`` when nothing
    answers there (the node not up yet, or gone)."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, {}


#: The web console behind its own PROXY-protocol listener, for ``make_config(extra=…)``:
#: ``WEB_CONSOLE.format(web_listener=PORT, web_port=PORT)`` (0 for a listener never bound).
WEB_CONSOLE = """
[[listener]]
name = "web"
bind = "127.0.0.1:{web_listener}"
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]

[web]
bind = "127.0.0.1:{web_port}"
tls = {{ cert = "tls/web.crt", key = "tls/web.key" }}
listener = "web"
header = "ICS1"
"""


def make_config(directory: Path, *, upstream_ports=(), port=0, metrics_port=0, **overrides) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    values = {**DEFAULTS, **overrides}
    endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in (upstream_ports or (free_port(),)))
    text = CONFIG.format(port=port, metrics_port=metrics_port, endpoints=endpoints, **values)
    path = directory / "msc.toml"
    path.write_text(text)
    write_users(directory / "users.toml", cost=values["password_cost"])
    s = load(path)
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    if not ring.exists:
        ring.init()
    return path


@dataclass
class Harness:
    """An in-process switch with in-process stubs; everything on loopback."""

    tmp: Path
    stubs: list = field(default_factory=list)
    switch: object = None

    async def start_stub(self, **kw):
        from msc.stubs.server import Stub, StubConfig

        cfg = StubConfig(host="127.0.0.1", port=kw.pop("port", 0), log_path=str(self.tmp / f"stub{len(self.stubs)}.log"),
                         control=("127.0.0.1", 0), **kw)
        stub = Stub(cfg)
        await stub.start()
        self.stubs.append(stub)
        return stub

    async def start_switch(self, upstream_ports=None, totp_users=(), clock=None, **overrides):
        from msc.server.switch import Switch

        ports = upstream_ports if upstream_ports is not None else [s.port for s in self.stubs]
        path = make_config(self.tmp, upstream_ports=ports, **overrides)
        self.totp = {uid: add_totp_user(path, uid) for uid in totp_users}
        self.switch = Switch(load(path), **({"clock": clock} if clock else {}))
        await self.switch.start()
        return self.switch

    @property
    def port(self) -> int:
        return self.switch.listener_ports()["terminals"]

    async def wait_upstream(self, timeout: float = HANG_S) -> None:
        for link in self.switch.router.links.values():
            assert await link.wait_up(timeout), "upstream did not come up"

    async def client(self, *, ack_banner: bool = True, **kw):
        from tests.wire import WireClient

        c = await WireClient.connect(self.port, **kw)
        await c.banner(ack=ack_banner)
        return c

    async def operator(self, header: str = "ICS1", user: str = "TS0001"):
        c = await self.client()
        f = await c.logon(header, user, PASSWORD)
        assert f.type == "A", f
        return c

    async def stop(self) -> None:
        if self.switch is not None:
            await self.switch.stop()
        for s in self.stubs:
            await s.stop()

    def stub_log(self, i: int = 0) -> list[str]:
        p = Path(self.stubs[i].cfg.log_path)
        return p.read_text().splitlines() if p.exists() else []


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        with contextlib.suppress(Exception):
            await h.stop()


def journaled(switch, kind: str) -> float:
    """How many ``kind`` records the switch has committed (its ``msc_journal_records_total``)."""
    return switch.metrics.registry.get_sample_value("msc_journal_records_total", {"kind": kind}) or 0


async def eventually(predicate, timeout: float = HANG_S, interval: float = 0.02):
    """Poll until predicate() is truthy (no bare sleeps in tests). ``timeout`` bounds a hang, not
    a speed (tests/waiting.py): a test that needs the condition soon asserts an outcome instead."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def old_journal(tmp_path_factory):
    """keys/ and journal/ of a switch "TEST-MSC" that ran from 15 January 2022 to 15 February 2025
    (a record at least every 2 hours): January 2022 is purgeable then. Copy it, never modify it."""
    from tests.timeline import build_dir, utc

    return build_dir(tmp_path_factory.mktemp("old-journal"), utc(2022, 1, 15), utc(2025, 2, 15))


@pytest.fixture(scope="session")
def young_journal(tmp_path_factory):
    """Like old_journal, from 5 January to 15 February 2025: January is one month old."""
    from tests.timeline import build_dir, utc

    return build_dir(tmp_path_factory.mktemp("young-journal"), utc(2025, 1, 5), utc(2025, 2, 15))


# --- a real PostgreSQL (tests/pg.py) ----------------------------------------------------------


def _pg_or_skip():
    from tests import pg

    reason = pg.missing_reason()
    if reason:
        pytest.skip(reason)
    return pg


@pytest.fixture(scope="session")
def pg_server():
    """One throw-away PostgreSQL for the whole session (initdb in a temporary directory, loopback,
    run as an unprivileged user under root), shared by every module that asks for it: each test
    that writes takes a database of its own (``pg_server.create_database(name)``, a name no other
    module uses), and no test stops, pauses or reconfigures this server (tests that kill or
    promote one make their own: :func:`tests.pg.primary_with_standby`, :class:`tests.pg.PgCluster`)."""
    pg = _pg_or_skip()
    with pg.PgCluster.create() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def pg_pair():
    """A primary and a synchronous streaming standby, per test module: ``(primary, standby)``.
    Tests that kill or promote one of them use :func:`tests.pg.primary_with_standby` themselves."""
    pg = _pg_or_skip()
    with pg.primary_with_standby() as pair:
        yield pair


def scraped(switch, name: str, **labels: str) -> float:
    """The sum of a metric's samples (``name`` as exposed, e.g. ``msc_lockouts_total``) that
    carry ``labels``, as a scrape of the switch's /metrics reads them."""
    from prometheus_client.parser import text_string_to_metric_families

    body, _ctype = switch.metrics.exposition()
    return sum(s.value for fam in text_string_to_metric_families(body.decode())
               for s in fam.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
