"""The control socket's requests (msc.server.control): one typed struct per operation, decoded by
its "op"; anything else is refused as a bad request, never looked up by a name the client chose."""

from __future__ import annotations

import msgspec
import pytest

from msc.journal.records import Entry
from msc.server import control as c

GOOD = [
    (b'{"op": "ping"}', c.Ping()),
    (b'{"op": "users_changed"}', c.UsersChanged()),
    (b'{"op": "auth_changed"}', c.AuthChanged()),
    (b'{"op": "unlock", "id": "TS0001"}', c.Unlock("TS0001")),
    (b'{"op": "station", "mnemonic": "ICS1", "disabled": true}', c.Station("ICS1", True)),
    (b'{"op": "checkpoint"}', c.Checkpoint()),
    (b'{"op": "purge", "actor": "AD0001"}', c.Purge("AD0001")),
    (b'{"op": "purge"}', c.Purge(None)),
    (b'{"op": "verify_failed", "first_bad": 17}', c.VerifyFailed(17)),
    (b'{"op": "record", "entries": [{"kind": "ADMIN", "user": "AD0001", "text": "X"}]}',
     c.Record([Entry(kind="ADMIN", user="AD0001", text="X")])),
    (b'{"op": "ping", "from": "a newer msc"}', c.Ping()),  # fields it does not know are ignored
]


@pytest.mark.parametrize("line, req", GOOD, ids=[g[0].decode()[:40] for g in GOOD])
def test_each_operation_decodes_to_its_own_type(line, req):
    assert c.decode(line) == req


BAD = {
    "unknown op": b'{"op": "format_disk"}',
    "a private method's name": b'{"op": "_apply_config"}',
    "a switch attribute": b'{"op": "stop"}',
    "no op": b'{"id": "TS0001"}',
    "op not a string": b'{"op": 7}',
    "missing field": b'{"op": "unlock"}',
    "field of the wrong type": b'{"op": "station", "mnemonic": "ICS1", "disabled": "yes"}',
    "entries not a list": b'{"op": "record", "entries": "ADMIN"}',
    "entry without a kind": b'{"op": "record", "entries": [{"text": "X"}]}',
    "not JSON": b"ping",
    "a JSON list": b'["ping"]',
    "empty": b"",
}


@pytest.mark.parametrize("line", list(BAD.values()), ids=list(BAD))
def test_anything_else_is_refused(line):
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        c.decode(line)
