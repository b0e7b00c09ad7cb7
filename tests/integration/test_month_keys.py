"""The switch and its key ring over time (issue 16; JOURNAL.md "Encryption", OPERATIONS.md
"Metrics and health"), with an injected clock (Switch(clock=…)):

- running into a new month, the switch makes the month after it at once, in a worker thread: the
  first commit of a month never waits on making a key (one database round trip on PostgreSQL, up
  to its timeout when the database is away, used to block the event loop at that commit);
- a key ring this machine's master key file no longer opens (another machine ran `msc keys
  rotate`) shows in ``/readyz`` (``key_ring``; the active node stays ready: it serves with the
  keys it holds) and ``msc_key_ring_unusable``, until the new file is copied.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import pytest
from structlog.testing import capture_logs

import msc.journal.journal as journal_mod
import msc.journal.monthkeys as monthkeys_mod
from msc.journal.schema import list_partitions
from msc.keyring import KeyRing, next_period, period_of
from tests.conftest import eventually
from tests.keyspy import KeyMaking
from tests.timeline import Clock, utc
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=HANG_S) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sample(text: str, name: str) -> float | None:
    """The value of an unlabelled metric in a /metrics exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# (the clock at start, after the month ends): a 31-day month, a 30-day month, a year (a leap
# February and a clock that jumped months: the contract test with the journal alone — the users'
# passwords of the test configuration expire too far from today).
ENDS = [(utc(2026, 1, 31, 23), utc(2026, 2, 1, 0)), (utc(2026, 11, 30, 23), utc(2026, 12, 1, 0)),
        (utc(2026, 12, 31, 23), utc(2027, 1, 1, 0))]


@pytest.mark.parametrize("start, after", ENDS, ids=["31-days", "30-days", "year"])
async def test_a_switch_running_into_a_new_month_made_its_key_ahead_and_the_first_logon_of_the_month_makes_none(
        harness, monkeypatch, start, after):
    monkeypatch.setattr(journal_mod, "TICK_S", 0.02)
    clock = Clock(start + 3540)  # 23:59
    sw = await harness.start_switch(clock=clock)
    making = KeyMaking(sw.journal.keyring)
    loop_thread = threading.get_ident()
    other = KeyRing(sw.settings.data_dir / "keys", sw.settings.key_file)  # `msc keys …` on this machine
    first = period_of(int(clock.t * 1e6))
    assert {first, next_period(first)} <= set(other.periods())
    c = await harness.operator("ICS1", "TS0001")  # records of the month's last minute
    clock.t = after + 30
    now = period_of(int(clock.t * 1e6))
    await eventually(lambda: next_period(now) in other.periods())  # made at the month's first tick, no traffic
    status, text = await asyncio.to_thread(get, sw.ops.port, "/metrics")
    assert status == 200 and sample(text, "msc_key_ring_next_month_ready") == 1.0
    assert (await c.send("ICS1.LOGOFF")).type == "A"
    assert (await harness.operator("ICS2", "TS0002")) is not None  # the month's first logon: its records commit
    assert now in list_partitions(sw.settings.journal_dir)
    assert [m for m, _ in making.made] == [next_period(now)], making.made  # nothing made at the commits
    assert all(t != loop_thread for _, t in making.made)


async def test_a_master_key_rotated_on_another_machine_shows_in_readyz_and_the_metric_until_the_file_is_copied(
        harness, monkeypatch, tmp_path):
    monkeypatch.setattr(journal_mod, "TICK_S", 0.02)
    monkeypatch.setattr(monthkeys_mod, "KEYS_CHECK_S", 0.2)
    sw = await harness.start_switch()
    port = sw.ops.port
    status, body = await asyncio.to_thread(get, port, "/readyz")
    assert status == 200 and "key_ring" not in json.loads(body)
    # Another machine of the site with a copy of the master key runs `msc keys rotate` (a pair on
    # SQLite whose key directory is shared, or a restore): this machine's file is now the old one.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    shutil.copy2(sw.settings.key_file, elsewhere / "master.key")
    rotated = KeyRing(sw.settings.data_dir / "keys", elsewhere / "master.key")
    with capture_logs() as logs:
        await asyncio.to_thread(rotated.rotate)

        def unusable():
            status, body = get(port, "/readyz")
            return (status, json.loads(body)) if "key_ring" in json.loads(body) else None

        status, doc = await asyncio.to_thread(_wait, unusable)
        assert status == 200 and doc["status"] == "ready", doc  # it serves on with the keys it holds
        assert "copy the master key file" in doc["key_ring"]
        assert sample((await asyncio.to_thread(get, port, "/metrics"))[1], "msc_key_ring_unusable") == 1.0
        assert (await harness.operator("ICS1", "TS0001")) is not None  # still serving
        # The fix the reason names: the current file copied here (whole: a look never reads half of it).
        shutil.copy2(elsewhere / "master.key", sw.settings.key_file.with_name("master.key.copy"))
        os.replace(sw.settings.key_file.with_name("master.key.copy"), sw.settings.key_file)
        await asyncio.to_thread(_wait, lambda: "key_ring" not in json.loads(get(port, "/readyz")[1]))
        assert sample((await asyncio.to_thread(get, port, "/metrics"))[1], "msc_key_ring_unusable") == 0.0
    events = [e["event"] for e in logs if e["event"].startswith("keyring.")]
    assert events == ["keyring.unusable", "keyring.usable"], events  # once each, not at every look
    assert [e["log_level"] for e in logs if e["event"] == "keyring.unusable"] == ["error"]


def _wait(predicate, timeout: float = HANG_S):
    """Poll a blocking ``predicate`` (HTTP) in a worker thread until it is truthy (a hang's bound)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        threading.Event().wait(0.02)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_the_key_ring_alerts_fire_on_an_unusable_key_ring_and_a_next_month_key_not_made():
    """config/prometheus/alerts.yml against tests/promtool/key_ring_alerts.test.yml."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["promtool", "test", "rules", str(root / "tests" / "promtool" / "key_ring_alerts.test.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_key_ring_call_waiting_on_a_frozen_database_is_given_back_at_once_by_abort():
    """A node that steps down leaves at once (Switch.abandon_storage): its journal's look at the
    key ring, in a worker thread the teardown joins, may be waiting on a frozen database — here a
    listener that accepts and never answers. ``abort`` gives it back now (KeyRingUnavailable with
    the reason), not after the client's bound."""
    import socket

    from msc.storage.pgkeyring import KeyRingUnavailable, PgKeyStore
    from msc.storage.postgres import PgSettings

    with socket.create_server(("127.0.0.1", 0)) as frozen:
        store = PgKeyStore(PgSettings(f"postgresql://msc@127.0.0.1:{frozen.getsockname()[1]}/msc", "unused"))
        got: list[BaseException] = []

        def look() -> None:
            try:
                store.exists()
            except BaseException as exc:  # noqa: BLE001 - what the caller is given, asserted below
                got.append(exc)

        caller = threading.Thread(target=look)
        caller.start()
        frozen.settimeout(HANG_S)
        conn, _ = frozen.accept()  # the call is waiting for the database's first answer
        with conn:
            store.abort("this node stepped down (lease lost)")
            caller.join(HANG_S)
            assert not caller.is_alive()
        store.close()
    assert len(got) == 1 and isinstance(got[0], KeyRingUnavailable), got
    assert "this node stepped down" in str(got[0])
