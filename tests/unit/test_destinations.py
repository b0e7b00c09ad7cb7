"""The one destination resolver (msc.routing.destinations) for AM fan-out and upstream traffic:
groups, ORIs, pooled mnemonics, stations, destinations msc does not host, the 24 x 7 rule."""

from __future__ import annotations

import datetime as dt

import pytest

from msc.config.load import load
from msc.mnemonics.directory import Directory
from msc.protocol.codes import ProtocolError
from msc.routing.destinations import admin_destinations, pooled, stations_named, upstream_destination
from tests.conftest import make_config

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
NO_POOL_PRINTER = """
[[pool]]
name = "LONE"
ori = "CA0130000"
serves = ["CA0130000"]
mnemonics = ["LON1"]
addresses = ["127.0.0.0/8"]
authorizations = ["cjis"]
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Directory:
    return Directory(load(make_config(tmp_path_factory.mktemp("dest"), extra=NO_POOL_PRINTER)))


def nobody(_endpoint: str) -> bool:
    return False


#: (destination list of an AM, where msc delivers it, what goes upstream, or the reject code)
AM = [
    (["ICS2"], [("ICS2", "ICS2")], []),
    (["ICS2A1"], [("ICS2", "ICS2")], []),  # a header names its station
    (["APB"], [("ICS1", "ICS1"), ("ECP1", "ECP1")], []),  # a group, in member order
    (["CA0130000"], [("ICS1", "ICS1"), ("ICS2", "ICS2")], []),  # an ORI: its admin receivers
    (["CA0130100"], [("ECP1", "ECP1")], []),
    (["ECC2"], [("ECC1", "ECC2")], []),  # a host's workstation mnemonic: the host's endpoint
    (["ECM1"], [("ECP1", "ECP1")], []),  # a pooled mnemonic: its pool's defined destination
    (["NY0000000"], [], ["NY0000000"]),  # not hosted here: upstream
    (["ZZZ9", "ICS2", "APB", "ICS1"], [("ICS2", "ICS2"), ("ICS1", "ICS1"), ("ECP1", "ECP1")], ["ZZZ9"]),
    (["LON1"], "E306", None),  # a pooled mnemonic with nowhere to go
]


@pytest.mark.parametrize(("dests", "local", "remote"), AM)
def test_admin_destinations(d, dests, local, remote):
    if isinstance(local, str):
        with pytest.raises(ProtocolError) as exc:
            admin_destinations(d, dests, now=NOW, attached=nobody)
        assert exc.value.code == local
        return
    assert admin_destinations(d, dests, now=NOW, attached=nobody) == (local, remote)


#: (an upstream message's destination, 24 x 7 kind?, where it lands, or the reject code)
UPSTREAM = [
    ("ICS2", False, [("ICS2", "ICS2")]),
    ("ICS2", True, [("ICS1", "ICS1")]),  # not staffed 24 x 7: the ORI's duty station
    ("ICS1", True, [("ICS1", "ICS1")]),  # staffed but not connected: still its own duty station
    ("CA0130000", False, [("ICS1", "ICS1"), ("ICS2", "ICS2")]),
    ("CA0130000", True, [("ICS1", "ICS1")]),
    ("APB", False, [("ICS1", "ICS1"), ("ECP1", "ECP1")]),
    ("ECM2", False, [("ECP1", "ECP1")]),
    ("LON1", True, [("ICS1", "ICS1")]),  # 24 x 7 to a pool without a printer: the pool ORI's duty station
    ("LON1", False, "E306"),
    ("NY0000000", False, "E304"),
    ("QQQ1", True, "E304"),
]


@pytest.mark.parametrize(("dest", "staffed", "expected"), UPSTREAM)
def test_upstream_destination(d, dest, staffed, expected):
    if isinstance(expected, str):
        with pytest.raises(ProtocolError) as exc:
            upstream_destination(d, dest, staffed=staffed, now=NOW, attached=nobody)
        assert exc.value.code == expected
        return
    assert upstream_destination(d, dest, staffed=staffed, now=NOW, attached=nobody) == expected


def test_the_same_names_serve_both_paths(d):
    """AM fan-out and upstream traffic name the same stations for every hosted destination."""
    for dest in ("ICS1", "ICS2", "APB", "CA0130000", "CA0130100", "ECM1", "ECC3", "ECP1"):
        names = stations_named(d, dest)
        local, remote = admin_destinations(d, [dest], now=NOW, attached=nobody)
        assert remote == [] and [m for _e, m in local] == [n for n in names]
        assert [m for _e, m in upstream_destination(d, dest, staffed=False, now=NOW, attached=nobody)] == names
    assert pooled(d, "ECM1") == [("ECP1", "ECP1")]


# -- the asker of a request (Router.to_asker): a pooled mnemonic only while its loan lasts ------

#: (mnemonic, the loan that asked — None static, "ended" an earlier run's, "current" the loan
#: holding it now, "earlier" a loan of this run that ended —, who holds the mnemonic now, where
#: the output goes or the reject code)
ASKER = [
    ("ICS1", None, None, [("ICS1", "ICS1")]),                     # a terminal: always its own queue
    ("ECC2", None, None, [("ECC1", "ECC2")]),                     # a CAD workstation: its host's
    ("ECM1", "current", "EC0001", [("ECM1", "ECM1")]),            # the loan that asked, still on
    ("ECM1", "earlier", "EC0002", [("ECP1", "ECP1")]),            # lent to someone else since
    ("ECM1", "earlier", "EC0001", [("ECP1", "ECP1")]),            # a relogon: a new loan, same user
    ("ECM1", "earlier", None, [("ECP1", "ECP1")]),                # nobody holds it: still not its queue
    ("ECM2", "ended", "EC0002", [("ECP1", "ECP1")]),              # asked in the last run (a failover)
    ("ECM2", "ended", None, [("ECP1", "ECP1")]),
    ("LON1", "earlier", None, "E306"),                            # a pool without a printer
    ("LON1", "ended", "TS0001", "E306"),
]


@pytest.mark.parametrize(("mnemonic", "asked", "holder", "expected"), ASKER)
def test_an_answer_or_notice_goes_to_the_loan_that_asked_else_the_pool_printer(d, mnemonic, asked, holder, expected):
    from msc.mnemonics.acp import AccessControlPoint
    from msc.routing.router import ENDED, Router

    class Delivery:
        txn_prefix = ""

    router = Router(None, Delivery(), metrics=None, directory=d)  # type: ignore[arg-type]
    router.acp = acp = AccessControlPoint(d.pools)
    pool = d.pool_of.get(mnemonic, "")
    alloc: int | None = None
    if asked == "ended":
        alloc = ENDED
    elif asked is not None:
        alloc = lend(acp, pool, mnemonic, "EC0001").id
        if asked == "earlier":
            acp.release(mnemonic)
    if holder is not None and asked != "current":
        lend(acp, pool, mnemonic, holder)
    endpoint = d.endpoint_of(mnemonic)
    if isinstance(expected, str):
        with pytest.raises(ProtocolError) as exc:
            router.to_asker(endpoint, mnemonic, alloc)
        assert exc.value.reject.code == expected
    else:
        assert router.to_asker(endpoint, mnemonic, alloc) == expected


def lend(acp, pool: str, mnemonic: str, user: str):
    """The ACP's loan of ``mnemonic`` itself to ``user`` (mnemonics lent before it stay lent)."""
    while (a := acp.allocate(pool, user)) is not None:
        if a.mnemonic == mnemonic:
            return a
    raise AssertionError(f"{mnemonic} is not free in {pool}")
