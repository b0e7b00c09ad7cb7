"""docs/CONFIG.md is the contract administrators write ``msc.toml`` and ``users.toml`` from: its
TOML examples must name every key the code accepts (the msgspec Structs of
:mod:`msc.config.model`) and no key the code would refuse (decoding forbids unknown keys).

A key counts as documented when it appears as ``key = …`` in a ```toml block of CONFIG.md under
its table's header (``[switch]``, ``[[listener]]`` …; an inline ``tls = { … }`` for the TLS
tables), also when that line is commented out (``# client_cert_cn = "ICS1"`` shows an optional
key without setting it).
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path

import msgspec
import pytest

from msc.config.model import Config, UsersFile

CONFIG_MD = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"

_TOML_FENCE_RE = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)
# "# key = value" (an optional key shown commented out), but not prose comments.
_COMMENTED_KEY_RE = re.compile(r"^#\s*([a-z_][a-z0-9_]*\s*=)", re.MULTILINE)


def _struct_of(tp: object) -> type[msgspec.Struct] | None:
    """The Struct a field's type holds: ``S``, ``S | None`` or ``tuple[S, ...]``; else None."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(tp):
            found = _struct_of(arg)
            if found is not None:
                return found
    return None


def code_keys(root: type[msgspec.Struct], prefix: str = "") -> dict[str, type[msgspec.Struct] | None]:
    """Every key path the code accepts (``switch.idle_logoff_s``, ``listener.tls.cert``), with
    the Struct of a table key (None for a value)."""
    out: dict[str, type[msgspec.Struct] | None] = {}
    for f in msgspec.structs.fields(root):
        path = f"{prefix}{f.encode_name}"
        sub = _struct_of(f.type)
        out[path] = sub
        if sub is not None:
            out.update(code_keys(sub, f"{path}."))
    return out


def _walk(doc: object, prefix: str, seen: set[str], tables: set[str]) -> None:
    """Collect the key paths of a parsed TOML document; descend only into what the code takes
    as a table (a ``formats = { OCA = "text" }`` is a value: its keys are tags, not keys)."""
    if isinstance(doc, list):
        for item in doc:
            _walk(item, prefix, seen, tables)
    elif isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{prefix}{key}"
            seen.add(path)
            if path in tables:
                _walk(value, f"{path}.", seen, tables)


def doc_keys(text: str) -> tuple[set[str], set[str]]:
    """The key paths CONFIG.md's TOML examples show, for msc.toml and for users.toml."""
    config: set[str] = set()
    users: set[str] = set()
    for block in _TOML_FENCE_RE.findall(text):
        parsed = tomllib.loads(_COMMENTED_KEY_RE.sub(r"\1", block))
        is_users = "user" in parsed or "removed" in parsed
        known = code_keys(UsersFile if is_users else Config)
        _walk(parsed, "", users if is_users else config, {k for k, v in known.items() if v is not None})
    return config, users


def test_doc_keys_reads_commented_and_inline_keys() -> None:
    """The reader itself: a commented-out key and an inline table's keys are seen; prose
    comments are not keys."""
    text = (
        "```toml\n[[listener]]\nname = \"t\"\n# tls = { cert = \"c\", key = \"k\" }\n"
        "# Connections that have not logged on (see: the list = below)\n"
        "[switch]\n# max_logon_checks = 2   # the CPUs\n```\n"
        "```toml\n[[user]]\nid = \"JD1234\"\n```\n"
    )
    config, users = doc_keys(text)
    assert config == {"listener", "listener.name", "listener.tls", "listener.tls.cert",
                      "listener.tls.key", "switch", "switch.max_logon_checks"}
    assert users == {"user", "user.id"}


def test_every_code_key_is_in_config_md() -> None:
    config, users = doc_keys(CONFIG_MD.read_text())
    missing = sorted(set(code_keys(Config)) - config) + sorted(
        f"users.toml {k}" for k in set(code_keys(UsersFile)) - users
    )
    assert not missing, f"keys the code accepts that docs/CONFIG.md's examples do not show: {missing}"


@pytest.mark.parametrize("which", ["msc.toml", "users.toml"])
def test_config_md_names_no_key_the_code_refuses(which: str) -> None:
    config, users = doc_keys(CONFIG_MD.read_text())
    shown, root = (config, Config) if which == "msc.toml" else (users, UsersFile)
    unknown = sorted(shown - set(code_keys(root)))
    assert not unknown, f"docs/CONFIG.md shows {which} keys the code refuses: {unknown}"
