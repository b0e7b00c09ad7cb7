"""The upstream stub the docs start for the shipped configuration (config/msc.toml) answers as that
configuration's ``answer_parts`` say (newcomer9 F1: OPERATIONS.md's pair recipe started
``msc stub`` without ``--parts`` while msc.toml says ``QW = 2``: every QW came in one part, and
after a failover each one still in its window got a spurious ``MSC.E302 … 1 OF 2 PARTS CAME``).
So does the stub ``msc demo`` starts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from msc.cli.demo import DEMO_STUB_PARTS

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "config").rglob("*.md"))]


def _shipped() -> tuple[set[str], dict[str, int]]:
    """config/msc.toml's upstream endpoints, and the keys whose complete answer has more than one part."""
    cfg = tomllib.loads((ROOT / "config" / "msc.toml").read_text())
    endpoints = {e for u in cfg["upstream"] for e in u["endpoints"]}
    parts = {k: n for r in cfg["route"] for k, n in (r.get("answer_parts") or {}).items() if n > 1}
    assert parts, "config/msc.toml declares no answer of several parts: this test checks nothing"
    return endpoints, parts


def _counts(parts: list[str]) -> dict[str, str]:
    """``--parts KEY=N[-M][@GAP_MS]`` values → {KEY: "N[-M]"}."""
    return {k: v.partition("@")[0] for k, _, v in (p.partition("=") for p in parts)}


def test_the_docs_stub_for_the_shipped_configuration_answers_in_as_many_parts_as_it_expects() -> None:
    endpoints, wanted = _shipped()
    seen = 0
    for page in PAGES:
        for line in re.sub(r"\\\n\s*", " ", page.read_text()).splitlines():  # `\`-continued lines joined
            listen = re.search(r"\bmsc stub\b.*--listen (\S+)", line)
            if listen is None or listen.group(1) not in endpoints:
                continue  # a synopsis (HOST:PORT), or a stub for another configuration
            seen += 1
            got = _counts(re.findall(r"--parts (\S+)", line))
            for key, count in wanted.items():
                assert got.get(key, "1") == str(count), (
                    f"{page.name}: the stub answers {key} in {got.get(key, '1')} part(s), config/msc.toml's "
                    f"answer_parts says {count}: {line.strip()}")
    assert seen, "no msc stub command line for config/msc.toml's upstream found in the docs"


def test_the_demos_stub_answers_in_as_many_parts_as_the_shipped_configuration_expects() -> None:
    _, wanted = _shipped()
    got = _counts(list(DEMO_STUB_PARTS))
    assert {k: got.get(k, "1") for k in wanted} == {k: str(n) for k, n in wanted.items()}
