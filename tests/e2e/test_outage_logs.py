"""What a pair's logs say while its PostgreSQL is stopped, as OPERATIONS.md "When the database is
away" lists it — with ``/metrics`` scraped all along, as Prometheus does (newcomer9 F3, F4).

The database is stopped under a pair (``pg_ctl stop -m fast``): the active node A steps down and
exits 75; the standby B waits the outage out; the database started again, B takes over. Every
``/metrics`` scrape of either node is answered meanwhile. Neither log has a traceback or an
asyncio "Task exception was never retrieved" (F4: the lease's name announcement left behind at
the step-down), and no warning or error is said twice for the one outage (F3:
``metrics.logon_counts_unreadable`` was an error with a traceback at every scrape; the user
directory's look every 2 s, the queues' snapshot every 0.5 s likewise).

Two terminals stay logged on to A across the outage, and two more try to log on to A while the
database is away: each new connection and each refused logon tries to journal its record, and
each logon needs the run-time state — ``journal.commit_failed`` and ``session.storage_unavailable``
are said once for the outage, not per event, and the two sessions A's step-down cannot close in
the journal are one ``session.end_not_journaled`` (newcomer trial F2, F3: a line per refused
commit and per open session).
"""

from __future__ import annotations

import asyncio
import collections
import json
import urllib.error
import urllib.request

import pytest

from tests import pg as pgmod
from tests.conftest import PASSWORD
from tests.e2e.test_ha_nodes import Pair, lease_calls, log_events, wait_until
from tests.e2e.test_terminal_failover import QUERY, scripted
from tests.waiting import HANG_S
from tests.wire import WireClient

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(pgmod.missing_reason() is not None, reason=pgmod.missing_reason() or "")]

#: The events a node of a pair may log at warning or above for one outage of its database and the
#: step-down it causes (OPERATIONS.md "When the database is away" and "What an operator sees
#: during a failover"), each once — per process: A's one process, which steps down and exits 75 and
#: is not restarted here (a restarted A is a new process that says its outage lines again, and the
#: one that exited never says the "works again" lines: OPERATIONS.md "One outage, one warning"),
#: and B's one process. (``node.active``: B's takeover once it is back — a failover, A's lease ran
#: out: a warning; an ordinary start says it at info; ``journal.checkpoint_failed``: A's, when a
#: checkpoint falls due before it steps down.)
#: ``session.state_write_failed`` may be said once more by a stop (``at="stop"``: what stays
#: unwritten, its last chance) — a line of its own for :func:`said_twice`. (``journal.commit_failed``,
#: ``session.storage_unavailable``: A's, for the connections and logons tried during the outage;
#: ``session.end_not_journaled``: A's step-down, for the sessions still open.)
ONCE = {"lease.unavailable", "lease.lost", "node.stepped_down", "node.exit", "users.not_synced",
        "metrics.logon_counts_unreadable", "delivery.flush_failed", "delivery.read_failed", "journal.commit_failed",
        "session.storage_unavailable", "session.end_not_journaled", "node.active", "keyring.not_checked",
        "session.state_write_failed", "storage.call_ended_late", "journal.checkpoint_failed"}


COUNTED = 'msc_logon_failures_total{path="terminal"}'


