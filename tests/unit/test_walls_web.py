"""ARCHITECTURE.md walls for the packages of issue 17: the PROXY reader stays sans-IO in
msc.protocol; msc.actions and msc.web never import the CLI, and the web console never the switch's
internals (it talks to the switch over its listener and control socket only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "msc"


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("package,forbidden", [
    ("actions", ("msc.cli", "msc.web", "msc.server", "msc.routing")),
    ("web", ("msc.cli", "msc.server", "msc.routing", "msc.stubs")),
])
def test_packages_keep_their_walls(package, forbidden):
    for path in (SRC / package).rglob("*.py"):
        bad = {m for m in imports(path) if m.startswith(forbidden)}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_proxy_reader_is_sans_io():
    mods = imports(SRC / "protocol" / "proxy.py")
    assert {m for m in mods if m.startswith("msc.")} <= {"msc.protocol.codes"}
    assert "asyncio" not in mods and "socket" not in mods
