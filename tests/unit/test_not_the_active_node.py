"""Where a ``--as`` command may run on a pair (issue 16): :func:`msc.actions.journaling.not_the_active_node`
reads the lease and says, in one line, which node to go to — for every state the lease can be in
— and :func:`~msc.actions.journaling.require_active_here` refuses only when another node (or
this machine's own, not answering) is active. A single node is never asked."""

from __future__ import annotations

import pytest

from msc.actions import journaling
from msc.config.load import load
from msc.ha.pglease import LeaseRow, LeaseUnavailable
from tests.conftest import make_config


class FakeLease:
    def __init__(self, row: LeaseRow | None | Exception) -> None:
        self.row = row
        self.closed = False

    async def current(self):
        if isinstance(self.row, Exception):
            raise self.row
        return self.row

    async def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def pair_settings(tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("node"))
    cfg.write_text(cfg.read_text() + '\n[node]\nname = "msc-a"\nlease_ttl_s = 5\n'
                   '\n[storage]\nbackend = "postgresql"\ndsn = "postgresql://msc@127.0.0.1:9/msc"\n')
    return load(cfg)


CASES = [
    # (the lease row, what the one line must say, the active node it names)
    (LeaseRow("msc-b", 2, True, 4.0), "this machine's node msc-a is the standby (or not running); run the command "
                                      "on the active node msc-b — its record must go through it", "msc-b"),
    (LeaseRow("MSC-B2", 17, True, 0.5), "on the active node MSC-B2 — its record must go through it", "MSC-B2"),
    (LeaseRow("msc-a", 3, True, 4.2), "this machine's node msc-a holds the lease (epoch 3) but does not answer here "
                                      "(stopped or paused): wait for the standby to take over (at most 4 s)", "msc-a"),
    (LeaseRow("msc-b", 4, False, -12.0), "no node is active", None),
    (None, "no node is active", None),
    (LeaseUnavailable("lease database: ConnectionRefusedError: refused"), "could not be asked which node is active "
                                                                          "(lease database: ConnectionRefusedError", None),
]


@pytest.mark.parametrize(("row", "says", "active"), CASES)
def test_the_refusal_names_the_node_to_go_to(pair_settings, monkeypatch, row, says, active):
    lease = FakeLease(row)
    monkeypatch.setattr("msc.ha.site.lease_for", lambda s: lease)
    exc = journaling.not_the_active_node(pair_settings)
    assert says in str(exc) and "\n" not in str(exc)
    assert exc.active == active
    assert isinstance(exc, journaling.JournalError)  # every caller that catches a journal failure sees it
    assert lease.closed or isinstance(row, Exception)


@pytest.mark.parametrize(("row", "says", "active"), CASES)
def test_require_active_here_refuses_only_when_some_node_is_active(pair_settings, monkeypatch, row, says, active):
    monkeypatch.setattr("msc.ha.site.lease_for", lambda s: FakeLease(row))
    if active is None:
        journaling.require_active_here(pair_settings)  # none is: a direct write may still be possible
    else:
        with pytest.raises(journaling.NotTheActiveNode) as e:
            journaling.require_active_here(pair_settings)
        assert e.value.active == active


@pytest.mark.parametrize("extra", [
    "",  # a single node on SQLite
    '\n[storage]\nbackend = "postgresql"\ndsn = "postgresql://msc@127.0.0.1:9/msc"\n',  # one node on PostgreSQL
    # a pair whose nodes keep their own SQLite journals: a record made here is committed here
    '\n[node]\nname = "msc-a"\nlease_ttl_s = 5\nlease_dsn = "postgresql://msc@127.0.0.1:9/msc"\n',
])
def test_a_node_without_a_shared_journal_is_never_refused_here(tmp_path, monkeypatch, extra):
    cfg = make_config(tmp_path)
    cfg.write_text(cfg.read_text() + extra)
    s = load(cfg)

    def no_lease(_s):
        raise AssertionError("a single node has no lease to ask")

    monkeypatch.setattr("msc.ha.site.lease_for", no_lease)
    journaling.require_active_here(s)
