"""Reload without downtime, readiness, log hygiene (issue: operations)."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from tests.conftest import PASSWORD
from tests.faults import FaultyWriter
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(60)


def get(port: int, path: str) -> tuple[int, dict | str]:
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=HANG_S) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if path != "/metrics" else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


async def test_valid_reload_applies_and_keeps_every_session(harness):
    await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    ics1 = await harness.operator("ICS1", "TS0001")
    ics2 = await harness.operator("ICS2", "TS0002")
    host = await harness.client()
    assert (await host.send("ECC2.*EC0001.#0A000001.QW.CA0130100.NAM/X.DOB/19800101")).type == "A"
    await host.output()
    assert (await ics2.send("ICS2.QH.CA0130000.NAM/X.DOB/19800101.PUR/C.ATN/A")).code == "E204"
    cfg = harness.tmp / "msc.toml"
    text = cfg.read_text()
    # ICS2 gains criminal history; a new station appears; the route table gains a key.
    text = text.replace('authorizations = ["cjis", "dmv", "admin"]\nreceives_admin = true',
                        'authorizations = ["cjis", "cori", "dmv", "admin"]\nreceives_admin = true', 1)
    text += '\n[[station]]\nmnemonic = "ICS5"\nkind = "terminal"\nori = "CA0130000"\nserves = ["CA0130000"]\n' \
            'addresses = ["127.0.0.1"]\nauthorizations = ["cjis"]\n'
    text = text.replace('mke = ["DQ", "RQ", "KQ"]', 'mke = ["DQ", "RQ", "KQ", "ZQ"]')
    cfg.write_text(text)
    assert await sw.reload()
    assert sw.metrics.config_reload.labels("ok")._value.get() == 1
    # Every session is still there and works; the change applies to the next message.
    assert (await ics2.send("ICS2.QH.CA0130000.NAM/X.DOB/19800101.PUR/C.ATN/A")).type == "A"
    assert (await ics1.send("ICS1.ZQ.CA0130000.NAM/X")).type == "A"
    assert (await host.send("ECC3.*EC0002.#0A000001.QW.CA0130100.NAM/Y.DOB/19800101")).type == "A"
    c5 = await harness.client()
    assert (await c5.logon("ICS5", "TS0001", PASSWORD)).type == "A"
    assert all(not c.closed.done() for c in (ics1, ics2, host))


async def test_reload_removing_a_station_and_a_user_logs_them_off(harness):
    sw = await harness.start_switch()
    ics2 = await harness.operator("ICS2", "TS0002")
    ics1 = await harness.operator("ICS1", "TS0001")
    users = harness.tmp / "users.toml"
    from msc.mnemonics import userfile

    userfile.update(users, lambda u: userfile.remove_user(u, "TS0002", __import__("datetime").date.today()))
    assert await sw.reload()
    f = await asyncio.wait_for(ics2.sys.get(), HANG_S)
    assert f.text == "SYS.LOGOFF.USER REMOVED"
    assert ics1.sys.empty()
    assert (await ics1.send("ICS1.LOGOFF")).type == "A"


async def test_invalid_reload_changes_nothing(harness):
    sw = await harness.start_switch()
    c = await harness.operator("ICS1", "TS0001")
    cfg = harness.tmp / "msc.toml"
    good = cfg.read_text()
    cfg.write_text(good.replace('mnemonic = "ICS2"', 'mnemonic = "bad!"'))
    before = sw.directory
    assert not await sw.reload()
    assert sw.directory is before
    assert sw.metrics.config_reload.labels("error")._value.get() == 1
    assert (await c.send("ICS1.LOGOFF")).type == "A"  # still serving on the old config
    cfg.write_text("this is not toml [")
    assert not await sw.reload()
    assert sw.metrics.config_reload.labels("error")._value.get() == 2
    await sw.journal.flush()
    from msc.journal.search import Query, search

    texts = [r.text for r in search(sw.settings.journal_dir, sw.journal.keyring, Query(kind="ADMIN"))]
    assert sum(t.startswith("CONFIG RELOAD FAILED") for t in texts) == 2


# Refused reloads of every kind: the file is not TOML, a value breaks the grammar, a rule across
# tables is broken. The switch stays ready (it serves on the configuration it runs) and says why.
@pytest.mark.parametrize("edit, says", [
    (lambda t: "this is not toml [", "toml"),
    (lambda t: t.replace('mnemonic = "ICS2"', 'mnemonic = "bad!"'), "bad!"),
    (lambda t: t.replace("[metrics]", "[metrics]\nno_such_setting = 1"), "no_such_setting"),
    (lambda t: t.replace("[metrics]", '[[listener]]\nname = "terminals"\nbind = "127.0.0.1:0"\n\n[metrics]'),
     "terminals"),
], ids=["not-toml", "bad-mnemonic", "unknown-setting", "listener-twice"])
async def test_a_refused_reload_keeps_the_switch_ready_and_says_why(harness, edit, says):
    from msc.cli.admin import control

    sw = await harness.start_switch()
    port = sw.ops.port
    cfg = harness.tmp / "msc.toml"
    good = cfg.read_text()
    status, body = await asyncio.to_thread(get, port, "/readyz")
    assert status == 200 and "last_reload_error" not in body
    cfg.write_text(edit(good))
    assert not await sw.reload()
    status, body = await asyncio.to_thread(get, port, "/readyz")
    assert status == 200 and body["status"] == "ready", body  # still serving, as before the edit
    assert says.lower() in body["last_reload_error"].lower()
    ping = await asyncio.to_thread(control, sw.settings, {"op": "ping"})
    assert ping["reload_error"] == body["last_reload_error"]
    cfg.write_text(good)
    assert await sw.reload()
    status, body = await asyncio.to_thread(get, port, "/readyz")
    assert status == 200 and "last_reload_error" not in body
    assert (await asyncio.to_thread(control, sw.settings, {"op": "ping"}))["reload_error"] is None


async def test_reload_adds_a_listener_and_removes_another(harness):
    sw = await harness.start_switch()
    cfg = harness.tmp / "msc.toml"
    cfg.write_text(cfg.read_text().replace("[metrics]", '[[listener]]\nname = "mdt"\nbind = "127.0.0.1:0"\n\n[metrics]'))
    assert await sw.reload()
    assert set(sw.listener_ports()) == {"terminals", "mdt"}
    from tests.wire import WireClient

    mdt_port = sw.listener_ports()["mdt"]
    c = await WireClient.connect(mdt_port)
    await c.banner()
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    # Removing it again closes the listening socket; the session already on it carries on.
    cfg.write_text(cfg.read_text().replace('[[listener]]\nname = "mdt"\nbind = "127.0.0.1:0"\n\n', ""))
    assert await sw.reload()
    assert set(sw.listener_ports()) == {"terminals"}
    with pytest.raises(OSError):
        await WireClient.connect(mdt_port)
    assert (await c.send("ICS1.LOGOFF")).type == "A"


async def test_readyz_turns_503_when_the_journal_cannot_commit(harness, monkeypatch):
    sw = await harness.start_switch()
    port = sw.ops.port
    assert (await asyncio.to_thread(get, port, "/readyz"))[0] == 200

    faults = FaultyWriter.install(sw.journal)
    faults.fail_commits = True  # "injected: no space left on device"
    c = await harness.client()
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).code == "E501"
    status, body = await asyncio.to_thread(get, port, "/readyz")
    assert status == 503 and "no space left" in body["reasons"]["journal"]
    assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
    assert sw.metrics.journal_errors._value.get() >= 1
    faults.fail_commits = False
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
    assert (await asyncio.to_thread(get, port, "/readyz"))[0] == 200


async def test_no_secret_or_message_text_ever_reaches_the_logs(harness):
    from msc.mnemonics import totp
    from msc.ops.logging import configure

    buf = io.StringIO()
    configure(level="debug", json=True, stream=buf)
    try:
        await harness.start_stub()
        sw = await harness.start_switch(totp_users=["MF0001"])
        await harness.wait_upstream()
        secret = harness.totp["MF0001"]
        code = totp.code_at(secret, __import__("time").time())
        c = await harness.client()
        assert (await c.logon("ICS1", "TS0001", "Wrong Horse Battery")).code == "E202"
        assert (await c.logon("ICS1", "MF0001", PASSWORD, otp=code)).type == "A"
        assert (await c.send("ICS1.QW.CA0130000.NAM/ZANZIBAR, QUILL.DOB/19610203")).type == "A"
        await c.output()
        assert (await c.send("ICS1.QH.CA0130000.NAM/ZANZIBAR, QUILL")).code == "E108"
        assert (await c.send(f"ICS1.PWD.{PASSWORD}.Another Secret 77")).type == "A"
        assert (await c.send("ICS1.AM.CA0130000.ICS2.TXT PRIVATE NOTE ABOUT ZANZIBAR")).type == "A"
        await sw.stop()
        harness.switch = None
        out = buf.getvalue()
        assert '"event": "session.logon"' in out and '"event": "session.reject"' in out
        master = (harness.tmp / "data" / "keys" / "master.key").read_text()
        import base64
        import json as _json

        for needle in (PASSWORD, "Wrong Horse", "Another Secret", code, "ZANZIBAR", "QUILL", "19610203",
                       "PRIVATE NOTE", base64.b32encode(secret).decode(), _json.loads(master)["key"]):
            assert needle not in out, needle
        for line in out.splitlines():
            doc = _json.loads(line)  # one JSON object per line
            assert "event" in doc and "level" in doc and "ts" in doc
    finally:
        configure(level="info", json=False)


def test_availability_arithmetic_on_a_fake_clock():
    from msc.ops.availability import Run, compute

    t0 = 1_700_000_000.0
    runs = [Run(1, t0, t0 + 1000, None),          # crashed: last heartbeat at +1000
            Run(2, t0 + 1100, t0 + 2000, t0 + 2000),  # restarted 100 s later; clean stop at +2000
            Run(3, t0 + 2050, t0 + 2950, None)]       # started again 50 s later, still running
    a = compute(runs, t0 + 3000, "30d", current=3)
    assert [(round(o.seconds), o.scheduled) for o in a.outages] == [(100, False), (50, True)]
    assert a.up_s == pytest.approx(1000 + 900 + 950)
    assert a.ratio == pytest.approx(2850 / 3000)
    # The same ledger seen while the switch is down (no current run): the open gap counts too.
    b = compute(runs, t0 + 3000, "30d", current=None)
    assert round(b.outages[-1].seconds) == 50 and not b.outages[-1].scheduled
    # A year-old installation is charged only from its first run.
    assert compute(runs, t0 + 3000, "365d", current=3).since == t0


async def test_availability_ledger_on_a_fake_clock_through_the_switch(harness):
    """A run that crashed (it left a start and heartbeats, no clean stop) and the switch started
    after it: the silence between is unscheduled downtime in the switch's availability."""
    from msc.journal import Entry, Journal
    from msc.ops.availability import Ledger

    class Clock:
        t = 1_800_000_000.0

        def __call__(self):
            return self.t

    clock = Clock()
    from msc.config.load import load
    from tests.conftest import make_config

    # What a crashed run leaves: its journal, a start and heartbeats in the ledger, no stop mark.
    settings = load(make_config(harness.tmp, upstream_ports=[]))
    crashed = Ledger(settings.state_db)
    run_id = crashed.start(clock())
    journal = Journal.from_settings(settings, clock=clock)
    await journal.open()
    await journal.append(Entry(kind="ADMIN", text="SWITCH STARTED"))
    await journal.close()
    clock.t += 600
    crashed.heartbeat(clock())
    crashed.close()
    clock.t += 60
    sw2 = await harness.start_switch(clock=clock)
    clock.t += 340
    sw2.refresh_availability()
    ratio = sw2.metrics.availability.labels("30d")._value.get()
    assert ratio == pytest.approx(940 / 1000)
    assert sw2.ledger.run_id == run_id + 1


async def test_the_control_socket_refuses_what_is_not_a_request_and_goes_on_serving(harness):
    sw = await harness.start_switch()
    r, w = await asyncio.open_unix_connection(str(sw.settings.data_dir / "control.sock"))
    try:
        for line in (b'{"op": "stop"}', b'{"op": "_apply_config"}', b'{"op": "unlock"}', b"not json",
                     b'{"op": "station", "mnemonic": "ICS1", "disabled": "yes"}'):
            w.write(line + b"\n")
            reply = json.loads(await asyncio.wait_for(r.readline(), HANG_S))
            assert reply["ok"] is False and reply["error"].startswith("bad request"), (line, reply)
        w.write(b'{"op": "ping"}\n')
        reply = json.loads(await asyncio.wait_for(r.readline(), HANG_S))
        assert reply["ok"] is True and reply["switch"] == sw.settings.config.switch.name
    finally:
        w.close()
