"""Where a record made outside the switch goes (:func:`msc.actions.journaling.record`): through the
running daemon whenever one answers on the control socket — its refusal is the command's, never
followed by a direct write — and directly only when none answers and no ``msc serve`` of this
node holds ``data_dir/serve.lock``. Before, the journal was opened directly *first*: on
PostgreSQL, while the daemon's connection (and so its writer lock) was down, the command wrote
beside the running daemon (tests/integration/test_pg_outside_writer.py).

A second open file description in this process stands for a second process (``flock`` locks
belong to the open file)."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest

from msc.actions import journaling
from msc.config.load import load
from msc.instance import NODE_LOCK, NodeInUse, claim_node
from msc.journal.records import Entry, JournalError, Kind
from tests.conftest import make_config

ENTRY = [Entry(kind=Kind.ADMIN, user="AD0001", text="UNLOCK TS0002")]


@pytest.fixture
def settings(tmp_path):
    return load(make_config(tmp_path))


@pytest.fixture
def direct(monkeypatch):
    """Every direct write, noted (and not done)."""
    calls: list = []

    async def fake(settings, entries):
        calls.append(list(entries))
        return [41]

    monkeypatch.setattr(journaling, "_direct", fake)
    return calls


def answering(monkeypatch, reply=None, exc=None):
    asked: list[dict] = []

    def control(settings, request, timeout=10.0):
        asked.append(request)
        if exc is not None:
            raise exc
        return reply

    monkeypatch.setattr(journaling, "control", control)
    return asked


def test_a_daemon_that_answers_gets_the_record(settings, monkeypatch, direct):
    asked = answering(monkeypatch, {"ok": True, "seqs": [7]})
    assert journaling.record(settings, ENTRY) == [7]
    assert [a["op"] for a in asked] == ["record"] and direct == []


def test_a_daemons_refusal_is_the_commands_and_nothing_is_written_directly(settings, monkeypatch, direct):
    answering(monkeypatch, {"ok": False, "error": "journal: journal database: connection refused"})
    with pytest.raises(JournalError, match="journal database: connection refused"):
        journaling.record(settings, ENTRY)
    assert direct == []


def test_a_request_sent_and_not_answered_is_unknown_and_not_written_again(settings, monkeypatch, direct):
    answering(monkeypatch, exc=journaling.DaemonNoAnswer("timed out"))
    with pytest.raises(JournalError, match="may or may not have been journaled"):
        journaling.record(settings, ENTRY)
    assert direct == []


def test_with_no_daemon_the_journal_is_written_directly(settings, monkeypatch, direct):
    answering(monkeypatch, exc=journaling.DaemonUnavailable("no such file"))
    assert journaling.record(settings, ENTRY) == [41]
    assert direct == [ENTRY]


def test_the_control_socket_tells_nobody_there_from_no_answer(settings, tmp_path):
    """Nothing listening: DaemonUnavailable (nothing was asked). A listener that takes the request
    and closes without answering: DaemonNoAnswer (what it did is unknown)."""
    import socket

    with pytest.raises(journaling.DaemonUnavailable) as nobody:
        journaling.control(settings, {"op": "ping"}, timeout=1)
    assert not isinstance(nobody.value, journaling.DaemonNoAnswer)
    path = settings.data_dir / "control.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen()

    def swallow():
        conn, _ = srv.accept()
        conn.recv(1000)
        conn.close()

    t = threading.Thread(target=swallow)
    t.start()
    try:
        with pytest.raises(journaling.DaemonNoAnswer):
            journaling.control(settings, {"op": "record", "entries": []}, timeout=5)
    finally:
        t.join()
        srv.close()


def test_a_daemon_that_holds_the_node_but_does_not_answer_gets_no_second_writer_beside_it(settings):
    """``msc serve`` starting (journal open, socket not yet up) or stopping (socket gone, its last
    records being written): no direct write, whatever the writer lock says."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = claim_node(settings.data_dir)
    try:
        with pytest.raises(journaling.DaemonRunning, match=f"process {os.getpid()}") as refused:
            journaling.record(settings, ENTRY)
        assert isinstance(refused.value, JournalError)
    finally:
        os.close(fd)
    assert not list(settings.journal_dir.glob("*.db")) if settings.journal_dir.exists() else True


def test_a_serve_starting_while_a_command_writes_directly_waits_for_it(settings, monkeypatch):
    """The command holds serve.lock shared while it writes: a ``msc serve`` starting then waits
    for it (it was refused, or refused later by the journal's writer lock), and is still refused
    at once by another ``msc serve``."""
    from msc import instance

    data = settings.data_dir
    os.close(claim_node(data))  # a daemon ran here once (the file exists)
    with instance.no_daemon_here(data):
        t0 = time.monotonic()
        got: list[int] = []
        th = threading.Thread(target=lambda: got.append(claim_node(data)))
        th.start()
        time.sleep(0.3)
        assert not got  # waiting for the command
    th.join(10)
    assert got and time.monotonic() - t0 >= 0.3
    try:
        with pytest.raises(NodeInUse, match="another msc serve of this node is running"):
            claim_node(data)
        with pytest.raises(instance.DaemonHere):
            with instance.no_daemon_here(data):
                pass
    finally:
        os.close(got[0])


def test_a_command_never_creates_serve_lock(settings):
    """Run as root, a created serve.lock would be root's and the service account's msc serve could
    not open it: the command opens it read-only, and no file means no daemon ever ran here."""
    from msc import instance

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with instance.no_daemon_here(settings.data_dir):
        pass
    assert not (settings.data_dir / NODE_LOCK).exists()


def test_a_shared_holder_left_alone_does_not_block_a_serve_for_ever(tmp_path, monkeypatch):
    from msc import instance

    monkeypatch.setattr(instance, "COMMANDS_WAIT_S", 0.2)
    data = tmp_path / "data"
    os.close(claim_node(data))
    fd = os.open(data / NODE_LOCK, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        with pytest.raises(NodeInUse):
            claim_node(data)
    finally:
        os.close(fd)
