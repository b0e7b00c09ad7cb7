"""``msc report availability`` run on a pair's other machine (issue 16): the active node's run,
still heartbeating, is running — not an outage from its last heartbeat to now, which made a
phantom 1-5 s "UNSCHEDULED" outage come and go with the heartbeat's age. A run whose heartbeats
stopped is down, as before; a single node is judged by its control socket only, as before."""

from __future__ import annotations

import pytest

from msc.config.load import load
from msc.ops import reports
from msc.ops.availability import HEARTBEAT_S, Run
from tests.conftest import make_config

T0 = 1_700_000_000.0


class Ledger:
    def __init__(self, runs):
        self._runs = runs

    def runs(self):
        return self._runs

    def close(self):
        pass


class Sources:
    def __init__(self, runs):
        self._runs = runs

    def ledger(self):
        return Ledger(self._runs)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    single = make_config(tmp_path_factory.mktemp("one"))
    pair = make_config(tmp_path_factory.mktemp("pair"))
    pair.write_text(pair.read_text() + '\n[node]\nname = "msc-a"\nlease_ttl_s = 5\n'
                    'lease_dsn = "postgresql://msc@127.0.0.1:9/msc"\n')
    return {"single": load(single), "pair": load(pair)}


def outages(s, runs, now, running=False):
    return reports.availability(s, now, running=running, sources=Sources(runs))["windows"]["30d"]["outages"]


# (heartbeat age at "now", down on the pair) — a beat is HEARTBEAT_S apart
AGES = [(0.0, False), (0.4, False), (HEARTBEAT_S - 0.1, False), (HEARTBEAT_S + 1, False),
        (2 * HEARTBEAT_S + 0.5, True), (600.0, True)]


@pytest.mark.parametrize(("age", "down"), AGES)
def test_on_a_pair_the_other_machines_running_node_is_up(settings, age, down):
    now = T0 + 1000
    # (every heartbeat at or after its run's start, as the ledger writes them: start() is the first)
    runs = [Run(1, T0, T0 + 300, T0 + 300),              # msc-a, clean stop
            Run(2, T0 + 301, now - age, None)]            # msc-b, active on the other machine
    got = outages(settings["pair"], runs, now)
    assert [o["scheduled"] for o in got] == ([True, False] if down else [True])
    if down:
        assert got[-1]["seconds"] == pytest.approx(age, abs=0.1)


@pytest.mark.parametrize(("age", "_down"), AGES)
def test_a_single_node_is_judged_by_its_control_socket_as_before(settings, age, _down):
    now = T0 + 1000
    runs = [Run(1, T0, now - age, None)]
    assert outages(settings["single"], runs, now, running=True) == []
    assert len(outages(settings["single"], runs, now, running=False)) == (1 if age >= 0.05 else 0)
