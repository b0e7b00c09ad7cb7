"""Loading ``msc.toml`` and ``users.toml`` with errors an administrator can act on.

Every problem is a :class:`ConfigIssue` naming the file, the path (``station[3].mnemonic``) and,
where it can be found, the line. :func:`load` collects *all* issues before raising, so
``msc config check`` lists every error in one run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from msc.config.issues import ConfigError, ConfigIssue, _split_path, locate
from msc.config.model import Config, UsersFile
from msc.config.settings import Settings
from msc.config.validate import validate

_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"unknown field `(?P<name>[^`]+)`")


def decode_file(path: Path, type_: type, issues: list[ConfigIssue]):
    """Decode one TOML file into ``type_``; on failure append issues and return None."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        issues.append(ConfigIssue(name, "", f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        return msgspec.toml.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = _PATH_RE.search(msg)
        spath = m.group("path") if m else ""
        text = raw.decode("utf-8", "replace")
        parts = _split_path(spath)
        unknown = _UNKNOWN_RE.search(msg)
        if unknown:
            parts = [*parts, unknown.group("name")]
        line = locate(text, parts)
        issues.append(ConfigIssue(name, spath.lstrip("."), msg[: m.start()] if m else msg, line))
    except msgspec.DecodeError as exc:
        msg = str(exc)
        lm = re.search(r"line (\d+)", msg)
        issues.append(ConfigIssue(name, "", f"not valid TOML: {msg}", int(lm.group(1)) if lm else None))
    return None


def load(config_path: str | os.PathLike, *, users_path: str | os.PathLike | None = None) -> Settings:
    """Load and validate both files. Raises :class:`ConfigError` listing every issue."""

    cpath = Path(config_path).resolve()
    issues: list[ConfigIssue] = []
    config = decode_file(cpath, Config, issues)
    if config is None:
        raise ConfigError(issues)
    base = cpath.parent
    upath = Path(users_path) if users_path else Path(config.switch.users_file)
    if not upath.is_absolute():
        upath = base / upath
    users: UsersFile | None
    if upath.exists():
        users = decode_file(upath, UsersFile, issues)
    else:
        users = UsersFile()
    if users is None:
        raise ConfigError(issues)
    settings = Settings(config=config, users=users, config_path=cpath, users_path=upath, base_dir=base)
    issues.extend(validate(settings))
    if issues:
        raise ConfigError(issues)
    return settings
