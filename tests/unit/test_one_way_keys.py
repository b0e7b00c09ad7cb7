"""Which routed keys await no answer (PROTOCOL.md §4 "Keys that await no answer"): the built-in
default (``grammar.ONE_WAY_KEYS``), a route's ``one_way``, the config check of it, and the life of
such a request in the request table (acknowledged → finished, never E303)."""

from __future__ import annotations

import pytest

from msc.config.load import ConfigError, load
from msc.mnemonics.directory import Directory
from msc.routing.requests import Pending, RequestTable
from tests.conftest import make_config

ROUTE = '[[route]]\nmke = {mke}\nupstream = "clets"\ncategory = "dmv"\n{more}\n'


@pytest.mark.parametrize(("mke", "more", "one_way", "awaiting"), [
    ('["YQ", "YR"]', "", {"YR"}, {"YQ"}),                        # the demo's route: the issue's fault
    ('["DR", "RR", "KR", "GQ"]', "", {"DR", "RR", "KR"}, {"GQ"}),
    ('["IQ", "IR", "FQ", "FR", "CR"]', "", {"IR", "FR", "CR"}, {"IQ", "FQ"}),
    ('["BQ", "BR", "AQ", "AR"]', "", {"BR", "AR"}, {"BQ", "AQ"}),
    ('["SB", "YR"]', "one_way = []", set(), {"SB", "YR"}),           # a route may make every key wait
    ('["SB", "ZZ"]', 'one_way = ["ZZ"]', {"ZZ"}, {"SB"}),           # … or declare a state key one-way
])
def test_one_way_default_and_route_setting(tmp_path, mke, more, one_way, awaiting):
    # YQ/YR are routed by the test config already: this route takes them over.
    text = make_config(tmp_path).read_text()
    for k in ("YQ", "YR"):
        if f'"{k}"' in mke:
            text = text.replace(f'"{k}", ', "").replace(f', "{k}"', "")
    path = tmp_path / "msc.toml"
    path.write_text(text + "\n" + ROUTE.format(mke=mke, more=more))
    d = Directory(load(path))
    assert {k for k in one_way | awaiting if d.routes[k].one_way} == one_way
    assert {k for k in one_way | awaiting if not d.routes[k].one_way} == awaiting


def test_config_check_refuses_a_one_way_key_the_route_does_not_route(tmp_path):
    path = make_config(tmp_path)
    path.write_text(path.read_text().replace('category = "cori"', 'category = "cori"\none_way = ["YR"]', 1))
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert any(i.path == "route[1].one_way[0]" and "not one of this route's keys" in i.message
               for i in exc.value.issues)


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("timeout_s", [1.0, 30.0, 600.0])
def test_an_acknowledged_one_way_request_is_finished_and_never_timed_out(timeout_s):
    clock = Clock()
    table = RequestTable(clock=clock)
    yr = Pending(txn="t1", header="ICS2YR1", mnemonic="ICS2", endpoint="ICS2", user="TS0001", taf=None, ori=None,
                 mke="YR", category="cjis", upstream="clets", expects_answer=False, timeout_s=timeout_s)
    table.opened(yr, 30)
    yr.acked(None, None)
    assert table.outstanding() == []  # nothing for a drain to wait for
    assert table.match("ICS2YR1").pending is None  # a message with its header answers nothing
    clock.t += timeout_s + 1
    timed_out, _ended = table.expire()
    assert timed_out == [] and yr.state == "finished"
