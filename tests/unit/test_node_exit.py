"""A node of a pair that stepped down leaves the process within STEP_DOWN_EXIT_S, whatever its
tasks do (msc.server.main._exit_within): make ha-soak saw a node log ``node.exit`` 75 and then wait
minutes in its event loop's teardown for a task that did not end, never to be restarted. Here a
task that never ends stands for it; the process must end with the step-down's status and say what
was still pending."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio
from msc.server import main

async def never_ends():
    await asyncio.Event().wait()

async def stepped_down():
    main._exit_within({delay}, {status})
    await asyncio.gather(never_ends(), return_exceptions=True)

asyncio.run(stepped_down())
"""


@pytest.mark.parametrize(("delay", "status"), [(0.2, 75), (0.5, 75), (0.1, 3)])
def test_a_stepped_down_node_leaves_even_if_a_task_never_ends(delay, status):
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(delay=delay, status=status)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == status, r.stderr
    out = r.stdout + r.stderr  # (structlog unconfigured here prints to stdout; msc serve logs to stderr)
    assert "node.exit_forced" in out and "never_ends" in out


def test_a_node_that_leaves_in_time_is_not_forced():
    code = SCRIPT.replace("await asyncio.gather(never_ends(), return_exceptions=True)", "return").format(
        delay=5, status=75)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "node.exit_forced" not in r.stdout + r.stderr, r.stderr
