"""The issue's stop, as a user does it (issue 12/13 trial item 2): a QW answered in two parts by
the stub process (``--parts QW=2@60000``), Ctrl-C on ``msc serve`` after the first part. The
drain counts the open answer (``switch.draining answer_open 1``), and after ``msc serve`` starts
again the operator is told ``MSC.E302 SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; 1 OF 2 PARTS
CAME`` (the route declares ``answer_parts``: a complete QW answer has two parts, issue 16)."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from tests.conftest import PASSWORD, free_port, make_config
from tests.e2e.conftest import start_serve, start_stub
from tests.e2e.test_stopping import start_serve_own_group
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(120)


def test_ctrl_c_with_an_answer_open_tells_the_operator_after_the_restart(tmp_path, procs):
    up, port = free_port(), free_port()
    cfg = make_config(tmp_path, upstream_ports=[up], port=port, metrics_port=free_port(),
                      route_extra="answer_window_s = 900\nanswer_parts = { QW = 2 }",
                      switch_extra="drain_timeout_s = 1")
    start_stub(procs, tmp_path, up, "--parts", "QW=2@60000")
    serve = start_serve_own_group(tmp_path, cfg)

    async def first_part() -> str:
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        assert (await c.send("ICS1Q1.QW.CA0130000.NAM/PARTS, PAT.DOB/19800101")).type == "A"
        text = (await c.output()).text
        c.close()
        return text

    assert asyncio.run(first_part()).startswith("ICS1Q1.QW.")
    os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C
    assert serve.wait(30) == 0
    events = [json.loads(line) for line in (tmp_path / "serve.err").read_text().splitlines()
              if line.startswith("{")]
    draining = [e for e in events if e.get("event") == "switch.draining"]
    # Named for what it counts: one open answer window, nothing upstream (newcomer7 read
    # "in_flight": 81 as 81 requests upstream).
    assert draining and (draining[0]["answer_open"], draining[0]["awaiting_answer"]) == (1, 0), draining
    assert "in_flight" not in draining[0]
    assert any(e.get("event") == "switch.drain_timeout" and e.get("answer_open") == 1 for e in events)

    start_serve(procs, tmp_path, cfg, log="serve2.err")

    async def after_restart() -> list[str]:
        c = await WireClient.connect(port)
        await c.banner()
        assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"
        assert (await c.send("ICS1Q2.RQ.CA0130000.LIC/7AFTER1")).type == "A"
        out = [(await c.output()).text, (await c.output()).text]
        c.close()
        return out

    # The restart's notice is queued beside serving (not before the listeners open): it may come
    # before or after the next answer.
    out = asyncio.run(after_restart())
    assert "ICS1Q1.MSC.E302 SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; 1 OF 2 PARTS CAME" in out, out
    assert [t for t in out if t.startswith("ICS1Q2.")][0].startswith("ICS1Q2.RQ."), out
