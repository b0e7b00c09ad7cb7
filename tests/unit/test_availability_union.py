"""Downtime is the time no run covers (msc.ops.availability.between; issue 16, PPP §1.7.1): one
node or a pair, runs overlapping (two nodes during a handover), nested, in any order, gaps at
the window's edges, a run still running or draining, scheduled (after a clean stop mark) or not.

Each row: the runs as ``(id, started, heartbeat, stopped)``, the window, the run still going,
and the outages expected as ``(start, end, scheduled)``; up is the rest of the window (from the
first run ever recorded). The hypothesis test (tests/property/test_availability_props.py) checks
the same against a brute-force measure on arbitrary layouts."""

from __future__ import annotations

import pytest

from msc.ops.availability import Run, between, compute, current_run

C, X = "clean", "crash"


def run(i: int, start: float, end: float, how: str = C) -> Run:
    """A run up from ``start`` to ``end``: a clean stop mark there, or (a crash) its last heartbeat."""
    return Run(i, start, end, end if how == C else None)


LAYOUTS = [
    # -- one node
    ("one run, the whole window", [run(1, 0, 100)], 0, 100, None, []),
    ("a crash and a restart", [run(1, 0, 40, X), run(2, 50, 100)], 0, 100, None, [(40, 50, False)]),
    ("a clean stop and a restart", [run(1, 0, 40), run(2, 50, 100)], 0, 100, None, [(40, 50, True)]),
    ("down now after a crash", [run(1, 0, 40, X)], 0, 100, None, [(40, 100, False)]),
    ("down now after a clean stop", [run(1, 0, 40)], 0, 100, None, [(40, 100, True)]),
    ("a run still running", [run(1, 0, 40), Run(2, 50, 70, None)], 0, 100, 2, [(40, 50, True)]),
    ("the same run no longer heartbeating", [run(1, 0, 40), Run(2, 50, 70, None)], 0, 100, None,
     [(40, 50, True), (70, 100, False)]),
    ("the current run draining since its stop mark", [run(1, 0, 40), Run(2, 50, 80, 80)], 0, 100, 2,
     [(40, 50, True), (80, 100, True)]),
    ("a run that crashed as it started", [run(1, 0, 40), run(2, 45, 45, X), run(3, 60, 100)], 0, 100, None,
     [(40, 45, True), (45, 60, False)]),
    ("three outages of both kinds", [run(1, 0, 10, X), run(2, 20, 30), run(3, 35, 60, X), run(4, 61, 100)],
     0, 100, None, [(10, 20, False), (30, 35, True), (60, 61, False)]),
    # -- the window's edges
    ("the window starts inside an outage", [run(1, 0, 40), run(2, 60, 100)], 50, 100, None, [(50, 60, True)]),
    ("the window ends inside an outage", [run(1, 0, 40, X), run(2, 60, 100)], 0, 50, None, [(40, 50, False)]),
    ("the window inside one outage", [run(1, 0, 10, X), run(2, 90, 100)], 40, 60, None, [(40, 60, False)]),
    ("the window inside one run", [run(1, 0, 100)], 40, 60, None, []),
    ("time before the first run is not charged", [run(1, 30, 100)], 0, 100, None, []),
    ("a run after the window counts nothing", [run(1, 200, 300)], 0, 100, None, []),
    ("an outage ending exactly at the window's start", [run(1, 0, 40), run(2, 50, 100)], 50, 100, None, []),
    # -- a pair: overlaps, nesting, handovers
    ("a planned switchover: the drain's mark, then the other node", [run(1, 0, 60), Run(2, 71, 90, None)],
     0, 100, 2, [(60, 71, True)]),
    ("a handover with the runs overlapping", [run(1, 0, 60), run(2, 55, 100)], 0, 100, None, []),
    ("the overlapping run crashed inside the other", [run(1, 0, 60), run(2, 55, 58, X), run(3, 70, 100)],
     0, 100, None, [(60, 70, True)]),
    ("a run nested in another hides no gap and makes none", [run(1, 0, 100), run(2, 20, 30, X)], 0, 100, None, []),
    ("a nested crash, then a gap after the outer run", [run(1, 0, 80), run(2, 20, 30, X), run(3, 90, 100)],
     0, 100, None, [(80, 90, True)]),
    ("a long run outlasting a later short one", [run(1, 0, 50, X), run(2, 10, 20), run(3, 60, 100)],
     0, 100, None, [(50, 60, False)]),
    ("a paused node's old run beside the successor's", [run(1, 0, 40, X), Run(2, 47, 95, None)], 0, 100, 2,
     [(40, 47, False)]),
    ("two runs ending at one instant, one crashed", [run(1, 0, 40), run(2, 10, 40, X), run(3, 50, 100)],
     0, 100, None, [(40, 50, False)]),
    ("two runs ending at one instant, both clean", [run(1, 0, 40), run(2, 10, 40), run(3, 50, 100)],
     0, 100, None, [(40, 50, True)]),
    ("the runs in no order", [run(3, 60, 100), run(1, 0, 40, X), run(2, 30, 50)], 0, 100, None, [(50, 60, True)]),
    ("a crashed run's heartbeat before its start (a clock stepped back)", [run(1, 0, 40), Run(2, 50, 45, None)],
     0, 100, None, [(40, 50, True), (50, 100, False)]),
]


@pytest.mark.parametrize(("runs", "since", "now", "current", "expected"), [row[1:] for row in LAYOUTS],
                         ids=[row[0] for row in LAYOUTS])
def test_downtime_is_the_time_no_run_covers(runs, since, now, current, expected):
    a = between(runs, since, now, current=current)
    assert [(o.start, o.end, o.scheduled) for o in a.outages] == [(float(s), float(e), k) for s, e, k in expected]
    assert a.down_s == pytest.approx(sum(e - s for s, e, _ in expected))
    assert a.up_s + a.down_s == pytest.approx(max(0.0, now - max(since, min(r.started for r in runs))))


def test_the_old_walk_from_run_to_run_counted_a_nested_run_as_an_outage():
    """A run nested in a longer one (a node started beside the active one, and crashed) ended the
    old walk at its heartbeat: 70 s of phantom downtime, though the outer run served throughout."""
    a = compute([run(1, 0, 100), run(2, 20, 30, X)], 100, "30d")
    assert (a.down_s, a.ratio) == (0.0, 1.0)


@pytest.mark.parametrize(("runs", "running", "pair", "now", "current"), [
    ([], True, False, 100, None),
    ([run(1, 0, 40), Run(2, 50, 99, None)], True, False, 100, 2),  # the control socket answered
    ([run(1, 0, 40), Run(2, 50, 99, None)], False, False, 100, None),  # a single node not answering
    ([run(1, 0, 40), Run(2, 50, 99, None)], False, True, 100, 2),  # the other machine's node, heartbeating
    ([run(1, 0, 40), Run(2, 50, 80, None)], False, True, 100, None),  # its heartbeats stopped 20 s ago
    ([run(1, 0, 40), Run(2, 50, 99, 99)], False, True, 100, None),  # stopped (draining, or gone)
    ([Run(2, 50, 99, None), run(1, 0, 40)], False, True, 100, 2),  # the newest by start, in any order
])
def test_which_run_is_still_going(runs, running, pair, now, current):
    assert current_run(runs, now, running=running, pair=pair) == current
