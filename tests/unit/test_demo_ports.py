"""`msc demo --port-offset N`: every port of the demo's msc.toml moves by N, nothing else changes."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from msc.cli.demo import shift_ports


@pytest.mark.parametrize("text, offset, expected", [
    ('bind = "127.0.0.1:7400"', 1000, 'bind = "127.0.0.1:8400"'),
    ('endpoints = ["127.0.0.1:7501", "127.0.0.1:7511"]', 5, 'endpoints = ["127.0.0.1:7506", "127.0.0.1:7516"]'),
    ('bind = "[::1]:9400"', 1, 'bind = "[::1]:9401"'),
    ('bind = "localhost:9400"', -1, 'bind = "localhost:9399"'),
    ('bind = "0.0.0.0:7400"', 10, 'bind = "0.0.0.0:7410"'),
    ('bind = "127.0.0.1:0"', 1000, 'bind = "127.0.0.1:0"'),            # any free port stays so
    ('# see 127.0.0.1:7400 in the docs', 1000, '# see 127.0.0.1:7400 in the docs'),  # not a quoted address
    ('name = "ICS1:7400"', 1000, 'name = "ICS1:7400"'),                # not a host
    ('banner = "call 555:1234"', 1000, 'banner = "call 555:1234"'),
])
def test_shift_ports(text, offset, expected):
    assert shift_ports(text, offset) == expected


@pytest.mark.parametrize("text, offset", [
    ('bind = "127.0.0.1:65000"', 1000),       # past 65535 (and its control port +100)
    ('bind = "127.0.0.1:7400"', -7400),       # to port 0 or below
    ('bind = "127.0.0.1:65435"', 1),          # its control port would be 65536
])
def test_shift_ports_refuses_ports_out_of_range(text, offset):
    with pytest.raises(ValueError):
        shift_ports(text, offset)


def test_the_packaged_demo_config_moves_every_address():
    text = resources.files("msc").joinpath("data/msc.toml").read_text()
    before, after = tomllib.loads(text), tomllib.loads(shift_ports(text, 20000))

    def addresses(doc):
        return ([ln["bind"] for ln in doc["listener"]] + [doc["metrics"]["bind"]]
                + [e for u in doc["upstream"] for e in u["endpoints"]])

    moved = [(a, b) for a, b in zip(addresses(before), addresses(after), strict=True)]
    assert moved and all(int(b.rsplit(":", 1)[1]) == int(a.rsplit(":", 1)[1]) + 20000 for a, b in moved)
    # Nothing but the addresses changed.
    assert {k: v for k, v in before.items() if k not in ("listener", "metrics", "upstream")} == \
        {k: v for k, v in after.items() if k not in ("listener", "metrics", "upstream")}
