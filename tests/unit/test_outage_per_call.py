"""One outage, one warning (msc.outage) for two lines that were said per call: the session-state
writer's ``session.state_write_failed`` (every logon and end during a database outage said it
again) and a PostgreSQL call that ended after its caller stopped waiting,
``storage.call_ended_late`` (each timed-out call of an outage said it again). OPERATIONS.md
"One outage, one warning"; the e2e: tests/e2e/test_outage_logs.py."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from msc.ops.metrics import Metrics
from msc.server.services import Registry
from msc.storage.errors import StorageUnavailable
from msc.storage.postgres import Blocking
from tests.waiting import HANG_S

REFUSED = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): ConnectionRefusedError: refused")
STARTING = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): CannotConnectNowError: starting up")
OK = "ok"


async def until(cond, what: str) -> None:
    deadline = time.monotonic() + HANG_S
    while not cond():
        assert time.monotonic() < deadline, f"not within {HANG_S:g} s: {what}"
        await asyncio.sleep(0.01)


class State:
    """The run-time state's ``sessions_changed`` as the registry's writer thread calls it: each
    write meets the next item of ``script`` (an error: the database away), then succeeds."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.calls = 0
        self.rows: dict[int, object] = {}

    def sessions_changed(self, opened=(), ended=()) -> None:
        self.calls += 1
        item = self.script.pop(0) if self.script else OK
        if isinstance(item, BaseException):
            raise item
        for r in opened:
            self.rows[r.seq] = r
        for s in ended:
            self.rows.pop(s, None)


class Delivery:
    def attach(self, endpoint, sink) -> None:
        pass


def registry(state: State) -> Registry:
    return Registry(delivery=Delivery, accounts=None, journal=lambda: None, directory=lambda: None,  # type: ignore[arg-type]
                    router=lambda: None, metrics=Metrics(), state=lambda: state)  # type: ignore[arg-type]


class Session(SimpleNamespace):
    __hash__ = object.__hash__  # a session is itself, as the registry keys it


def logon(reg: Registry, n: int) -> None:
    """A terminal's session ``n`` logged on and its ``LOGON OK`` committed as seq ``n``: one change."""
    sess = Session(mnemonic=f"T{n}", alloc=None, kind="terminal", user="U", taf=None, endpoint=None)
    reg.bound(sess)  # type: ignore[arg-type]
    reg.opened(sess, n)  # type: ignore[arg-type]


def said(logs: list[dict], *events: str) -> list[dict]:
    return [e for e in logs if e["event"] in events]


EVENTS = ("session.state_write_failed", "session.state_write_recovered")


@pytest.mark.parametrize("script", [
    [REFUSED] * 5,
    [REFUSED, STARTING, REFUSED, STARTING],  # a restart: its reason changes, the outage is one
], ids=["one reason", "reasons taking turns"])
async def test_session_writes_failing_through_one_outage_warn_once_and_say_their_recovery(script):
    state = State(script)
    reg = registry(state)
    with capture_logs() as logs:
        for n in range(1, len(script) + 2):  # each failure, then a write that succeeds
            logon(reg, n)
            await until(lambda n=n: state.calls >= n, f"write {n}")
        await until(lambda: said(logs, "session.state_write_recovered"), "the recovery said")
        await reg.flush()
    assert [(e["event"], e["log_level"]) for e in said(logs, *EVENTS)] == [
        ("session.state_write_failed", "warning"), ("session.state_write_recovered", "info")]
    first = str(script[0])
    assert said(logs, "session.state_write_failed")[0]["error"] == first
    assert said(logs, "session.state_write_recovered")[0]["was"] == first
    assert sorted(state.rows) == list(range(1, len(script) + 2))  # what failed went with the next write


async def test_a_second_outage_is_said_again():
    state = State([REFUSED, OK, STARTING, STARTING])
    reg = registry(state)
    with capture_logs() as logs:
        for n in range(1, 6):
            logon(reg, n)
            await until(lambda n=n: state.calls >= n, f"write {n}")
        await until(lambda: len(said(logs, "session.state_write_recovered")) == 2, "both recoveries said")
        await reg.flush()
    assert [e["event"] for e in said(logs, *EVENTS)] == [
        "session.state_write_failed", "session.state_write_recovered"] * 2
    assert [e["error"] for e in said(logs, "session.state_write_failed")] == [str(REFUSED), str(STARTING)]


