"""Sessions a run's end left open are ended in the journal by the next start, exactly once
(issue 16, newcomer8 steps 5 and 14; JOURNAL.md "Sessions a node's end left open").

The real Switch in process, over loopback, on SQLite (and the first test on a real PostgreSQL
too: tests/pg.py). A crash is the switch abandoned without a stop — its journal writer killed or
its database connections cut, nothing more written by it, its client connections cut — and a new
Switch started on the same storage, as a restarted process (or the other node) would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.mnemonics.state import StateStore
from tests.conftest import PASSWORD, eventually, make_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster():
    from tests import pg

    reason = pg.missing_reason()
    if reason:
        pytest.skip(reason)
    with pg.PgCluster.create(name="leftopen") as c:
        yield c


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path) -> str:
    """The ``[storage]`` section of the switch's configuration (empty: SQLite)."""
    if request.param == "sqlite":
        return ""
    cluster = request.getfixturevalue("cluster")
    db = "".join(ch for ch in f"left_{tmp_path.name[-16:].lower()}" if ch.isalnum() or ch == "_")
    cluster.create_database(db)
    secret = tmp_path / "pg.password"
    secret.write_text(cluster.password + "\n")
    secret.chmod(0o600)
    return (f'\n[storage]\nbackend = "postgresql"\ndsn = "postgresql://postgres@127.0.0.1:{cluster.port}/{db}"\n'
            'password_file = "pg.password"\n')


async def start_first(harness, storage: str = ""):
    from msc.server.switch import Switch

    stub = await harness.start_stub()
    path = make_config(harness.tmp, upstream_ports=[stub.port])
    path.write_text(path.read_text() + storage)
    harness.switch = Switch(load(path))
    await harness.switch.start()
    return harness.switch


async def crash(sw) -> None:
    """What ``kill -9`` of the process leaves: the journal as committed, the state as written;
    nothing more of this run reaches either (its appends refused, its writer process killed, its
    database connections cut)."""
    sw.journal.refused = "the process was killed"
    sw.abandon_storage("the process was killed")  # PostgreSQL: the writer's and the state's connections cut
    pid = getattr(sw.journal.writer, "pid", None)  # SQLite: the writer process
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for rt in sw.listeners:
        if rt.server is not None:
            rt.server.close()
    for sess in list(sw.sessions):
        sess.abort()
    for task in (sw._sweeper, sw._retention, sw._ledger_task, sw.recovery, sw._watch, sw.journal._task,
                 sw.journal._timer):
        if task is not None:
            task.cancel()
    for link in sw.router.links.values() if sw.router is not None else ():
        await link.stop()
    for server in (sw.ops, sw.control):  # (a start that failed opened neither)
        if server is not None:
            await server.stop()
    await sw.sessions.flush()


async def start_again(harness):
    from msc.server.switch import Switch

    harness.switch = Switch(load(harness.tmp / "msc.toml"))
    await harness.switch.start()
    return harness.switch


def records(harness, **q) -> list:
    sw = harness.switch
    return sw.journal.with_reader(lambda src: list(search(src, sw.journal.keyring, Query(**q))))


async def logged_on(harness, header: str, user: str | None = None):
    """A client logged on at ``header`` (a terminal, the pool) as ``user``, or bound (no user);
    and the mnemonic it holds."""
    c = await harness.client()
    if user is None:
        assert (await c.send(f"{header}.BIND")).type == "A"
        return c, header
    f = await c.logon(header, user, PASSWORD)
    assert f.type == "A", f
    return c, f.text.split(".")[0].split("/")[1] if f.text.startswith("MNE/") else header


# Every kind of session, and how it ended before the crash: open at the crash (its end is the
# next start's to write), or ended by itself (the next start writes nothing for it).
#   (header, user, how it ended, the records the next start writes for it)
SESSIONS = [
    ("ECMDT", "EC0001", "open", ["POOL ECMDT RELEASE {m} RESTART", "LOGOFF RESTART"]),
    ("ICS1", "TS0001", "open", ["LOGOFF RESTART"]),
    ("ECC1", None, "open", ["LOGOFF RESTART"]),  # a bound host
    ("ECP1", None, "open", ["LOGOFF RESTART"]),  # a bound printer
    ("ECMDT", "EC0002", "logoff", []),
    ("ICS2", "TS0002", "disconnect", []),
]


