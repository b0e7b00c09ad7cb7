"""The tool every section's checks share: :class:`Checker` collects :class:`ConfigIssue` s, each
at its file and line; ``parse_hostport``, time zones and client addresses, checked the same way
wherever a section has them.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo

from msc.config.issues import ConfigIssue, locate
from msc.config.settings import Settings


def parse_hostport(value: str) -> tuple[str, int]:
    """``"127.0.0.1:7400"`` / ``"[::1]:7400"`` → (host, port); raises ValueError."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


class Checker:
    """The issues found so far, and where each is (``settings.config_path``/``users_path``, the line)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.issues: list[ConfigIssue] = []
        self._texts: dict[str, str] = {}
        self._unique: dict[tuple, tuple] = {}

    def _text(self, file: str) -> str:
        if file not in self._texts:
            try:
                with open(file, encoding="utf-8", errors="replace") as fh:
                    self._texts[file] = fh.read()
            except OSError:
                self._texts[file] = ""
        return self._texts[file]

    def _place(self, path: str, users: bool) -> tuple[str, int | None]:
        file = str(self.s.users_path if users else self.s.config_path)
        parts: list[str | int] = []
        for name, index in re.findall(r"([A-Za-z_][\w]*)|\[(\d+)\]", path):
            parts.append(name if name else int(index))
        if parts and parts[-1] == "from_":
            parts[-1] = "from"
        return file, locate(self._text(file), parts)

    def add(self, path: str, message: str, *, users: bool = False) -> None:
        file, line = self._place(path, users)
        self.issues.append(ConfigIssue(file, path, message, line))

    def where(self, path: str, *, users: bool = False) -> str:
        """``path (file:line)`` — the other place of a conflict, for the message."""
        file, line = self._place(path, users)
        return f"{path} ({file}:{line})" if line else f"{path} ({file})"

    def unique(self, space: str, value, path: str, what: str, *, owner: object = None, users: bool = False) -> None:
        """Record ``value`` in the namespace ``space``; a second claim by a different ``owner``
        (default: every claim is its own owner) is an issue naming both places."""
        key = (space, value)
        first = self._unique.get(key)
        if first is None:
            self._unique[key] = (path, users, owner if owner is not None else path)
            return
        first_path, first_users, first_owner = first
        if owner is not None and owner == first_owner and path != first_path:
            return
        self.add(path, f"{what} {value} is already used by {self.where(first_path, users=first_users)}", users=users)


def check_tz(c: Checker, path: str, name: str) -> None:
    """An IANA time zone name (``America/Los_Angeles``)."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        c.add(path, f"unknown time zone {name!r}")



def check_addresses(c: Checker, p: str, addresses, cn) -> None:
    """Who may claim a station or pool: IP addresses or CIDRs, or a client certificate's CN."""
    if not addresses and cn is None:
        c.add(f"{p}.addresses", "give addresses or client_cert_cn: who may claim it")
    for k, a in enumerate(addresses):
        try:
            ipaddress.ip_network(a, strict=False)
        except ValueError:
            c.add(f"{p}.addresses[{k}]", f"{a!r} is not an IP address or CIDR")