async def test_the_stop_says_what_stays_unwritten_even_when_the_outage_was_said():
    state = State([REFUSED] * 10)
    reg = registry(state)
    with capture_logs() as logs:
        for n in range(1, 4):
            logon(reg, n)
            await until(lambda n=n: state.calls >= n, f"write {n}")
        await until(lambda: said(logs, "session.state_write_failed"), "the outage said")
        await reg.flush()  # the stop: its last chance fails too
    lines = said(logs, *EVENTS)
    assert [e.get("at") for e in lines] == [None, "stop"]
    stop = lines[1]
    assert stop["log_level"] == "warning" and stop["unwritten"] == 3 and stop["error"] == str(REFUSED)
    assert "at" not in lines[0] and "unwritten" not in lines[0]


async def test_a_stop_that_writes_what_the_outage_left_says_the_recovery():
    state = State([REFUSED])
    reg = registry(state)
    with capture_logs() as logs:
        logon(reg, 1)
        await until(lambda: said(logs, "session.state_write_failed"), "the outage said")
        await reg.flush()
    assert [e["event"] for e in said(logs, *EVENTS)] == [
        "session.state_write_failed", "session.state_write_recovered"]
    assert sorted(state.rows) == [1]


# --- storage.call_ended_late: a call whose caller stopped waiting ends on the loop later ----------

@pytest.fixture
def runner():
    b = Blocking("test-late", timeout=0.05)
    yield b
    b.close()


async def _late(cut: threading.Event) -> None:
    """A statement the database does not answer; cancelled when its caller's bound passes, it
    ends with the error of its cut connection (as asyncpg's does) — which no one retrieves."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cut.set()
        raise ConnectionResetError("connection reset by peer") from None


def late_calls(b: Blocking, n: int) -> None:
    for _ in range(n):
        cut = threading.Event()
        with pytest.raises(TimeoutError):
            b.run(_late(cut))
        assert cut.wait(HANG_S)


def wait_for(cond, what: str) -> None:
    deadline = time.monotonic() + HANG_S
    while not cond():
        assert time.monotonic() < deadline, f"not within {HANG_S:g} s: {what}"
        gc.collect()  # a task's "never retrieved" is said when it is collected (its traceback is a cycle)
        time.sleep(0.01)


async def _answer() -> int:
    return 7


LATE = ("storage.call_ended_late", "storage.calls_answered")


def test_calls_ending_late_in_one_outage_are_said_once_and_counted_at_the_next_answer(runner):
    with capture_logs() as logs:
        late_calls(runner, 4)
        settled = threading.Event()
        runner.loop.call_soon_threadsafe(settled.set)  # the four tasks have ended on the loop
        assert settled.wait(HANG_S)
        wait_for(lambda: said(logs, "storage.call_ended_late"), "the first late end said")
        gc.collect()
        assert runner.run(_answer()) == 7
    lines = said(logs, *LATE)
    assert [(e["event"], e["log_level"]) for e in lines] == [
        ("storage.call_ended_late", "warning"), ("storage.calls_answered", "info")]
    assert lines[0]["error"] == "connection reset by peer"
    assert lines[1]["was"] == "connection reset by peer" and lines[1]["late"] == 4


def ended_late(b: Blocking, *errors: BaseException) -> None:
    """What asyncio's loop hands its exception handler for tasks of calls whose callers left —
    in the loop's thread, as it does (then waits until it has)."""
    handled = threading.Event()
    for exc in errors:
        b.loop.call_soon_threadsafe(b.loop.call_exception_handler,
                                    {"message": "Task exception was never retrieved", "exception": exc})
    b.loop.call_soon_threadsafe(handled.set)
    assert handled.wait(HANG_S)


def test_the_count_is_every_late_end_of_the_outage_and_the_next_outage_is_said_again(runner):
    with capture_logs() as logs:
        ended_late(runner, ConnectionResetError("connection reset by peer"), TimeoutError(),
                   ConnectionRefusedError("refused"))
        assert runner.run(_answer()) == 7
        assert runner.run(_answer()) == 7  # a second answer says nothing more
        ended_late(runner, TimeoutError())
        assert runner.run(_answer()) == 7
    assert [(e["event"], e.get("late"), e.get("was") or e.get("error")) for e in said(logs, *LATE)] == [
        ("storage.call_ended_late", None, "connection reset by peer"),
        ("storage.calls_answered", 3, "connection reset by peer"),
        ("storage.call_ended_late", None, "no answer (TimeoutError)"),
        ("storage.calls_answered", 1, "no answer (TimeoutError)"),
    ]


def test_late_ends_from_many_threads_are_all_counted(runner):
    """Late ends are counted on the loop's thread while callers' threads get answers: none lost."""
    with capture_logs() as logs:
        ended_late(runner, *[ConnectionResetError("connection reset by peer")] * 50)
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(runner.run(_answer()))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG_S)
    assert answers == [7] * 8
    assert [(e["event"], e.get("late")) for e in said(logs, *LATE)] == [
        ("storage.call_ended_late", None), ("storage.calls_answered", 50)]
