"""One count for every way to log on (SECURITY.md AC-7; issue 12/13 trial item 3): refused
attempts and lockouts made by the ``msc`` command, terminals, pools and ``PWD`` are counted in
state.db in the attempt's own transaction, and the running switch's /metrics shows them all
(``msc_logon_failures_total`` / ``msc_lockouts_total`` by ``path``)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.conftest import PASSWORD, scraped

REFUSED = b"E202 LOGON REFUSED"


async def cli(cfg: str, user: str, password: str) -> int:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "msc", "journal", "verify", "--config", cfg, "--as", user, "--password-stdin",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await asyncio.wait_for(p.communicate(f"{password}\n\n".encode()), 60)
    return p.returncode


# (steps: (path, user, password, times)), expected {path: (failures, lockouts)} — other paths 0.
ROWS = [
    pytest.param([("cli", "IN0001", "wrong", 5)], {"cli": (5, 1)}, id="the issue: an investigator guessed at the CLI"),
    pytest.param([("cli", "AD0001", "wrong", 5)], {"cli": (5, 1)}, id="an administrator guessed at the CLI"),
    pytest.param([("terminal", "TS0001", "wrong", 5)], {"terminal": (5, 1)}, id="terminal"),
    pytest.param([("pool", "EC0001", "wrong", 5)], {"pool": (5, 1)}, id="pool"),
    pytest.param([("pwd", "TS0002", "wrong", 5)], {"pwd": (5, 1)}, id="PWD at a terminal"),
    pytest.param([("cli", "NOSUCH", "wrong", 6)], {"cli": (6, 0)}, id="unknown IDs lock no account"),
    pytest.param([("cli", "AD0001", "wrong", 3), ("terminal", "AD0001", "wrong", 2)],
                 {"cli": (3, 0), "terminal": (2, 1)}, id="mixed: the 5th failure locks, where it came"),
    pytest.param([("terminal", "TS0001", "wrong", 5), ("cli", "TS0001", PASSWORD, 1)],
                 {"terminal": (5, 1), "cli": (1, 0)}, id="the right password on a locked account is a failure"),
]


@pytest.mark.parametrize(("steps", "expected"), ROWS)
async def test_every_way_of_logging_on_is_counted_in_the_switchs_metrics(harness, steps, expected):
    sw = await harness.start_switch()
    cfg = str(harness.tmp / "msc.toml")
    pwd_session = None
    for path, user, password, times in steps:
        for i in range(times):
            if path == "cli":
                assert await cli(cfg, user, password) == 3
            elif path == "pwd":
                pwd_session = pwd_session or await harness.operator("ICS1", user)
                f = await pwd_session.send(f"ICS1.PWD.{password} {i}.a brand new passphrase")
                assert f.code == "E202"
            else:
                c = await harness.client()
                f = await c.logon("ICS1" if path == "terminal" else "ECMDT", user, password)
                assert f.payload == REFUSED
                c.close()
    for path in ("terminal", "pool", "pwd", "cli", "web"):
        failures, lockouts = expected.get(path, (0, 0))
        assert scraped(sw, "msc_logon_failures_total", path=path) == failures, path
        assert scraped(sw, "msc_lockouts_total", path=path) == lockouts, path
