"""One outage, one warning (msc.outage): what a look repeated every few seconds, or a /metrics
scrape, says while its storage is away (newcomer9 F3: the logon counts' error with a traceback
at every scrape; the user directory's look every 2 s). Against a real PostgreSQL:
tests/integration/test_pg_storage_outage.py and tests/e2e/test_outage_logs.py."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from msc.ops.metrics import Metrics
from msc.outage import Outage
from msc.storage.errors import StorageUnavailable

REFUSED = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): ConnectionRefusedError: refused")
STARTING = StorageUnavailable("run-time state on PostgreSQL (127.0.0.1:5432/msc): CannotConnectNowError: starting up")
ABORTED = ConnectionAbortedError("this node stepped down (the lease was not renewed in time)")
OK = "ok"

#: (name, what successive calls meet, how many outages they make)
SCRIPTS = [
    ("all well", [OK] * 5, 0),
    ("one reason, many ticks", [REFUSED] * 6, 1),
    ("a restart: refused, then starting up", [REFUSED, REFUSED, STARTING, STARTING], 1),
    ("two reasons taking turns", [REFUSED, STARTING] * 4, 1),
    ("an outage, then well", [REFUSED] * 3 + [OK] * 3, 1),
    ("two outages with an answer between", [REFUSED, REFUSED, OK, STARTING, REFUSED, OK], 2),
    ("three short outages", [REFUSED, OK, ABORTED, OK, REFUSED], 3),
]


@pytest.mark.parametrize(("name", "script", "outages"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_each_outage_is_said_once_and_its_end_once(name, script, outages):
    o = Outage("users.not_synced", "users.synced", field="reason", node="node-a")
    with capture_logs() as logs:
        for item in script:
            if item is OK:
                o.ok()
            else:
                o.failed(str(item))
    began = [e for e in logs if e["event"] == "users.not_synced"]
    ended = [e for e in logs if e["event"] == "users.synced"]
    assert len(began) == outages
    assert len(ended) == outages - (1 if o.down else 0)
    assert all(e["log_level"] == "warning" and e["node"] == "node-a" and "exc_info" not in e for e in began)
    assert all(e["log_level"] == "info" and e["was"] for e in ended)
    # each warning names the reason of the failure that began its outage
    starts = [str(item) for prev, item in zip([OK, *script], script, strict=False) if item is not OK and prev is OK]
    assert [e["reason"] for e in began] == starts
    assert o.down == (script[-1] is not OK)


def test_a_fault_of_msc_is_an_error_with_its_traceback_still_once():
    o = Outage("metrics.logon_counts_unreadable", "metrics.logon_counts_readable")
    with capture_logs() as logs:
        for _ in range(3):
            try:
                {}["x"]
            except KeyError as exc:
                o.failed(exc, unexpected=True)
        o.ok()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("metrics.logon_counts_unreadable", "error"), ("metrics.logon_counts_readable", "info")]
    assert isinstance(logs[0]["exc_info"], KeyError) and logs[0]["error"] == "KeyError: 'x'"


def test_the_failure_that_begins_an_outage_is_said_with_its_own_context():
    """Per-event callers (a session's refused LOGON: its message key and peer) name the one call
    said; the later calls of the outage are not said, whatever their context."""
    o = Outage("session.storage_unavailable", "session.storage_available", logger=None)
    with capture_logs() as logs:
        o.failed(str(REFUSED), mke="LOGON", peer="10.0.0.7")
        o.failed(str(STARTING), mke="PWD", peer="10.0.0.8")
        o.ok()
    assert [(e["event"], e.get("mke"), e.get("peer"), e.get("error") or e.get("was")) for e in logs] == [
        ("session.storage_unavailable", "LOGON", "10.0.0.7", str(REFUSED)),
        ("session.storage_available", None, None, str(REFUSED))]


class Counts:
    """The run-time state's ``auth_counts`` as a scrape reads it: each read meets the next item."""

    def __init__(self, script: list) -> None:
        self.script = list(script)

    def __call__(self) -> dict[tuple[str, str], int]:
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return {("terminal", "failure"): 4}


def scraped(m: Metrics) -> list[str]:
    body, _ = m.exposition()
    return [line for line in body.decode().splitlines() if line.startswith("msc_logon_failures_total{")]


def test_a_scrape_during_an_outage_answers_without_the_logon_counts_and_says_so_once_per_outage():
    m = Metrics()
    m.count_logons(Counts([OK, REFUSED, REFUSED, REFUSED, OK, ABORTED, ABORTED, OK]))
    with capture_logs() as logs:
        seen = [bool(scraped(m)) for _ in range(8)]
    assert seen == [True, False, False, False, True, False, False, True]  # absent, never 0
    said = [(e["event"], e["log_level"]) for e in logs]
    assert said == [("metrics.logon_counts_unreadable", "warning"), ("metrics.logon_counts_readable", "info"),
                    ("metrics.logon_counts_unreadable", "warning"), ("metrics.logon_counts_readable", "info")]
    assert "ConnectionRefusedError" in logs[0]["error"] and "exc_info" not in logs[0]
    assert 'msc_logon_failures_total{path="terminal"} 4.0' in scraped_once(m)


def scraped_once(m: Metrics) -> list[str]:
    m._logon_counts = lambda: {("terminal", "failure"): 4}
    return scraped(m)


def test_after_a_step_down_the_logon_counts_are_left_out_without_a_word():
    m = Metrics()
    reads = Counts([OK])
    m.count_logons(reads)
    assert scraped(m)
    m.stop_counting_logons()  # Switch.abandon_storage: its run-time state was given back
    with capture_logs() as logs:
        assert scraped(m) == [] and scraped(m) == []
    assert logs == [] and reads.script == []  # not even asked


def test_a_read_in_flight_when_the_node_steps_down_says_nothing():
    """A scrape's read that began before the step-down and fails because of it (the run-time state
    given back: ConnectionAbortedError) is no outage: nothing is said (CI: a scrape in the
    step-down's window logged metrics.logon_counts_unreadable)."""
    m = Metrics()

    def read():
        m.stop_counting_logons()  # the step-down, while this read waits on the database
        raise ConnectionAbortedError("this node stepped down (the lease was not renewed in time)")

    m.count_logons(read)
    with capture_logs() as logs:
        assert scraped(m) == []
    assert logs == []


def test_a_line_that_was_an_error_stays_one_once_per_outage():
    """``level``: a caller whose line was at error (``web.logon_not_journaled``: a logon refused,
    fail closed) keeps that level, said once per outage like every other."""
    o = Outage("web.logon_not_journaled", "web.logon_journaled", level="error", counted="refused")
    with capture_logs() as logs:
        for _ in range(3):
            o.failed(str(REFUSED))
        o.ok()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("web.logon_not_journaled", "error"), ("web.logon_journaled", "info")]
    assert "exc_info" not in logs[0] and logs[1]["refused"] == 3


