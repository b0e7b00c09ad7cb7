"""`make soak` measures availability by time (issue 16 item 6): the time without a successful
probe, not the share of probes answered."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def soak():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("soak_under_test", ROOT / "bench" / "soak.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LAT = 0.005  # a probe's answer time when the switch is up (s)


def schedule(n: int, interval: float = 0.1, *, failed=(), missing=(), late=None):
    """n probes on a fixed schedule: (sent, answered at, answered); ``missing`` were never sent,
    ``late`` maps a probe to the time its answer came (it waited out an outage)."""
    late = late or {}
    return [(i * interval, late.get(i, i * interval + LAT), i not in failed) for i in range(n) if i not in missing]


@pytest.mark.parametrize("failed, expect_spans, expect_s", [
    ((), 0, 0.0),
    (range(50, 60), 1, 1.0),                      # 10 failed probes in a row: 1.0 s without service
    ((50,), 1, 0.1),                              # one failed probe: one interval
    (list(range(10, 15)) + list(range(70, 73)), 2, 0.8),
    (range(0, 5), 1, 0.5),                        # an outage at the start of the run
    (range(95, 100), 1, 0.5),                     # ... and at its end
    (range(100), 1, 10.0),                        # never served
    (range(0, 100, 2), 50, 5.0),                 # every other probe fails: half the time unserved
])
def test_unserved_time_is_the_time_without_a_successful_probe(soak, failed, expect_spans, expect_s):
    t0 = -0.1 + LAT if 0 in failed else 0.0
    t1 = 10.0 + LAT if 99 in failed else 9.9 + LAT
    spans, slip = soak.unserved(schedule(100, failed=set(failed)), 0.1, t0, t1)
    assert len(spans) == expect_spans
    assert sum(b - a for a, b in spans) == pytest.approx(expect_s, abs=1e-9)
    assert slip == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("missing, slip_s", [
    (range(40, 45), 0.5),     # the prober's loop fell behind: nothing sent, nothing failed
    ((7,), 0.1),
    (range(3, 6), 0.3),
])
def test_a_gap_with_no_failed_probe_is_the_probers_slip_not_an_outage(soak, missing, slip_s):
    spans, slip = soak.unserved(schedule(100, missing=set(missing)), 0.1, 0.0, 9.9 + LAT)
    assert spans == []
    assert slip == pytest.approx(slip_s, abs=1e-9)


@pytest.mark.parametrize("restart, answered_at, expect_s", [
    (range(41, 50), 5.0, 0.895),      # 4.1–4.9 s sent into a restart, all answered when it ended
    (range(41, 42), 4.3, 0.195),      # one probe held 0.2 s: the next were answered in order after it
    (range(10, 30), 3.0, 1.995),      # 2 s held: from the last answer (0.905 s) to 3.0 s, less 0.1
])
def test_probes_held_through_a_restart_and_then_answered_do_not_hide_it(soak, restart, answered_at, expect_s):
    """A probe that waited out a kill -9 restart and was answered within its timeout succeeded, but
    nothing was served meanwhile: by answer time the restart shows; by send time it did not."""
    probes = schedule(100, late={i: answered_at for i in restart})
    # the probes after the held ones are answered only after them (one connection, in order)
    probes = [(s, max(d, answered_at) if restart.start * 0.1 < s < answered_at else d, ok) for s, d, ok in probes]
    assert all(ok for _, _, ok in probes)
    spans, slip = soak.unserved(probes, 0.1, 0.0, 9.9 + LAT)
    assert len(spans) == 1 and slip == pytest.approx(0.0, abs=1e-9)
    assert sum(b - a for a, b in spans) == pytest.approx(expect_s, abs=1e-9)


def test_probes_answered_late_do_not_hide_an_outage_as_the_1_second_count_did(soak):
    """The old method: a probe a second, answered / sent. A 0.95 s restart between two whole-second
    probes fails none of them; by time it is 0.9 s without service at a 100 ms resolution."""
    failed = set(range(41, 50))  # 4.1 s .. 4.9 s: every probe in the restart fails
    probes = schedule(100, failed=failed)
    per_second = probes[::10]
    assert all(ok for _, _, ok in per_second)  # 100 % by the old count
    spans, _ = soak.unserved(probes, 0.1, 0.0, 9.9 + LAT)
    assert sum(b - a for a, b in spans) == pytest.approx(0.9, abs=1e-9)


@pytest.mark.parametrize("spans, t, expect", [
    ([(4.0, 4.08), (5.0, 12.5)], 5.05, (5.0, 12.5)),    # a short span just before the kill is not it
    ([(59.9, 60.1), (60.1, 60.5)], 60.05, (60.1, 60.5)),  # the last answer came just after the kill
    ([(10.0, 10.2)], 10.5, None),                         # ended before the fault: not caused by it
    ([(11.0, 13.0)], 10.5, None),                         # began well after it: something else
    ([(10.4, 11.4), (10.45, 10.6)], 10.5, (10.4, 11.4)),
    ([], 3.0, None),
])
def test_the_span_a_fault_caused_is_the_longest_that_covers_it(soak, spans, t, expect):
    assert soak.covering(spans, t, 0.1) == expect
