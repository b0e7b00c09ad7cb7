"""A route's ``answer_parts`` (CONFIG.md "Routes: timeouts and answer windows", PROTOCOL.md §4
"Stopping with an answer open"): how many parts a complete answer has, per key of the route —
what the directory gives each key, and what ``msc config check`` refuses."""

from __future__ import annotations

import pytest

from msc.config.load import ConfigError, load
from msc.mnemonics.directory import Directory
from tests.conftest import make_config

KEYS = ("QW", "QV", "EW", "MW", "XW", "CW", "YQ", "YR")  # the test config's first route


@pytest.mark.parametrize(("extra", "want"), [
    ("answer_window_s = 120", {}),                                          # not declared: none known
    ("answer_window_s = 120\nanswer_parts = 2", {k: 2 for k in KEYS if k != "YR"}),  # every key awaiting one
    ("answer_window_s = 120\nanswer_parts = { QW = 2, QV = 1 }", {"QW": 2, "QV": 1}),  # by key; the rest unknown
    ("answer_window_s = 120\nanswer_parts = { QW = 3 }", {"QW": 3}),
    ("answer_window_s = 120\none_way = []\nanswer_parts = 1", dict.fromkeys(KEYS, 1)),  # YR awaits one too
])
def test_each_key_gets_its_count(tmp_path, extra, want):
    d = Directory(load(make_config(tmp_path, route_extra=extra)))
    assert {k: d.routes[k].answer_parts for k in KEYS if d.routes[k].answer_parts is not None} == want
    assert all(d.routes[k].answer_parts is None for k in ("QH", "QR", "DQ"))  # other routes: not declared


@pytest.mark.parametrize(("extra", "path", "fragment"), [
    ("answer_parts = 2", "route[0].answer_parts", "needs answer_window_s"),
    ("answer_window_s = 120\nanswer_parts = 0", "route[0].answer_parts", "whole number >= 1"),
    ("answer_window_s = 120\nanswer_parts = -2", "route[0].answer_parts", "whole number >= 1"),
    ("answer_window_s = 120\nanswer_parts = { QW = 0 }", "route[0].answer_parts.QW", "whole number >= 1"),
    ("answer_window_s = 120\nanswer_parts = { QH = 1 }", "route[0].answer_parts.QH", "not one of this route's keys"),
    ("answer_window_s = 120\nanswer_parts = { ZZ = 1 }", "route[0].answer_parts.ZZ", "not one of this route's keys"),
    ("answer_window_s = 120\nanswer_parts = { YR = 1 }", "route[0].answer_parts.YR", "one-way"),
    ("answer_window_s = 120\nanswer_parts = true", "route[0].answer_parts", "Expected"),
    ("answer_window_s = 120\nanswer_parts = 1.5", "route[0].answer_parts", "Expected"),
    ('answer_window_s = 120\nanswer_parts = "2"', "route[0].answer_parts", "Expected"),
    ("answer_window_s = 120\nanswer_parts = { QW = 1.5 }", "route[0].answer_parts", "Expected"),
])
def test_config_check_refuses(tmp_path, extra, path, fragment):
    with pytest.raises(ConfigError) as exc:
        load(make_config(tmp_path, route_extra=extra))
    assert any(i.path.startswith(path) and fragment in i.message for i in exc.value.issues), \
        [str(i) for i in exc.value.issues]
