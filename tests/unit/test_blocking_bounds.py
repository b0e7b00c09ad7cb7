"""Blocking callers of the PostgreSQL storage are never held for ever (issue 16): each call is
bounded, and abort() gives every waiting caller back at once — a stepped-down node's teardown joins
those callers' threads (msc.storage.postgres.Blocking, msc.server.roles.abandon_storage)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from msc.storage.postgres import DB_ERRORS, Blocking


async def never() -> None:
    await asyncio.Event().wait()  # a database that answers nothing


async def value(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def fails() -> None:
    raise ConnectionResetError("connection reset by peer")


@pytest.fixture
def runner():
    b = Blocking("test-blocking", timeout=0.2)
    yield b
    b.close()


@pytest.mark.parametrize(("coro", "expected"), [
    (lambda: value(7), 7),
    (lambda: never(), TimeoutError),  # the runner's own bound
    (lambda: fails(), ConnectionResetError),  # the database's error, as it is
])
def test_a_call_returns_its_result_or_an_error_within_its_bound(runner, coro, expected):
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            runner.run(coro())
        assert isinstance(info.value, DB_ERRORS)  # every storage caller treats it as "the database failed"
    else:
        assert runner.run(coro()) == expected


def test_a_timed_out_call_is_cancelled_on_the_loop(runner):
    cancelled = threading.Event()

    async def noticed() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        runner.run(noticed(), timeout=0.05)
    assert cancelled.wait(10)


@pytest.mark.parametrize("callers", [1, 3, 8])
def test_abort_gives_every_waiting_caller_back_and_refuses_later_calls(callers):
    b = Blocking("test-abort", timeout=600)  # no bound would end them: only abort()
    outcomes: list[BaseException | None] = []
    on_loop = threading.Semaphore(0)

    async def waiting() -> None:
        on_loop.release()
        await never()

    def caller() -> None:
        try:
            b.run(waiting())
            outcomes.append(None)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcomes.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for _ in range(callers):  # every call is waiting on the loop
        assert on_loop.acquire(timeout=30)
    b.abort("this node stepped down")
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert len(outcomes) == callers
    assert all(isinstance(o, ConnectionAbortedError) and "stepped down" in str(o) for o in outcomes)
    with pytest.raises(ConnectionAbortedError):
        b.run(value(1))
    b.close()


def test_a_timeout_of_the_call_itself_says_its_own_bound_not_the_runners():
    """Probe hB finding 9: a frozen database's connect ran out of its 10 s and the message said
    "no answer from the database within 12 s" (the runner's bound, which had not run out): the
    runner took the call's own TimeoutError for its own (one class since Python 3.11)."""
    import time

    b = Blocking("test-own-timeout", timeout=5)

    async def connect_timed_out() -> None:
        await asyncio.sleep(0.05)
        raise TimeoutError("no answer from the database within 0.05 s while connecting")

    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            b.run(connect_timed_out())
        assert str(info.value) == "no answer from the database within 0.05 s while connecting"
        assert time.monotonic() - t0 < 4
    finally:
        b.close()


def test_a_connect_that_gets_no_answer_says_the_connect_bound(monkeypatch):
    """A server that accepts the TCP connection and answers nothing (SIGSTOPped): the connect's
    bound is what runs out, and what the message says."""
    import socket

    from msc.storage import postgres

    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT_S", 0.3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        b = Blocking("test-connect-bound", timeout=5)
        try:
            pg = postgres.PgSettings(f"postgresql://msc@127.0.0.1:{port}/msc?sslmode=disable", "x")
            with pytest.raises(TimeoutError, match=r"^no answer from the database within 0\.3 s while connecting$"):
                b.run(pg.connect())
        finally:
            b.close()
