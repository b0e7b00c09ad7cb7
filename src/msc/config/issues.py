"""Configuration problems and where they are: file, TOML path and line (CONFIG.md "Checking")."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
