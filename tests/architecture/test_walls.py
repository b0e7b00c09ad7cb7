"""The walls of docs/ARCHITECTURE.md and the code's hygiene, checked on every test run.

Each linter is configured in pyproject.toml and runs as ``make lint`` does, so a landing that
runs the suite (not only ``make test``) is stopped by a broken wall:

* ``lint-imports``: the import rules ("Packages", "Never:") as import-linter contracts, and no
  import cycles between sibling packages or modules;
* ``ruff check``: pycodestyle, pyflakes, import order, bugbear, pyupgrade (src, tests, bench);
* ``mypy``: every package at the normal level, ``msc.protocol`` strictly.

This directory sorts first under tests/, so a ``pytest -x`` run stops here in seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The tools get their own 300-s bound (a fresh clone has no mypy cache; a loaded machine is slow):
# pytest-timeout's default of 120 s would cut them short first.
pytestmark = pytest.mark.timeout(360)

BIN = Path(sys.executable).parent


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    assert exe.exists(), f"{exe} is missing: `make venv` installs the dev dependencies of pyproject.toml"
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


HINTS = {
    "lint-imports": "the rules are docs/ARCHITECTURE.md \"Packages\"; the contracts are [tool.importlinter] in pyproject.toml",
    "ruff": "`.venv/bin/ruff check --fix src tests bench` fixes most findings by itself",
    "mypy": "the modules not yet clean are listed in pyproject.toml [[tool.mypy.overrides]] (ignore_errors)",
}


@pytest.mark.parametrize("tool,args", [
    ("lint-imports", ()),
    ("ruff", ("check", "--no-fix", "src", "tests", "bench")),
    ("mypy", ()),
], ids=["import-contracts", "ruff", "mypy"])
def test_wall(tool: str, args: tuple[str, ...]) -> None:
    r = run(tool, *args)
    assert r.returncode == 0, (f"`{tool} {' '.join(args)}` failed (`make lint` runs all three; {HINTS[tool]}):\n"
                               f"{r.stdout[-12000:]}{r.stderr[-4000:]}")