async def test_a_crash_leaves_open_sessions_that_the_next_start_ends_once(harness, storage):
    sw = await start_first(harness, storage)
    held, clients = [], []  # (the clients are kept: one collected would close its connection)
    for header, user, how, _ in SESSIONS:
        c, mne = await logged_on(harness, header, user)
        clients.append(c)
        if how == "logoff":
            assert (await c.send(f"{mne}.LOGOFF")).type == "A"
        elif how == "disconnect":
            c.close()
        held.append(mne)
    still_open = {mne for (_h, _u, how, _t), mne in zip(SESSIONS, held, strict=True) if how == "open"}
    ended = {mne for (_h, _u, how, _t), mne in zip(SESSIONS, held, strict=True) if how != "open"}
    # The switch has seen every end (a client's close reaches it later than the close itself):
    # their records are submitted, and once committed (the flush, then one turn of the loop for
    # the commits' callbacks) the state is told; the crash writes what it was told.
    await eventually(lambda: not ended & set(sw.sessions.holders))
    await sw.journal.flush()
    await asyncio.sleep(0)
    # The state holds each open session until its end is committed (the ones that ended are
    # forgotten once their LOGOFF/DISCONNECT is in the journal).
    await eventually(lambda: sorted(r.mnemonic for r in sw.state.open_sessions()) == sorted(still_open))
    last_of_run = sw.journal.last_seq
    await crash(sw)
    for c in clients:
        c.close()

    sw = await start_again(harness)
    await sw.journal.flush()
    after = [r for r in records(harness) if r.seq > last_of_run]
    (start,) = [r for r in after if r.kind == "ADMIN" and r.text.startswith("START ")]
    assert start.text == f"START TEST-MSC PID/{os.getpid()}"  # a single node's, as before
    ends = [r for r in after if r.kind == "SESSION"]
    assert all(r.seq < start.seq for r in ends), "ended before the START and before any listener"
    want = sorted((text.format(m=mne), mne, user) for (header, user, _h, texts), mne in zip(SESSIONS, held, strict=True)
                  for text in texts)
    assert sorted((r.text, r.mnemonic, r.user) for r in ends) == want
    pool = [r for r in ends if r.user == "EC0001"]
    assert {r.peer for r in pool} == {"ECMDT"} and all(r.taf == "7F000001" for r in ends if r.user)

    # Exactly once: neither a clean restart nor another crash ends them again.
    assert sw.state.open_sessions() == []
    await crash(sw)
    sw = await start_again(harness)
    await sw.stop()
    sw = await start_again(harness)
    await sw.journal.flush()
    assert sorted(r.text for r in records(harness, kind="SESSION") if r.text.endswith("RESTART")) == sorted(
        w for w, _m, _u in want)


async def test_a_start_interrupted_after_its_commit_does_not_end_them_twice(harness, monkeypatch):
    """The state is told the sessions ended only after the START commit: a start that dies in
    between left them marked, and the next one finds that START and ends nothing again; a start
    whose commit never came (marked, no START after the mark) is redone."""
    await harness.start_stub()
    sw = await harness.start_switch()
    clients = [await logged_on(harness, "ECMDT", "EC0001"), await logged_on(harness, "ICS1", "TS0001")]
    await eventually(lambda: len(sw.state.open_sessions()) == 2)
    await crash(sw)
    for c, _m in clients:
        c.close()

    def dies(self, opened=(), ended=()):
        raise OSError("the process died here")

    with monkeypatch.context() as m:
        m.setattr(StateStore, "sessions_changed", dies)
        from msc.server.switch import Switch

        harness.switch = sw = Switch(load(harness.tmp / "msc.toml"))
        with pytest.raises(OSError, match="died here"):
            await sw.start()
    await crash(sw)
    state = StateStore(sw.settings.state_db)
    try:
        marked = state.open_sessions()
        assert len(marked) == 2 and all(r.closing_after is not None for r in marked)
    finally:
        state.close()
    sw = await start_again(harness)
    await sw.journal.flush()
    texts = sorted(r.text for r in records(harness, kind="SESSION") if r.text.endswith("RESTART"))
    assert len(texts) == 3, texts  # once: the pool's RELEASE and LOGOFF, the terminal's LOGOFF
    assert sw.state.open_sessions() == []
    starts = [r.text for r in records(harness, kind="ADMIN") if r.text.startswith("START ")]
    assert len(starts) == 3


async def test_a_start_whose_commit_never_came_ends_them_itself(harness):
    await harness.start_stub()
    sw = await harness.start_switch()
    client, mne = await logged_on(harness, "ECMDT", "EC0001")
    await eventually(lambda: len(sw.state.open_sessions()) == 1)
    await crash(sw)
    client.close()
    # What a start that died before its commit leaves: the sessions marked, no START after the mark.
    state = StateStore(sw.settings.state_db)
    try:
        state.sessions_closing([r.seq for r in state.open_sessions()], sw.journal.last_seq)
    finally:
        state.close()
    sw = await start_again(harness)
    await sw.journal.flush()
    ends = [(r.text, r.user) for r in records(harness, kind="SESSION") if r.text.endswith("RESTART")]
    assert ends == [(f"POOL ECMDT RELEASE {mne} RESTART", "EC0001"), ("LOGOFF RESTART", "EC0001")]


async def test_a_clean_stop_journals_its_sessions_ends_itself_and_leaves_none_open(harness):
    await harness.start_stub()
    sw = await harness.start_switch()
    clients = [await logged_on(harness, "ECMDT", "EC0001"), await logged_on(harness, "ICS1", "TS0001")]
    mne = clients[0][1]
    await eventually(lambda: len(sw.state.open_sessions()) == 2)
    await sw.stop()
    sw = await start_again(harness)
    await sw.journal.flush()
    session = records(harness, kind="SESSION")
    assert [r.text for r in session if r.text.endswith(("RESTART", "FAILOVER"))] == []
    assert any(r.text.startswith(f"POOL ECMDT RELEASE {mne} ") and r.user == "EC0001" for r in session)
    assert sw.state.open_sessions() == []
