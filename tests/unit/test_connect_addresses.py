"""`--connect HOST:PORT[,HOST:PORT...]`: the addresses msc terminal tries in order (issue 16 item 3)."""

from __future__ import annotations

import argparse

import pytest

from msc.cli.main import _hostports


@pytest.mark.parametrize("value, expect", [
    ("127.0.0.1:7400", [("127.0.0.1", 7400)]),
    ("127.0.0.1:7400,127.0.0.1:7401", [("127.0.0.1", 7400), ("127.0.0.1", 7401)]),
    ("msc-a.example.org:7400, msc-b.example.org:7400", [("msc-a.example.org", 7400), ("msc-b.example.org", 7400)]),
    ("[::1]:7400,127.0.0.1:7400", [("::1", 7400), ("127.0.0.1", 7400)]),
    ("10.0.0.5:7400,10.0.0.5:7400", [("10.0.0.5", 7400), ("10.0.0.5", 7400)]),  # a virtual IP, retried
    ("a:1,b:2,c:3", [("a", 1), ("b", 2), ("c", 3)]),
])
def test_addresses_in_order(value, expect):
    assert _hostports(value) == expect


@pytest.mark.parametrize("value, error", [
    ("127.0.0.1:7400,", "empty address"),
    (",127.0.0.1:7400", "empty address"),
    ("127.0.0.1:7400,,127.0.0.1:7401", "empty address"),
    ("127.0.0.1:7400, ", "empty address"),
    ("", "empty address"),
    ("127.0.0.1:7400,nohostport", "is not HOST:PORT"),
    ("127.0.0.1:7400,127.0.0.1:99999", "is not HOST:PORT"),
    ("127.0.0.1:7400,127.0.0.1", "is not HOST:PORT"),
    ("127.0.0.1:7400,:7401", "is not HOST:PORT"),
])
def test_a_bad_list_is_refused(value, error):
    with pytest.raises(argparse.ArgumentTypeError, match=error):
        _hostports(value)
