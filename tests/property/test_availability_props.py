"""Availability by time (msc.ops.availability.between; issue 16, PPP §1.7.1) on arbitrary run
layouts — one node's runs in sequence, a pair's runs overlapping or nested, crashes, clean
stops, a run still going, windows cutting through any of it: the reported downtime is the
measure of the window covered by no run, found here by brute force (every elementary interval
between two instants the ledger names, down when no run covers its middle); the outages are that
set, in order, disjoint, inside the window; each is scheduled exactly when the runs that ended
last before it all stopped cleanly."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from msc.ops.availability import Run, between

EXAMPLES = int(os.environ.get("MSC_PROP_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("MSC_PROP_RANDOM") is None,
                    database=None)
#: Instants are whole seconds in [0, T]: the brute force's sums are exact, and on so small a grid
#: runs often touch, tie, nest or last no time at all.
T = 60


@st.composite
def layouts(draw):
    n = draw(st.integers(1, 8))
    step = draw(st.sampled_from([1, 10]))  # a coarse grid: runs that end (or start) at one instant
    runs = []
    for i in range(1, n + 1):
        start = step * draw(st.integers(0, T // step))
        end = start + step * draw(st.integers(0, T // 3 // step))
        clean = draw(st.booleans())
        runs.append(Run(i, float(start), float(end), float(end) if clean else None))
    current = draw(st.one_of(st.none(), st.sampled_from([r.id for r in runs])))
    since = draw(st.integers(0, T))
    now = draw(st.integers(0, T + T // 4))
    return draw(st.permutations(runs)), float(since), float(now), current


def up_until(r: Run, now: float, current: int | None) -> float:
    """The model's end of a run: its stop mark, else now for the run still going, else its last heartbeat."""
    if r.stopped is not None:
        return r.stopped
    return now if r.id == current else r.heartbeat


@SETTINGS
@given(layouts())
def test_downtime_is_the_measure_of_the_window_no_run_covers(layout):
    runs, since, now, current = layout
    spans = [(r.started, up_until(r, now, current), r.stopped is not None) for r in runs]
    lo = max(since, min(r.started for r in runs))  # nothing is charged before the first run
    a = between(runs, since, now, current=current)
    points = sorted({lo, now, *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    points = [p for p in points if lo <= p <= now]
    down = [(p, q) for p, q in zip(points, points[1:], strict=False)
            if q > p and not any(s <= (p + q) / 2 <= e for s, e, _ in spans)]
    assert a.down_s == sum(q - p for p, q in down)
    assert a.up_s + a.down_s == max(0.0, now - lo)
    # The outages are exactly those elementary intervals, merged; in order, disjoint, in the window.
    merged: list[list[float]] = []
    for p, q in down:
        if merged and merged[-1][1] == p and not any(e == p == s for s, e, _ in spans):
            merged[-1][1] = q
        else:
            merged.append([p, q])
    assert [(o.start, o.end) for o in a.outages] == [tuple(m) for m in merged]
    for o in a.outages:
        ended = [(e, clean) for s, e, clean in spans if e <= o.start]
        last = max(e for e, _ in ended)
        assert o.scheduled == all(clean for e, clean in ended if e == last)
