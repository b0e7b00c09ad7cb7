"""Every ``msc`` command whose reader goes away (``msc user list | head``) ends quietly: no
``BrokenPipeError`` traceback, status 141 (128 + SIGPIPE) when it had more to write, as a program
SIGPIPE ends (newcomer6: ``msc user list … | head -5`` ended in a traceback)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import make_config
from tests.e2e.conftest import MSC

pytestmark = pytest.mark.timeout(120)

#: Commands that print to stdout (``{cfg}``: the test configuration).
COMMANDS = [
    ["user", "list", "--config", "{cfg}"],
    ["user", "list", "--config", "{cfg}", "--format", "json"],
    ["config", "check", "--config", "{cfg}"],
    ["status", "--config", "{cfg}"],
    ["keys", "show", "--config", "{cfg}"],
    ["report", "mnemonics", "--config", "{cfg}"],
    ["--help"],
    ["journal", "search", "--help"],
]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return make_config(tmp_path_factory.mktemp("pipes"))


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a).replace(" --config {cfg}", ""))
def test_a_closed_pipe_ends_a_command_quietly(cfg, args):
    argv = [a.format(cfg=cfg) for a in args]
    with subprocess.Popen([*MSC, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        p.stdout.close()  # the reader is gone before the command writes a byte (`| head -0`)
        err = p.stderr.read().decode()
        rc = p.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert rc in (0, 1, 141), (rc, err)  # its own status if it wrote nothing more, else 141
    # Read to the end, the same command prints as before (the pipe handling changes nothing else).
    whole = subprocess.run([*MSC, *argv], capture_output=True, text=True, timeout=60)
    assert whole.stdout and "Traceback" not in whole.stderr
