"""bench/ha_soak.py's per-fault outage (issue 16 item 6): when service was back for good after a
fault and how much time without a successful probe the fault caused — including an outage that
begins after the fault (a PostgreSQL primary killed: msc steps down only once its lease lapses)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from ha_soak import BLIP_S, STABLE_S, outage  # noqa: E402

IV = 0.1

# (spans, fault time, expected back, expected unserved seconds)
CASES = [
    ([], 10.0, 10.0, 0.0),  # no span at all: service never left
    ([(10.0, 12.5)], 10.0, 12.5, 2.5),  # the node killed: the outage starts at the fault
    ([(9.95, 12.5)], 10.0, 12.5, 2.55),  # the last answer came just before the fault
    ([(11.6, 25.0)], 10.0, 25.0, 13.4),  # the database killed: msc stops serving 1.6 s later
    ([(11.6, 12.0), (12.5, 25.0)], 10.0, 25.0, 12.9),  # the outage in two pieces: both counted
    ([(10.0, 12.0), (12.0 + STABLE_S + 1, 12.0 + STABLE_S + 1 + BLIP_S)], 10.0, 12.0, 2.0),  # a later outage is not the fault's
    ([(2.0, 3.0), (10.0, 11.0)], 10.0, 11.0, 1.0),  # an earlier span is not the fault's
    ([(8.0, 10.5)], 10.0, 10.5, 2.5),  # a span in progress at the fault: counted whole
    ([(10.05, 10.35)], 10.0, 10.35, 0.3),  # a short outage (a clean handover) is still the fault's
    # service back after a 15.7 s outage, then slow answers on a loaded machine: back at the outage's
    # end, the blips before it counted, those after it not (seen in the first run on PostgreSQL)
    ([(10.0, 25.7), (26.5, 26.6), (27.0, 27.15), (30.0, 30.08)], 10.0, 25.7, 15.7),
    ([(10.0, 12.0), (12.2, 12.3), (14.0, 14.1)], 10.0, 12.3, 2.1),  # a blip right after the end: not back yet
]


@pytest.mark.parametrize(("spans", "t", "back", "spent"), CASES)
def test_outage_by_table(spans, t, back, spent):
    got_back, got_spent = outage(spans, t, IV)
    assert got_back == pytest.approx(back)
    assert got_spent == pytest.approx(spent)
