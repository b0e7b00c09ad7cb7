"""The availability ledger (OPERATIONS.md "Availability and reports"; PPP §1.7.1).

"MSCs shall be maintained with a 98 percent availability and uptime measured over a continuous
12-month period, including all (scheduled and unscheduled) downtime."

Each run of ``msc serve`` (each active period of a pair's node) writes a start mark, a heartbeat
every few seconds and, when it stops cleanly, a stop mark: in ``data_dir/state.db``, or the
``runs`` table of ``[storage]``'s PostgreSQL database. A run is up from its start to its stop
mark, or to its last heartbeat if it crashed (to now if it is still running). Downtime is every
moment of the window that **no run covers** — the union of the runs' spans, not a walk from
each run to the next, so runs that overlap (two nodes during a handover, a node's run nested in
another's) can neither hide a gap nor be counted twice. An outage that follows a clean stop is
*scheduled* (an administrator stopped the switch); one that follows a crash is *unscheduled*.
Both count against the 98 %. The window starts at the first run ever recorded (a switch
installed last week is not charged for the year before).

A switch whose journal cannot commit passes no transaction (fail closed), so an outage of the
journal splits its run: the run ends where the first failed or stalled commit began and a new run
of the same process starts where a commit succeeded again (``Journal.outages``, written by
``msc.server.background``'s heartbeat) — an unscheduled outage, as a crash would be.

The stop mark is stamped when the run **stops accepting sessions** — at the start of a drain
(SIGTERM), not at its end (decision of issue 16 under PPP §1.7.1; OPERATIONS.md): a draining
switch still serves the sessions attached to it, but refuses every new one (a terminal that
reconnects, a CAD host whose link dropped, a load balancer's health check), and on a pair the
other node cannot serve until the drain ends. The PPP measures the MSC's availability to pass
transactions for its users, not for some of them, so a drain is downtime — scheduled, as it
begins with an administrator's stop.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from msc.config.files import open_sqlite

HEARTBEAT_S = 5.0
WINDOWS = {"30d": 30 * 86400, "365d": 365 * 86400}
TARGET = 0.98

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    stopped REAL,
    pid INTEGER
);
"""


@dataclass(frozen=True)
class Run:
    id: int
    started: float
    heartbeat: float
    stopped: float | None

    @property
    def end(self) -> float:
        return self.stopped if self.stopped is not None else self.heartbeat


@dataclass(frozen=True)
class Outage:
    start: float
    end: float
    scheduled: bool

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Availability:
    window: str
    since: float
    until: float
    up_s: float
    down_s: float
    outages: list[Outage]

    @property
    def ratio(self) -> float:
        total = self.up_s + self.down_s
        return 1.0 if total <= 0 else self.up_s / total


@runtime_checkable
class LedgerBackend(Protocol):
    """The availability ledger as any storage backend keeps it (checked by the contract suite
    ``tests/contract/``). Blocking calls: the daemon makes them from a worker thread."""

    run_id: int | None

    def start(self, now: float) -> int:
        """Record the start of this run (epoch seconds); returns its id."""

    def heartbeat(self, now: float) -> None:
        """This run is still up at ``now`` (nothing once it has a stop mark)."""

    def stop(self, now: float) -> None:
        """This run stopped accepting sessions cleanly at ``now`` (what follows is scheduled
        downtime). The first mark stays: a later call (the end of a drain) changes nothing."""

    def runs(self) -> list[Run]:
        """Every run ever recorded, by start time."""

    def close(self) -> None:
        """Release the connection."""


