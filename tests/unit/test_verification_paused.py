"""The background verification child of a PostgreSQL journal whose database is away ends with
``{"event": "unavailable"}`` (exit 3) and is started again 30 s later: not a verification
failure. The switch said only ``journal.verification_exited`` with ``returncode: 3`` — a warning
that read like a failed check, at every restart, and nowhere in the docs (newcomer trial hA).
Now: ``journal.verification_paused`` once per outage with the child's reason, and
``journal.verification_resumed`` (with ``restarts``) once it reads again; the metric of failures
is untouched (JOURNAL.md "Background verification", OPERATIONS.md "When the database is away")."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

import structlog
from structlog.testing import capture_logs

from msc.server.background import BackgroundWork

AWAY = "journal database (127.0.0.1:5432/msc): ConnectionRefusedError: [Errno 111] Connection refused"


async def test_a_database_away_pauses_the_verification_said_once_and_its_resumption_once():
    work = SimpleNamespace(log=structlog.get_logger("msc"), metrics=MagicMock(), verify_failures=[],
                           _verify_outage=None, journal=None)
    with capture_logs() as logs:
        for _restart in range(3):
            await BackgroundWork._verification_event(work, {"event": "unavailable", "reason": AWAY})
        await BackgroundWork._verification_event(work, {"event": "progress", "verified": 10})
        await BackgroundWork._verification_event(work, {"event": "progress", "verified": 20})
    said = [(e["event"], e["log_level"]) for e in logs]
    assert said == [("journal.verification_paused", "warning"), ("journal.verification_resumed", "info")]
    assert logs[0]["reason"] == AWAY and logs[1]["restarts"] == 3 and logs[1]["was"] == AWAY
    assert work.verify_failures == [] and not work.metrics.journal_verify_failures.inc.called
