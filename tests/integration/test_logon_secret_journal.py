"""The newcomer trial through a real switch: a user ID typed with a '.' (``Pass.word-123``), a
password typed at the ``User ID:`` prompt (``demo-T4kdL0KLIhj6``, ``Hunter2Secret99``) — each
LOGON is refused ``E108`` and its ``REJECTED`` record keeps nothing after the key
(``ICS1.LOGON.*.*``, PROTOCOL.md §7); no log line carries any of it."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from msc.journal.search import Query, search
from tests.conftest import eventually

SECRET = "demo-T4kdL0KLIhj6"
TYPED = ["Pass.word-123", SECRET, "Hunter2Secret99", "PASS.WORD-123", "DEMO-T4KDL0KLIHJ6"]


@pytest.mark.parametrize("typed", TYPED)
async def test_a_malformed_logon_keeps_nothing_after_the_key(harness, typed):
    sw = await harness.start_switch()
    c = await harness.client()
    with capture_logs() as logs:
        f = await c.send(f"ICS1.LOGON.{typed}.-.{SECRET}")
        assert f.type == "N" and f.payload.startswith(b"E108"), f
        await sw.journal.flush()
    texts = await eventually(lambda: [r.text for r in search(sw.settings.journal_dir, sw.journal.keyring,
                                                             Query(kind="REJECTED"))])
    assert texts == ["ICS1.LOGON.*.*"], texts
    said = repr(logs)
    for piece in (SECRET, "T4kdL0KLIhj6", "Pass", "PASS", "word", "WORD", "Hunter2", "DEMO", "demo"):
        assert piece not in said, said
