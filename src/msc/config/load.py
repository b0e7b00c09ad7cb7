"""Loading ``msc.toml`` and ``users.toml`` with errors an administrator can act on.

Every problem is a :class:`ConfigIssue` naming the file, the path (``station[3].mnemonic``) and,
where it can be found, the line. :func:`load` collects *all* issues before raising, so
``msc config check`` lists every error in one run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from msc.config.model import Config, UsersFile
from msc.protocol.codes import MscError


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(file)'}: {self.message}"


class ConfigError(MscError):
    """The configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class Settings:
    """A loaded, validated configuration: both files and the directory paths are relative to."""

    config: Config
    users: UsersFile
    config_path: Path
    users_path: Path
    base_dir: Path
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def path(self, p: str) -> Path:
        """A config path made absolute (relative paths are relative to msc.toml's directory)."""
        q = Path(p)
        return q if q.is_absolute() else self.base_dir / q

    @property
    def data_dir(self) -> Path:
        return self.path(self.config.switch.data_dir)

    @property
    def journal_dir(self) -> Path:
        return self.path(self.config.journal.dir)

    @property
    def key_file(self) -> Path:
        return self.path(self.config.journal.key_file)

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.db"


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"unknown field `(?P<name>[^`]+)`")


def _split_path(path: str) -> list[str | int]:
    """``.station[3].mnemonic`` → ``["station", 3, "mnemonic"]``."""
    out: list[str | int] = []
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", path):
        out.append(name if name else int(index))
    return out


def locate(text: str, path: list[str | int]) -> int | None:
    """Best-effort line number (1-based) of a TOML path in ``text``.

    Handles the shapes our files use: ``[table]``, ``[[array]]`` (counted), ``key = value`` and
    inline tables. Returns None when it cannot tell.
    """
    if not path:
        return None
    lines = text.splitlines()
    head = path[0]
    start = 0
    end = len(lines)
    rest = path[1:]
    if isinstance(head, str):
        if rest and isinstance(rest[0], int):
            want = rest[0]
            seen = -1
            found = None
            for i, line in enumerate(lines):
                if re.match(rf"\s*\[\[\s*{re.escape(head)}\s*\]\]", line):
                    seen += 1
                    if seen == want:
                        found = i
                        break
            if found is None:
                return None
            start = found
            rest = rest[1:]
        else:
            hit = None
            for i, line in enumerate(lines):
                if re.match(rf"\s*\[\s*{re.escape(head)}\s*\]", line):
                    hit = i
                    break
            if hit is None:
                # a top-level key
                for i, line in enumerate(lines):
                    if re.match(rf"\s*{re.escape(head)}\s*=", line):
                        return i + 1
                return None
            start = hit
        for j in range(start + 1, len(lines)):
            if re.match(r"\s*\[", lines[j]):
                end = j
                break
        key = next((p for p in rest if isinstance(p, str)), None)
        if key is None:
            return start + 1
        for j in range(start + 1, end):
            if re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", lines[j]):
                return j + 1
        return start + 1
    return None


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
    from msc.config.validate import validate  # local: validate imports this module's types

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
