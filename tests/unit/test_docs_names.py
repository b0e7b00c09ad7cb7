"""The names docs/ and README.md give administrators must be the code's: every ``msc …`` command
line they show is a subcommand with those options (src/msc/cli), every subcommand is shown
somewhere, and every ``msc_…`` metric they (and the shipped Prometheus alerts and Grafana
dashboard in config/) name is one the switch exports (msc.ops.metrics).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from msc.cli.main import build_parser
from msc.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_FILES = [p for p in sorted((ROOT / "config").rglob("*")) if p.suffix in (".yml", ".yaml", ".json")]

_COMMAND_RE = re.compile(r"(?<![\w/.-])msc((?: [a-z][a-z0-9-]*)+)")
_OPTION_RE = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
_METRIC_RE = re.compile(r"(?<![A-Za-z0-9_])(msc_[a-z0-9_]*[a-z0-9])(?![A-Za-z0-9_])")
#: msc_… words that are not metrics: the HAProxy frontend/backend of OPERATIONS.md's example; the
#: node lease's tables and fence function in PostgreSQL (msc.ha.pglease).
NOT_METRICS = frozenset({"msc_terminals", "msc_nodes", "msc_lease", "msc_fence", "msc_node_seen"})


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions for o in a.option_strings}


def _choices(p: argparse.ArgumentParser) -> set[str]:
    """The choices of the command's first positional argument (``msc keys init|rotate|show``)."""
    for a in p._actions:
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            return {str(c) for c in a.choices or ()}
    return set()


def _leaves(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    subs = _subcommands(p)
    if not subs:
        return [" ".join((*path, c)) for c in sorted(_choices(p))] or [" ".join(path)]
    return [leaf for name, sub in subs.items() for leaf in _leaves(sub, (*path, name))]


def command_mentions(parser: argparse.ArgumentParser, text: str) -> tuple[set[str], list[str]]:
    """The subcommands a page shows, and its faults: an unknown subcommand of a command that has
    subcommands, an option the command does not take (options up to the end of the code span)."""
    shown: set[str] = set()
    faults: list[str] = []
    for line in text.splitlines():
        for m in _COMMAND_RE.finditer(line):
            words = m.group(1).split()
            p, path = parser, []
            for w in words:
                sub = _subcommands(p).get(w)
                if sub is None:
                    break
                p, path = sub, [*path, w]
            if not path:
                continue  # "msc" as a word of prose ("msc keeps …")
            shown.add(" ".join(path))
            rest = words[len(path):]
            if rest and _subcommands(p) and rest[0] not in _subcommands(p):
                faults.append(f"msc {' '.join(path)} has no subcommand {rest[0]!r}: {line.strip()[:100]}")
            if rest and rest[0] in _choices(p):
                shown.add(" ".join([*path, rest[0]]))
            elif rest and _choices(p):
                faults.append(f"msc {' '.join(path)} takes no {rest[0]!r}: {line.strip()[:100]}")
            span = line[m.end(1):].split("`")[0]
            faults += [f"msc {' '.join(path)} has no option {o}: {line.strip()[:100]}"
                       for o in _OPTION_RE.findall(span) if o not in _options(p)]
    return shown, faults


def exported_metrics() -> set[str]:
    """Every sample name the switch's registry can export (counter _total/_created, histogram
    _bucket/_count/_sum …), labelled metrics included before they have a child."""
    names: set[str] = set()
    metrics = Metrics()
    metrics.count_logons(dict)  # the switch registers the state.db logon counts this way
    metrics.journal_writer_pid = lambda: "self"  # the switch names its journal writer process
    for family in metrics.registry.collect():
        n = family.name
        names.add(n)
        if family.type == "counter":
            names |= {f"{n}_total", f"{n}_created"}
        elif family.type in ("histogram", "summary"):
            names |= {f"{n}_bucket", f"{n}_count", f"{n}_sum", f"{n}_created"}
        elif family.type == "info":
            names.add(f"{n}_info")
    return names


def test_command_reader_sees_faults() -> None:
    parser = build_parser()
    shown, faults = command_mentions(parser, "run `msc config check --config msc.toml` then `msc keys init`")
    assert shown == {"config check", "keys", "keys init"} and not faults
    for bad in ("`msc config check --strict`", "`msc user frobnicate X`", "`msc stub --tls`", "`msc keys rewrap`",
                "`msc report logons --config msc.toml`"):
        assert command_mentions(parser, bad)[1], bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_in_docs_exist(page: Path) -> None:
    _shown, faults = command_mentions(build_parser(), page.read_text())
    assert not faults, faults


def test_every_subcommand_is_in_docs() -> None:
    parser = build_parser()
    shown: set[str] = set()
    for page in PAGES:
        shown |= command_mentions(parser, page.read_text())[0]
    missing = [leaf for leaf in _leaves(parser) if leaf not in shown]
    assert not missing, f"subcommands no page of docs/ or README.md shows: {missing}"


@pytest.mark.parametrize("path", PAGES + CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_metrics_named_exist(path: Path) -> None:
    exported = exported_metrics()
    unknown = sorted({n for n in _METRIC_RE.findall(path.read_text()) if n not in exported} - NOT_METRICS)
    assert not unknown, f"{path.relative_to(ROOT)} names metrics msc does not export: {unknown}"


def test_metric_reader() -> None:
    exported = exported_metrics()
    assert {"msc_rejects_total", "msc_transaction_seconds_bucket", "msc_sessions"} <= exported
    assert _METRIC_RE.findall("rate(msc_rejects_total{code=\"E307\"}[5m]) and msc_foo_") == ["msc_rejects_total"]
