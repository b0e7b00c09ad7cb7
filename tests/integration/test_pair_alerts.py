"""The alert rules of an active/standby pair (config/prometheus/alerts.yml; OPERATIONS.md "Running two
nodes"), newcomer8: a standby exported ``msc_availability_ratio`` 0.0, so the availability alerts
fired — critical — for every standby, for ever; and nothing alerted when no node, or two nodes,
of a pair were active, or when the standby could not reach the lease's database.

The rules against series (tests/promtool/pair_alerts.test.yml, promtool), and the series a real
:class:`msc.ops.metrics.Metrics` exports for each role — what those rules read."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from msc.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_the_pair_alerts_fire_for_the_active_node_s_availability_none_two_active_and_a_cut_off_standby():
    r = subprocess.run(["promtool", "test", "rules", str(ROOT / "tests" / "promtool" / "pair_alerts.test.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def samples(m: Metrics) -> dict[str, float]:
    text = m.exposition()[0].decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_a_standby_exports_its_role_and_no_availability_figure():
    standby = Metrics()
    standby.role("standby")
    standby.pair_node("msc-b", "ICSO-MSC")
    s = samples(standby)
    assert not any(k.startswith("msc_availability_ratio") for k in s), "a standby runs no ledger: no figure"
    assert s['msc_node_role{role="standby"}'] == 1 and s['msc_node_role{role="active"}'] == 0
    assert s['msc_node_info{node="msc-b",switch="ICSO-MSC"}'] == 1
    assert s["msc_node_lease_unreachable"] == 0


#: (the outcomes of successive calls to the lease's database, msc_node_lease_unreachable after them)
CALLS = [
    (["held"], 0), (["error"], 1), (["held", "error"], 1), (["error", "held"], 0), (["error", "held_back"], 0),
    (["error", "error", "granted"], 0), (["renewed", "error"], 1), (["error", "lost"], 0),
]


@pytest.mark.parametrize("outcomes, unreachable", CALLS)
def test_the_lease_database_s_reachability_follows_the_last_call(outcomes, unreachable):
    m = Metrics()
    for outcome in outcomes:
        m.lease_call(outcome)
    s = samples(m)
    assert s["msc_node_lease_unreachable"] == unreachable
    for outcome in set(outcomes):
        assert s[f'msc_node_lease_calls_total{{outcome="{outcome}"}}'] == outcomes.count(outcome)


def test_a_single_node_is_active_and_not_counted_as_a_pair():
    s = samples(Metrics())
    assert s['msc_node_role{role="active"}'] == 1
    assert not any(k.startswith("msc_node_info") for k in s)


def test_every_metric_the_pair_rules_read_is_exported():
    rules = (ROOT / "config" / "prometheus" / "alerts.yml").read_text()
    m = Metrics()
    m.pair_node("msc-a", "ICSO-MSC")
    m.availability.labels("365d").set(0.99)
    exported = {re.split(r"[{ ]", k)[0] for k in samples(m)}
    for name in ("msc_node_role", "msc_node_info", "msc_node_lease_unreachable", "msc_availability_ratio"):
        assert name in rules and name in exported, name
