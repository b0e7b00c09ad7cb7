"""``session.reject``'s fields name what the client sent (newcomer trial F9): a pooled client's
``LOGON`` under the pool's header ``ECMDT`` refused (E503 while the database was away) was logged
as ``"mnemonic": "ECMD"`` — the pool's name cut to a mnemonic's 4 characters, as if ``T`` were a
message reference. ``form`` is right as it was: the refusal's journal record form (JOURNAL.md
"Refused traffic": a connection not logged on gets compact records), not a form of the header."""

from __future__ import annotations

from msc.protocol.message import parse_input
from msc.server.refusing import sent_by

POOLS = {"ECMDT": object(), "LAPD": object()}


def test_a_pool_header_is_logged_as_the_pool_not_as_a_truncated_mnemonic():
    inp = parse_input(b"ECMDT.LOGON.EC0001.-.some password")
    assert sent_by(inp, None, POOLS) == {"header": "ECMDT", "pool": "ECMDT", "mnemonic": None}
    # A relogon of a pooled session: the mnemonic is the one it was lent.
    assert sent_by(inp, "ECM2", POOLS) == {"header": "ECMDT", "pool": "ECMDT", "mnemonic": "ECM2"}


def test_a_mnemonic_header_with_a_reference_names_the_mnemonic():
    inp = parse_input(b"ICS1A7.QV.CA0130100.LIC/7ABC123")
    assert sent_by(inp, "ICS1", POOLS) == {"header": "ICS1A7", "mnemonic": "ICS1"}
    assert sent_by(None, "ICS1", POOLS) == {"mnemonic": "ICS1"}
