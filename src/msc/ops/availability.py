"""The availability ledger (OPERATIONS.md "Availability"; PPP §1.7.1).

"MSCs shall be maintained with a 98 percent availability and uptime measured over a continuous
12-month period, including all (scheduled and unscheduled) downtime."

Each run of ``msc serve`` writes a start mark, a heartbeat every few seconds and, when it stops
cleanly, a stop mark, in ``data_dir/state.db``. Downtime is every gap between the end of one run
(its stop mark, or its last heartbeat if it crashed) and the start of the next. An outage that
follows a clean stop is *scheduled* (an administrator stopped the switch); one that follows a
crash is *unscheduled*. Both count against the 98 %. The window starts at the first run ever
recorded (a switch installed last week is not charged for the year before).
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
        """This run is still up at ``now``."""

    def stop(self, now: float) -> None:
        """This run stopped cleanly at ``now`` (what follows is scheduled downtime)."""

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
            self._conn.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (now, self.run_id))

    def stop(self, now: float) -> None:
        with self._lock:
            self._conn.execute("UPDATE runs SET heartbeat = ?, stopped = ? WHERE id = ?", (now, now, self.run_id))

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
    return between(runs, max(now - length, runs[0].started), now, current=current, window=window)


def between(runs: list[Run], since: float, now: float, *, current: int | None = None,
            window: str = "") -> Availability:
    """Availability from ``since`` to ``now`` (a calendar month for the web console's chart)."""
    if not runs:
        return Availability(window, since, now, 0.0, 0.0, [])
    up = 0.0
    outages: list[Outage] = []
    for i, r in enumerate(runs):
        end = now if r.id == current else min(r.end, now)
        s, e = max(r.started, since), min(end, now)
        if e > s:
            up += e - s
        if i + 1 < len(runs):
            gap_start, gap_end = end, runs[i + 1].started
        elif r.id != current:
            gap_start, gap_end = end, now  # down now
        else:
            continue
        gs, ge = max(gap_start, since), min(gap_end, now)
        if ge > gs:
            outages.append(Outage(gs, ge, r.stopped is not None))
    down = sum(o.seconds for o in outages)
    return Availability(window, since, now, up, down, outages)


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
