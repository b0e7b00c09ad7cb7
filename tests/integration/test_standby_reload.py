"""A SIGHUP to a node that does not serve yet — a pair's standby (OPERATIONS.md "Reload",
"Running two nodes"): the files are validated at once and a bad one is said as by a serving switch
(log ``config.reload_failed``, ``msc_config_reload_total{outcome="error"}``, ``/readyz``
``last_reload_error``), not only when the standby takes over (newcomer8: ``idle_logoff_s = "soon"``
logged only ``config.reload_deferred``). Applying still waits for the takeover; a good file is
``config.reload_deferred`` as before, and clears the error."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from structlog.testing import capture_logs

from tests.conftest import make_config
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(60)

#: (an edit of msc.toml or users.toml, a word of the error) — every kind a reload refuses
EDITS = [
    ("msc.toml", lambda t: t.replace("idle_logoff_s = 1800", 'idle_logoff_s = "soon"'), "idle_logoff_s"),
    ("msc.toml", lambda t: "this is not toml [", "toml"),
    ("msc.toml", lambda t: t.replace('mnemonic = "ICS2"', 'mnemonic = "bad!"'), "bad!"),
    ("msc.toml", lambda t: t.replace("[metrics]", "[metrics]\nno_such_setting = 1"), "no_such_setting"),
    ("msc.toml", lambda t: t.replace("[metrics]", '[[listener]]\nname = "terminals"\nbind = "127.0.0.1:0"\n\n[metrics]'),
     "terminals"),
    ("users.toml", lambda t: t + "\n[[user]]\nid = 42\n", "user"),
]


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=HANG_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(("file", "edit", "says"), EDITS, ids=[e[2] for e in EDITS])
async def test_a_standby_validates_a_sighup_s_files_at_once_and_applies_them_later(tmp_path, file, edit, says):
    from msc.config.load import load
    from msc.ops.http import OpsServer
    from msc.server.switch import Switch

    cfg = make_config(tmp_path)
    sw = Switch(load(cfg))  # not started: what a standby is until it takes over
    sw.ops = OpsServer(sw)
    await sw.ops.start("127.0.0.1:0")
    try:
        path = tmp_path / file
        good = path.read_text()
        path.write_text(edit(good))
        with capture_logs() as logs:
            assert not await sw.check_deferred_reload()
        (failed,) = [e for e in logs if e["event"] == "config.reload_failed"]
        assert failed["log_level"] == "error" and says.lower() in failed["first"].lower(), failed
        assert "keeps its previous configuration" in failed["deferred"]
        assert not any(e["event"] == "config.reload_deferred" for e in logs)
        assert sw.metrics.config_reload.labels("error")._value.get() == 1
        _, body = await asyncio.to_thread(readyz, sw.ops.port)
        assert says.lower() in body["last_reload_error"].lower()

        path.write_text(good)  # fixed, and SIGHUPed again
        with capture_logs() as logs:
            assert await sw.check_deferred_reload()
        assert [e["event"] for e in logs] == ["config.reload_deferred"]
        assert sw.metrics.config_reload.labels("error")._value.get() == 1  # not counted as another error
        assert sw.metrics.config_reload.labels("ok")._value.get() == 0  # nothing applied yet
        _, body = await asyncio.to_thread(readyz, sw.ops.port)
        assert "last_reload_error" not in body
    finally:
        await sw.ops.stop()
