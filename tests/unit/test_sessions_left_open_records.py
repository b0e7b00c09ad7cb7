"""The records a start writes for a session a run's end left open (msc.server.orphans,
JOURNAL.md "Sessions a node's end left open"): as the session's own end would have written them,
with the reason, naming the user, mnemonic, pool and TAF of its logon."""

from __future__ import annotations

import pytest

from msc.mnemonics.state import OpenSession
from msc.server.orphans import end_records


def row(kind: str, mnemonic: str, *, pool: str | None = None, user: str | None = None,
        taf: str | None = "7F000001") -> OpenSession:
    return OpenSession(seq=41, kind=kind, peer=pool or mnemonic, mnemonic=mnemonic, pool=pool, user=user, taf=taf,
                       opened=1.0)


# (session left open, reason) → (text, peer, mnemonic, user) of each record, in order
CASES = [
    (row("pool", "ECM2", pool="ECMDT", user="EC0002"), "FAILOVER",
     [("POOL ECMDT RELEASE ECM2 FAILOVER", "ECMDT", "ECM2", "EC0002"), ("LOGOFF FAILOVER", "ECMDT", "ECM2", "EC0002")]),
    (row("pool", "ECM10", pool="ECMDT", user="EC0001"), "RESTART",
     [("POOL ECMDT RELEASE ECM10 RESTART", "ECMDT", "ECM10", "EC0001"), ("LOGOFF RESTART", "ECMDT", "ECM10", "EC0001")]),
    (row("terminal", "ICS1", user="TS0001"), "FAILOVER", [("LOGOFF FAILOVER", "ICS1", "ICS1", "TS0001")]),
    (row("terminal", "ICS2", user="TS0002", taf=None), "RESTART", [("LOGOFF RESTART", "ICS2", "ICS2", "TS0002")]),
    (row("host", "ECC1"), "FAILOVER", [("LOGOFF FAILOVER", "ECC1", "ECC1", None)]),
    (row("printer", "ECP1"), "RESTART", [("LOGOFF RESTART", "ECP1", "ECP1", None)]),
]


@pytest.mark.parametrize(("session", "reason", "want"), CASES, ids=[f"{c[0].kind}-{c[0].mnemonic}-{c[1]}" for c in CASES])
def test_a_session_left_open_is_ended_as_its_own_end_would_have_written_it(session, reason, want):
    got = end_records(session, reason)
    assert [(e.text, e.peer, e.mnemonic, e.user) for e in got] == want
    assert {e.kind for e in got} == {"SESSION"}
    assert {e.taf for e in got} == {session.taf}