def scrape(port: int) -> tuple[int, str]:
    """One ``GET /metrics`` as Prometheus does it: (status, body); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=HANG_S) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


async def logged_on(port: int, *stations: tuple[str, str]) -> list[WireClient]:
    """A terminal logged on at each (station, user), held open."""
    held = []
    for header, user in stations:
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon(header, user, PASSWORD)).type == "A"
        held.append(c)
    return held


async def gone(held: list[WireClient]) -> None:
    for c in held:
        await c.wait_closed()
        c.close()


async def refused_logons(port: int, n: int) -> list[str]:
    """``n`` terminals connecting and logging on, one after the other: how each LOGON was answered."""
    codes = []
    for _ in range(n):
        c = await WireClient.connect(port)
        try:
            await c.banner()
            f = await c.logon("ICS1", "TS0001", PASSWORD)  # (ICS1's session stays: a refused logon replaces none)
            codes.append(f.code if f.type == "N" else f.type)
        finally:
            c.close()
    return codes


def loud(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("level") in ("warning", "error", "critical")]


def said_twice(events: list[dict]) -> dict[str, int]:
    counts = collections.Counter(e["event"] + (" at stop" if e.get("at") == "stop" else "") for e in loud(events))
    return {name: n for name, n in counts.items() if n > 1}


def test_a_stopped_database_under_a_scraped_pair_is_logged_once_without_tracebacks(tmp_path, procs):
    with pgmod.PgCluster.create(name="away") as cluster:
        pair = Pair(tmp_path, cluster, procs)
        a = pair.start("A", "ready")
        wait_until(lambda: pair.active("A"), "A active")
        b = pair.start("B", "standby")
        wait_until(lambda: pair.readyz("B")[1].get("node", {}).get("holder") == "node-a", "B sees A hold the lease")
        r = scripted(pair.addr("A", "B"), QUERY, expect=1, timeout=HANG_S)  # records A has yet to sign
        assert r.returncode == 0, r.stderr
        status, body = scrape(pair.metrics["A"])
        assert status == 200 and COUNTED in body
        before = {n: len(log_events(p)) for n, p in (("A", a), ("B", b))}
        loop = asyncio.new_event_loop()
        held = loop.run_until_complete(logged_on(pair.ports["A"], ("ICS1", "TS0001"), ("ICS2", "TS0002")))

        cluster.stop("fast")
        # Two logons while A still serves (its lease lasts TTL s more): each connection's record and
        # each refusal's is refused by the journal, each logon by the run-time state.
        assert loop.run_until_complete(refused_logons(pair.ports["A"], 2)) == ["E503", "E503"]
        # A: scraped until it has stepped down and left (its lease runs out within lease_ttl_s).
        answered = without = 0
        while a.p.poll() is None:
            status, body = scrape(pair.metrics["A"])
            if status:  # (0: it has closed its endpoint, leaving)
                assert status == 200, status  # every scrape answers …
                answered += 1
                without += COUNTED not in body  # … without the counts it cannot read (never 0)
        assert a.p.wait(HANG_S) == 75
        loop.run_until_complete(gone(held))  # A closed them as it left
        loop.close()
        assert answered >= 1 and without >= 1, (answered, without)
        # B stands by through the outage: several of its lease polls fail, and its look at the user
        # directory every 2 s with them; scraped at each.
        failed = lease_calls(pair, "B", "error")

        def scraped_b() -> bool:
            assert scrape(pair.metrics["B"])[0] == 200
            return lease_calls(pair, "B", "error") >= failed + 8

        wait_until(scraped_b, "eight of B's lease polls fail, B scraped at each", 120, b)

        cluster.start()
        wait_until(lambda: pair.active("B"), "B takes over once the database is back", 60, b)
        for _ in range(3):
            status, body = scrape(pair.metrics["B"])
            assert status == 200 and COUNTED in body
        assert pair.proc["B"].stop() == 0  # (while its database is there: a clean stop)

        logs = {"A": a.log.read_text(), "B": b.log.read_text()}
        events = {n: log_events(p)[before[n]:] for n, p in (("A", a), ("B", b))}
        for n in "AB":
            assert "Traceback" not in logs[n], (n, logs[n][-6000:])
            assert "never retrieved" not in logs[n], (n, logs[n][-6000:])
            assert said_twice(events[n]) == {}, (n, said_twice(events[n]))
            unknown = {e["event"] for e in loud(events[n])} - ONCE
            assert unknown == set(), (n, unknown, json.dumps(loud(events[n]))[-3000:])
        for e in loud(events["A"]) + loud(events["B"]):
            if e["event"] in ("metrics.logon_counts_unreadable", "users.not_synced"):
                assert e["level"] == "warning" and (e.get("reason") or e.get("error")), e
        assert "lease.unavailable" in {e["event"] for e in events["B"]}
        # node.active (newcomer trial F8): B took A's lease that ran out — a failover, a warning;
        # A's own first start took a free lease — info, no warning alert in normal operation.
        active_b = [e for e in events["B"] if e["event"] == "node.active"]
        assert [(e["level"], e["taken"], e["previous"]) for e in active_b] == [("warning", "failover", "node-a")]
        assert [(e["level"], e["taken"]) for e in log_events(a) if e["event"] == "node.active"] == [("info", "free")]
        said_a = {e["event"]: e for e in loud(events["A"])}
        assert {"journal.commit_failed", "session.storage_unavailable"} <= set(said_a), sorted(said_a)
        assert said_a["journal.commit_failed"]["level"] == "warning"
        ends = said_a["session.end_not_journaled"]  # the two terminals held across the step-down
        assert (ends["count"], len(ends["seqs"])) == (2, 2), ends