#: (name, what successive calls meet: ("r"|"w", OK or a failure), (outages begun, ended))
RW_SCRIPTS = [
    ("a write refused, reads work, a write works: one outage", [("w", REFUSED), ("r", OK), ("r", OK), ("w", REFUSED),
                                                               ("w", OK)], (1, 1)),
    ("a write refused, only reads after: still down", [("w", REFUSED), ("r", OK), ("r", OK)], (1, 0)),
    ("a read refused, a read works: ended", [("r", REFUSED), ("r", OK), ("w", OK)], (1, 1)),
    ("a read refused, a write works: ended", [("r", REFUSED), ("w", OK)], (1, 1)),
    ("a read began it, a write refused later, a read works: ended", [("r", REFUSED), ("w", REFUSED), ("r", OK)], (1, 1)),
    ("two write outages with a write between", [("w", REFUSED), ("r", OK), ("w", OK), ("w", STARTING), ("r", OK)],
     (2, 1)),
]


@pytest.mark.parametrize(("name", "script", "counts"), RW_SCRIPTS, ids=[s[0] for s in RW_SCRIPTS])
def test_an_outage_a_write_began_is_ended_by_a_write_not_by_a_read(name, script, counts):
    """On SQLite a ``state.db`` another process holds lets reads through (WAL) while writes wait
    out the busy timeout and fail: a read that worked ended the outage and the next refused write
    said it again — two warning/recovery pairs for one 40-s lock in the web console. The outage
    a write began is over when a write works; one a read began, when anything works."""
    o = Outage("web.storage_unavailable", "web.storage_available", counted="refused")
    with capture_logs() as logs:
        for kind, item in script:
            if item is OK:
                o.ok(write=kind == "w")
            else:
                o.failed(str(item), write=kind == "w")
    said = [e["event"] for e in logs]
    assert (said.count("web.storage_unavailable"), said.count("web.storage_available")) == counts
    if counts[1]:
        ended = next(e for e in logs if e["event"] == "web.storage_available")
        first_ok_that_ends = script.index(next(x for x in script if x[1] is OK and (x[0] == "w" or script[0][0] == "r")))
        assert ended["refused"] == sum(1 for _k, x in script[:first_ok_that_ends] if x is not OK)
