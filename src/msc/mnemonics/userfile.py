"""Reading and atomically rewriting ``users.toml`` (the "user security file", PPP Exhibit C).

Writers take an advisory lock, re-read the file, apply one change, validate the result the same
way ``msc config check`` does, and replace the file atomically (write, fsync, rename). A reader —
the daemon — therefore sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import tomli_w

from msc.config.files import atomic_write, file_lock
from msc.config.model import RemovedUser, UserEntry, UsersFile

ID_REUSE_DAYS = 365  # CJIS IA-4d (PPP §1.6.7 B says six months; the stricter applies)
HEADER = (
    "# users.toml: the msc user directory (PPP Exhibit C \"user security file\").\n"
    "# Written by `msc user ...`; hand edits are validated like msc.toml.\n"
    "# Passwords are salted scrypt hashes; TOTP secrets are encrypted with the master key.\n\n"
)


def _entry_dict(u: UserEntry) -> dict:
    d = msgspec.structs.asdict(u)
    return {k: v for k, v in d.items() if v is not None}


def dumps(users: UsersFile) -> str:
    doc: dict = {}
    if users.user:
        doc["user"] = [_entry_dict(u) for u in users.user]
    if users.removed:
        doc["removed"] = [msgspec.structs.asdict(r) for r in users.removed]
    return HEADER + tomli_w.dumps(doc)


def read(path: Path) -> UsersFile:
    if not path.exists():
        return UsersFile()
    return msgspec.toml.decode(path.read_bytes(), type=UsersFile)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with file_lock(path.with_name(f".{path.name}.lock")):
        yield


def write(path: Path, users: UsersFile) -> None:
    atomic_write(path, dumps(users).encode(), 0o600)


def update(path: Path, change: Callable[[UsersFile], UsersFile], validate: Callable[[UsersFile], None] | None = None) -> UsersFile:
    """Apply ``change`` under the lock; ``validate`` may raise to abort without writing."""
    with locked(path):
        new = change(read(path))
        if validate is not None:
            validate(new)
        write(path, new)
        return new


def replace_user(users: UsersFile, uid: str, fn: Callable[[UserEntry], UserEntry]) -> UsersFile:
    found = False
    out = []
    for u in users.user:
        if u.id == uid:
            found = True
            u = fn(u)
        out.append(u)
    if not found:
        raise LookupError(uid)
    return msgspec.structs.replace(users, user=tuple(out))


def remove_user(users: UsersFile, uid: str, today: dt.date) -> UsersFile:
    if not any(u.id == uid for u in users.user):
        raise LookupError(uid)
    return UsersFile(user=tuple(u for u in users.user if u.id != uid),
                     removed=(*users.removed, RemovedUser(id=uid, removed=today)))
