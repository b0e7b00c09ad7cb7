"""PostgreSQL's password files, read and checked one way everywhere (CONFIG.md "Storage").

``[storage] password_file`` and ``[node] lease_password_file`` are read by :func:`read_password` —
the storage (:class:`msc.storage.postgres.PgSettings`), the lease (:func:`msc.ha.site.lease_for`)
and ``msc config check`` alike — so a file that works for one works for the other and a file
``msc serve`` would refuse is refused by the check first. libpq's own password file (``passfile=``
in the connection string, ``PGPASSFILE``, ``~/.pgpass``), which msc's client (asyncpg) reads itself
when msc gives it no password, is checked by :func:`libpq_passfile_problem`: one readable by group
or others is ignored by asyncpg (with a Python warning) and libpq, and the login then fails as a
wrong password — msc says why instead.

No function here puts a password in a message.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: What may not begin or end the password line: it would silently become part of the password.
_BLANKS = " \t\v\f"


def read_password(path: Path) -> str:
    """The password in a password file: its first line, without its line end (LF or CRLF) and
    without a UTF-8 byte order mark. Raises ``OSError`` (the file cannot be read) or ``ValueError``
    naming the file: not UTF-8, an empty first line, or one that begins or ends with a space or tab
    (taken as part of the password it would fail as a wrong one; msc refuses it instead)."""
    with open(path, "rb") as f:
        raw = f.readline()
    try:
        line = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the first line is not UTF-8 text (write the password as UTF-8)") from None
    line = line.removesuffix("\n").removesuffix("\r")
    if not line:
        raise ValueError(f"{path}: the first line (the password) is empty")
    if line[0] in _BLANKS or line[-1] in _BLANKS:
        raise ValueError(f"{path}: the password line begins or ends with a space or tab, which would be taken as "
                         "part of the password: remove it (a password that begins or ends with one is not supported)")
    return line


def password_file_problem(path: Path) -> str | None:
    """Why ``msc serve`` would refuse this password file, or None: missing, not a regular file,
    readable by group or others, or (when this account can read it) a first line
    :func:`read_password` refuses. A file this account may not read (``msc config check`` run by
    another user than the service account) is judged by its mode alone."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return f"file not found: {path}"
    if not stat.S_ISREG(mode):
        return f"{path}: must be a regular file"
    if mode & 0o077:
        return f"{path}: mode {stat.S_IMODE(mode):04o}: must not be readable by group or others (chmod 600)"
    try:
        read_password(path)
    except PermissionError:
        return None
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    except ValueError as exc:
        return str(exc)
    return None


def libpq_passfile(dsn: str, environ: Mapping[str, str] | None = None) -> tuple[Path, str] | None:
    """The libpq password file msc's client reads when msc gives it no password, and where it is
    named (``passfile= in the connection string``, ``PGPASSFILE``, ``~/.pgpass``); None when
    ``PGPASSWORD`` is set (it is used instead) or no home directory is known."""
    env = os.environ if environ is None else environ
    if env.get("PGPASSWORD"):
        return None
    try:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(dsn).query, keep_blank_values=True)
    except ValueError:
        query = {}
    if query.get("passfile") and query["passfile"][-1]:
        return Path(query["passfile"][-1]).expanduser(), "passfile= in the connection string"
    if env.get("PGPASSFILE"):
        return Path(env["PGPASSFILE"]).expanduser(), "PGPASSFILE"
    try:
        return Path.home() / ".pgpass", "~/.pgpass"
    except (RuntimeError, KeyError):
        return None


def libpq_passfile_problem(dsn: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why the libpq password file that would be read (:func:`libpq_passfile`) cannot be used, or
    None (none is read, it does not exist — the server may need no password —, or it is fine):
    readable by group or others, it is ignored by asyncpg and libpq, and the login would fail as if
    the password were wrong."""
    found = libpq_passfile(dsn, environ)
    if found is None:
        return None
    path, named = found
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) and mode & 0o077:
        return (f"the password file {path} ({named}) has mode {stat.S_IMODE(mode):04o}: PostgreSQL's client ignores "
                "a password file readable by group or others — chmod 600 it")
    return None


def configured_password(settings: Any, dsn: str, password_file: str | None, setting: str) -> str | None:
    """The password of a connection msc makes (the storage's, the lease's): the first line of
    ``password_file`` when one is configured, else None (libpq's environment, which the client
    reads itself — checked here so that a password file it would ignore is said, not met as a
    failed login). Raises ValueError naming ``setting`` and the file; OSError."""
    if password_file is not None:
        try:
            return read_password(settings.path(password_file))
        except ValueError as exc:
            raise ValueError(f"{setting}: {exc}") from None
    problem = libpq_passfile_problem(dsn)
    if problem is not None:
        raise ValueError(problem)
    return None