class Ledger:
    """The SQLite :class:`LedgerBackend` (``data_dir/state.db``)."""

    def __init__(self, path: Path) -> None:
        self._conn = open_sqlite(path, SCHEMA, synchronous="FULL")
        self._lock = threading.Lock()
        self.run_id: int | None = None

    def start(self, now: float) -> int:
        with self._lock:
            cur = self._conn.execute("INSERT INTO runs(started, heartbeat, pid) VALUES (?, ?, ?)", (now, now, os.getpid()))
            self.run_id = cur.lastrowid
        return self.run_id

    def heartbeat(self, now: float) -> None:
        with self._lock:
            self._conn.execute("UPDATE runs SET heartbeat = ? WHERE id = ? AND stopped IS NULL", (now, self.run_id))

    def stop(self, now: float) -> None:
        with self._lock:
            self._conn.execute("UPDATE runs SET heartbeat = ?, stopped = ? WHERE id = ? AND stopped IS NULL",
                               (now, now, self.run_id))

    def runs(self) -> list[Run]:
        with self._lock:
            return [Run(*r) for r in self._conn.execute("SELECT id, started, heartbeat, stopped FROM runs ORDER BY started")]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def compute(runs: list[Run], now: float, window: str, *, current: int | None = None) -> Availability:
    """Availability over the window ending ``now``. ``current`` is the id of a run still going."""
    length = WINDOWS[window]
    if not runs:
        return Availability(window, now - length, now, 0.0, 0.0, [])
    return between(runs, max(now - length, min(r.started for r in runs)), now, current=current, window=window)


def current_run(runs: list[Run], now: float, *, running: bool, pair: bool) -> int | None:
    """The id of the run still going, for a reader outside the switch (``msc report
    availability``, the web console's chart): the newest run when this machine's switch answers
    on its control socket (``running``); on a pair also the newest run when it has no stop mark
    and heartbeated within two beats — the node that serves may be on the other machine, of which
    this one's control socket says nothing (issue 16: else a phantom "UNSCHEDULED" outage from
    its last heartbeat to now came and went with the heartbeat's age)."""
    if not runs:
        return None
    newest = max(runs, key=lambda r: r.started)
    if running or (pair and newest.stopped is None and now - newest.heartbeat < 2 * HEARTBEAT_S):
        return newest.id
    return None


def span_end(run: Run, now: float, current: int | None) -> float:
    """Until when ``run`` was up: its stop mark; else now if it is the run still going
    (``current``); else its last heartbeat (it crashed). Never before its start."""
    if run.stopped is not None:
        end = run.stopped  # a stop mark ends the run even if it is the current one (it is draining)
    elif run.id == current:
        end = now
    else:
        end = run.heartbeat
    return max(end, run.started)


def between(runs: list[Run], since: float, now: float, *, current: int | None = None,
            window: str = "") -> Availability:
    """Availability from ``since`` to ``now`` (epoch seconds; a calendar month for the web
    console's chart): ``down_s`` is the measure of the time in the window covered by no run's
    span (:func:`span_end`), each maximal such interval an :class:`Outage`; ``up_s`` the rest.
    Time before the first run ever recorded is neither. An outage is scheduled when the run
    whose end began it stopped cleanly (when several ended at that instant, only if all did).
    Runs may overlap or nest in any way; their order in ``runs`` does not matter."""
    if not runs:
        return Availability(window, since, now, 0.0, 0.0, [])
    spans = sorted((r.started, span_end(r, now, current), r.stopped is not None) for r in runs)
    since = max(since, spans[0][0])
    if now <= since:
        return Availability(window, since, now, 0.0, 0.0, [])
    outages: list[Outage] = []

    def gap(start: float, end: float, scheduled: bool) -> None:
        s, e = max(start, since), min(end, now)
        if e > s:
            outages.append(Outage(s, e, scheduled))

    covered, clean = spans[0][1], spans[0][2]  # everything from the first start to ``covered`` is up
    for start, end, stopped in spans[1:]:
        if start > covered:
            gap(covered, start, clean)
        if end > covered:
            covered, clean = end, stopped
        elif end == covered:
            clean = clean and stopped  # a crash at the same instant: not scheduled
    gap(covered, now, clean)  # down now, unless a run covers up to now
    down = sum(o.seconds for o in outages)
    return Availability(window, since, now, max(0.0, (now - since) - down), down, outages)


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
